"""Proxy overhead: the demo upstream directly vs the same upstream through swapd.

Method:

* swapd runs as a process with one model, the demo upstream (``--silent``); the model is
  loaded first (``POST /api/models/load``), and its ``proxy`` address from ``/running`` is
  the "direct" target, so both targets reach the very same upstream process.
* Load: ``common.run_load`` (trio + httpx in this process, one keep-alive connection per
  worker, N workers sending back to back). Scenarios: small non-streaming chat requests at
  concurrency 1, 16, 64; streamed chat replies of 100 content chunks (``x_chunks: 100``,
  102 SSE events with the final chunk and ``[DONE]``) at concurrency 1 and 16.
* Each (repetition, scenario) runs both targets, alternating which goes first; each
  target gets a warm-up on its own connections, then a timed run. Reported values are
  medians over the repetitions.
* CPU: utime + stime of swapd (and of the upstream, and of this client) from
  ``/proc/<pid>/stat`` around each timed run. swapd's CPU per request (small) and per SSE
  event (stream) is the number least disturbed by other load on the machine.
* Memory: swapd's VmRSS before any model, idle with the model loaded, after the runs, and
  its VmHWM (peak) at the end.

The client is Python too, and on 2 cores it competes with swapd and the upstream; the
``client CPU`` column (CPU seconds per wall second) shows when it is the bottleneck.
``--quick`` runs 0.5 s per target, once (results in ``proxy_overhead.quick.json``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio
from common import (
    CHAT_PATH,
    JSON_HEADERS,
    RESULTS_DIR,
    Job,
    Swapd,
    chat_body,
    free_port,
    machine_info,
    measure,
    median,
    memory_kib,
    open_clients,
    ratio,
    run_load,
    start_swapd,
    swapd_config,
    upstream_argv,
    write_results,
)

MODEL = "bench"
STREAM_CHUNKS = 100
MS = 1000.0
US = 1_000_000.0


@dataclass(frozen=True)
class Scenario:
    kind: str  # "small" or "stream"
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.kind} c={self.concurrency}"


SCENARIOS = (
    Scenario("small", 1),
    Scenario("small", 16),
    Scenario("small", 64),
    Scenario("stream", 1),
    Scenario("stream", 16),
)


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    reps: int
    pin: bool
    out: Path


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.5 s per target, 1 repetition")
    parser.add_argument("--duration", type=float, default=None, help="s per timed run (2.5)")
    parser.add_argument("--warmup", type=float, default=None, help="s of warm-up (0.5)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (3)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="swapd alone on CPU 0; the upstream and this client on CPU 1 (as in stack-notes)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    quick = args.quick
    name = "proxy_overhead.quick.json" if quick else "proxy_overhead.json"
    return Settings(
        duration=args.duration or (0.5 if quick else 2.5),
        warmup=args.warmup or (0.2 if quick else 0.5),
        reps=args.reps or (1 if quick else 3),
        pin=args.pin,
        out=args.out or RESULTS_DIR / name,
    )


def model_cmd() -> str:
    """The model's ``cmd``: the demo upstream on ``${PORT}`` (left unquoted for swapd)."""
    return " ".join(
        "${PORT}" if a == "${PORT}" else shlex.quote(a) for a in upstream_argv(port="${PORT}")
    )


def job_for(scenario: Scenario, base: str) -> Job:
    """The chat request of ``scenario`` against the target at ``base``."""
    stream = scenario.kind == "stream"
    body = chat_body(MODEL, stream=stream, chunks=STREAM_CHUNKS if stream else None)
    return Job(base + CHAT_PATH, body, JSON_HEADERS)


async def count_events(url: str) -> int:
    """SSE events in one streamed reply (``data:`` lines), read once directly."""
    body = chat_body(MODEL, stream=True, chunks=STREAM_CHUNKS)
    async with httpx.AsyncClient(trust_env=False, timeout=30.0) as client:
        reply = await client.post(url + CHAT_PATH, content=body, headers=JSON_HEADERS)
    reply.raise_for_status()
    return sum(1 for line in reply.text.splitlines() if line.startswith("data:"))


async def run_target(
    scenario: Scenario, base: str, settings: Settings, watch: dict[str, int]
) -> dict[str, Any]:
    """Warm-up then one timed run of ``scenario`` against ``base``; its summary."""
    job = job_for(scenario, base)
    async with open_clients(scenario.concurrency) as clients:
        await run_load(clients, job, duration=settings.warmup)
        measured = await measure(clients, job, duration=settings.duration, watch=watch)
    return measured.summary()


def derive(
    scenario: Scenario, direct: dict[str, Any], swapd: dict[str, Any], events: int
) -> dict[str, float]:
    """The comparison numbers of one repetition."""
    requests = swapd["requests"] or 1
    elapsed = swapd["elapsed_s"] or 1.0
    out = {
        "ratio_rps": ratio(swapd["rps"], direct["rps"]),
        "added_p50_ms": swapd["p50_ms"] - direct["p50_ms"],
        "added_ttfb_p50_ms": swapd["ttfb_p50_ms"] - direct["ttfb_p50_ms"],
        "swapd_cpu_ms_per_request": swapd["cpu_s"]["swapd"] / requests * MS,
        "swapd_cpu_util": swapd["cpu_s"]["swapd"] / elapsed,
        "client_cpu_util_direct": direct["cpu_s"]["client"] / (direct["elapsed_s"] or 1.0),
        "client_cpu_util_swapd": swapd["cpu_s"]["client"] / elapsed,
    }
    if scenario.kind == "stream":
        out["swapd_cpu_us_per_event"] = swapd["cpu_s"]["swapd"] / (requests * events) * US
    for key in ("rps", "p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms", "errors"):
        out[f"direct_{key}"] = direct[key]
        out[f"swapd_{key}"] = swapd[key]
    return out


async def run_scenario(
    scenario: Scenario,
    rep: int,
    targets: dict[str, str],
    settings: Settings,
    watch: dict[str, int],
    events: int,
) -> dict[str, Any]:
    order = list(targets) if rep % 2 == 0 else list(reversed(targets))
    raw = {name: await run_target(scenario, targets[name], settings, watch) for name in order}
    derived = derive(scenario, raw["direct"], raw["swapd"], events)
    for name, summary in raw.items():
        if summary["errors"]:
            print(f"  ! {name}: {summary['errors']} errors, first: {summary['first_error']}")
    print(
        f"  rep {rep + 1} {scenario.name:<12} direct {raw['direct']['rps']:7.0f}/s"
        f"  swapd {raw['swapd']['rps']:7.0f}/s  x{derived['ratio_rps']:.3f}"
    )
    return {"raw": raw, "derived": derived}


def medians(reps: list[dict[str, Any]]) -> dict[str, float]:
    keys = reps[0]["derived"].keys()
    return {key: median([r["derived"][key] for r in reps]) for key in keys}


def print_tables(summary: dict[str, dict[str, float]], memory: dict[str, float]) -> None:
    print("\nsmall chat requests (medians; latency in ms, CPU from /proc):")
    print(
        f"  {'c':>3} {'direct/s':>9} {'p50':>6} {'p99':>6} {'swapd/s':>8} {'p50':>6} {'p99':>6}"
        f" {'xdirect':>8} {'+p50':>6} {'CPU ms/req':>10} {'client CPU d/s':>15}"
    )
    for name, s in summary.items():
        if not name.startswith("small"):
            continue
        c = name.split("=")[1]
        print(
            f"  {c:>3} {s['direct_rps']:9.0f} {s['direct_p50_ms']:6.2f} {s['direct_p99_ms']:6.1f}"
            f" {s['swapd_rps']:8.0f} {s['swapd_p50_ms']:6.2f} {s['swapd_p99_ms']:6.1f}"
            f" {s['ratio_rps']:8.3f} {s['added_p50_ms']:6.2f} {s['swapd_cpu_ms_per_request']:10.2f}"
            f" {s['client_cpu_util_direct']:7.2f}/{s['client_cpu_util_swapd']:.2f}"
        )
    print(f"\nstreamed replies, {STREAM_CHUNKS} chunks (medians; TTFB = first body byte, ms):")
    print(
        f"  {'c':>3} {'direct/s':>9} {'TTFB':>6} {'swapd/s':>8} {'TTFB':>6} {'+TTFB':>6}"
        f" {'xdirect':>8} {'CPU us/event':>12} {'client CPU d/s':>15}"
    )
    for name, s in summary.items():
        if not name.startswith("stream"):
            continue
        c = name.split("=")[1]
        print(
            f"  {c:>3} {s['direct_rps']:9.1f} {s['direct_ttfb_p50_ms']:6.2f}"
            f" {s['swapd_rps']:8.1f} {s['swapd_ttfb_p50_ms']:6.2f} {s['added_ttfb_p50_ms']:6.2f}"
            f" {s['ratio_rps']:8.3f} {s['swapd_cpu_us_per_event']:12.1f}"
            f" {s['client_cpu_util_direct']:7.2f}/{s['client_cpu_util_swapd']:.2f}"
        )
    print(
        "\nswapd RSS MiB: fresh {fresh:.1f}, idle with model {idle:.1f}, "
        "after runs {after:.1f}, peak {peak:.1f}".format(**memory)
    )


def pin_cpus(*, swapd: int, others: tuple[int, ...]) -> None:
    """swapd (its main process) on CPU 0; ``others`` (0 = this process) on the other CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("  --pin ignored: fewer than 2 CPUs available")
        return
    os.sched_setaffinity(swapd, {cpus[0]})
    for pid in others:
        os.sched_setaffinity(pid, set(cpus[1:]))
    print(f"  pinned swapd to CPU {cpus[0]}, upstream and client to {cpus[1:]}")


async def bench(settings: Settings, workdir: Path) -> dict[str, Any]:
    config = swapd_config({MODEL: model_cmd()}, start_port=free_port())
    per_target = len(SCENARIOS) * 2 * (settings.warmup + settings.duration + 35)
    with trio.fail_after(60 + settings.reps * per_target):
        async with (
            start_swapd(workdir, config) as swapd,
            httpx.AsyncClient(trust_env=False, timeout=30.0) as admin,
        ):
            return await bench_with(swapd, admin, settings)


async def bench_with(swapd: Swapd, admin: httpx.AsyncClient, settings: Settings) -> dict[str, Any]:
    fresh = memory_kib(swapd.pid)
    entry = await swapd.load(admin, MODEL)
    targets = {"direct": entry["proxy"].rstrip("/"), "swapd": swapd.url}
    watch = {"swapd": swapd.pid, "upstream": entry["pid"]}
    if settings.pin:
        pin_cpus(swapd=swapd.pid, others=(entry["pid"], 0))
    events = await count_events(targets["direct"])
    idle = memory_kib(swapd.pid)
    reps: dict[str, list[dict[str, Any]]] = {s.name: [] for s in SCENARIOS}
    for rep in range(settings.reps):
        for scenario in SCENARIOS:
            reps[scenario.name].append(
                await run_scenario(scenario, rep, targets, settings, watch, events)
            )
    memory = {
        "fresh": fresh / 1024,
        "idle": idle / 1024,
        "after": memory_kib(swapd.pid) / 1024,
        "peak": memory_kib(swapd.pid, "VmHWM") / 1024,
    }
    summary = {name: medians(runs) for name, runs in reps.items()}
    print_tables(summary, memory)
    return {
        "events_per_stream": events,
        "rss_mib": memory,
        "summary": summary,
        "repetitions": reps,
    }


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    info = machine_info()
    print(
        f"proxy overhead: {settings.reps} x {len(SCENARIOS)} scenarios x 2 targets,"
        f" {settings.warmup:g} s warm-up + {settings.duration:g} s each"
    )
    with tempfile.TemporaryDirectory(prefix="swapd-bench-") as tmp:
        results = trio.run(bench, settings, Path(tmp))
    write_results(
        settings.out,
        {
            "benchmark": "proxy_overhead",
            "machine": info,
            "settings": {
                "duration_s": settings.duration,
                "warmup_s": settings.warmup,
                "reps": settings.reps,
                "scenarios": [s.name for s in SCENARIOS],
                "stream_chunks": STREAM_CHUNKS,
                "pinned": settings.pin,
            },
            **results,
            "wall_s": time.monotonic() - started,
        },
    )
    print(f"\nwrote {settings.out}")
    errors = sum(
        rep["raw"][target]["errors"]
        for runs in results["repetitions"].values()
        for rep in runs
        for target in rep["raw"]
    )
    if errors:
        print(f"FAILED: {errors} requests failed; the numbers above are not meaningful")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
