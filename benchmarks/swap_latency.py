"""Cold-start latency: how long after the upstream is healthy does swapd forward?

Method:

* swapd runs as a process; each model is the demo upstream with ``--loading-delay D``
  (it listens at once, but ``/health`` answers 503 until D seconds after listening; D gets
  a random 0..``--jitter`` s added per start, so readiness lands at a random point of
  swapd's poll period, as a real model's would), run
  through ``timed_upstream.py``, which appends the upstream's own timeline to a file in
  CLOCK_MONOTONIC: ``exec``, ``listening``, ``ready`` (the exact end of the loading delay),
  each health ``probe``, the first ``health_ok`` and the ``first_request`` it received.
* One run: with no model running, the client notes ``time.monotonic()`` and POSTs a small
  non-streaming chat request for the model; "first byte" is when the response headers
  arrive (the body follows in the same write). Then ``--warm`` more requests to the now
  loaded model give the ordinary proxied latency, and ``POST /api/models/unload`` (waiting
  until ``/running`` is empty) resets for the next run.
* **added latency = first byte - ready**: what swapd adds between "the upstream could
  answer" and "the client gets its answer". It splits into the poll lag (``health_ok -
  ready``: swapd's health poll runs 20 ms, then x1.5 per try, capped at 250 ms), swapd's
  dispatch (``first_request - health_ok``) and the reply path (``first byte -
  first_request``), which a warm request pays too. The first cold start after swapd
  starts also pays for creating the forwarder's HTTP client for that upstream (shows in
  ``dispatch``, hence in the max column).

Prints median / p90 / max per loading delay and writes ``results/swap_latency.json``
(``--quick``: 3 runs at D = 0.3 s, into ``swap_latency.quick.json``).
"""

from __future__ import annotations

import argparse
import json
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
    BENCH_DIR,
    CHAT_PATH,
    JSON_HEADERS,
    RESULTS_DIR,
    Swapd,
    chat_body,
    free_port,
    machine_info,
    median,
    percentile,
    start_swapd,
    swapd_config,
    write_results,
)

MS = 1000.0
#: The phases of one cold start, as (name, from event, to event), in order.
PHASES = (
    ("spawn", "request", "exec"),  # swapd picks the model, spawns; the interpreter starts
    ("boot", "exec", "listening"),  # imports and bind
    ("loading", "listening", "ready"),  # the --loading-delay itself
    ("poll_lag", "ready", "health_ok"),  # until swapd's next health probe
    ("dispatch", "health_ok", "first_request"),  # swapd marks ready, forwards the request
    ("reply", "first_request", "first_byte"),  # upstream answers, swapd relays the headers
)


@dataclass(frozen=True)
class Settings:
    runs: int
    delays: tuple[float, ...]
    warm: int
    jitter: float
    out: Path


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 runs at D=0.3 s (smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="cold starts per delay (10)")
    parser.add_argument(
        "--delays", default=None, help="comma-separated loading delays in s (0.5,2)"
    )
    parser.add_argument("--warm", type=int, default=5, help="warm requests after each start")
    parser.add_argument(
        "--jitter",
        type=float,
        default=0.25,
        help="random 0..S s added to each loading delay, so readiness lands anywhere in "
        "swapd's poll period (0.25 = its longest interval)",
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 10)
    delays_text = args.delays or ("0.3" if args.quick else "0.5,2")
    delays = tuple(float(d) for d in delays_text.split(","))
    name = "swap_latency.quick.json" if args.quick else "swap_latency.json"
    out = args.out or RESULTS_DIR / name
    return Settings(runs, delays, max(0, args.warm), max(0.0, args.jitter), out)


def model_id(delay: float) -> str:
    return f"load-{delay:g}s".replace(".", "_")


def timed_cmd(events: Path, delay: float, jitter: float) -> str:
    """A model ``cmd``: the demo upstream through timed_upstream.py, on ${PORT}."""
    argv = [sys.executable, str(BENCH_DIR / "timed_upstream.py"), "--events", str(events)]
    argv += ["--jitter", f"{jitter:g}", "--"]
    flags = ["--silent", "--loading-delay", f"{delay:g}"]
    return " ".join([*map(shlex.quote, argv), "--port", "${PORT}", *flags])


def read_timeline(events: Path, pid: int) -> dict[str, Any]:
    """The events of upstream ``pid``: first time of each, plus all probe times."""
    timeline: dict[str, Any] = {"probes": []}
    for line in events.read_text().splitlines():
        record = json.loads(line)
        if record["pid"] != pid:
            continue
        if record["event"] == "probe":
            timeline["probes"].append(record["t"])
        else:
            timeline.setdefault(record["event"], record["t"])
    return timeline


async def cold_request(client: httpx.AsyncClient, url: str, model: str) -> dict[str, float]:
    """One request; client-side times in CLOCK_MONOTONIC."""
    body = chat_body(model, stream=False)
    request = time.monotonic()
    async with client.stream("POST", url, content=body, headers=JSON_HEADERS) as reply:
        first_byte = time.monotonic()
        await reply.aread()
        if reply.status_code != 200:
            raise RuntimeError(f"cold request answered {reply.status_code}: {reply.text[:200]}")
    return {"request": request, "first_byte": first_byte, "done": time.monotonic()}


async def warm_latency(client: httpx.AsyncClient, url: str, model: str, count: int) -> float:
    """Median time to response headers of ``count`` requests to a loaded model."""
    body = chat_body(model, stream=False)
    times = []
    for _ in range(count):
        started = time.monotonic()
        async with client.stream("POST", url, content=body, headers=JSON_HEADERS) as reply:
            times.append(time.monotonic() - started)
            await reply.aread()
    return median(times) if times else float("nan")


def phases(t: dict[str, Any]) -> dict[str, float]:
    """Phase durations and the headline numbers of one run, in ms."""
    out = {name: (t[end] - t[start]) * MS for name, start, end in PHASES}
    out["added"] = (t["first_byte"] - t["ready"]) * MS
    out["cold_total"] = (t["first_byte"] - t["request"]) * MS
    return out


def probe_gap_at_ready(t: dict[str, Any]) -> float:
    """The poll interval in force when the upstream became ready (ms); NaN if unknown."""
    probes = sorted(t["probes"])
    before = [p for p in probes if p <= t["ready"]]
    after = [p for p in probes if p > t["ready"]]
    return (after[0] - before[-1]) * MS if before and after else float("nan")


async def one_run(
    swapd: Swapd, client: httpx.AsyncClient, model: str, events: Path, warm: int
) -> dict[str, Any]:
    url = swapd.url + CHAT_PATH
    times = await cold_request(client, url, model)
    [entry] = [e for e in await swapd.running(client) if e["model"] == model]
    warm_ms = await warm_latency(client, url, model, warm) * MS
    await swapd.unload_all(client)
    timeline = {**read_timeline(events, entry["pid"]), **times}
    missing = [
        e for e in ("exec", "listening", "ready", "health_ok", "first_request") if e not in timeline
    ]
    if missing:
        raise RuntimeError(f"upstream pid {entry['pid']} recorded no {missing}")
    return {
        **phases(timeline),
        "warm_ms": warm_ms,
        "probes_after_listening": len(timeline["probes"]),
        "poll_interval_at_ready_ms": probe_gap_at_ready(timeline),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """median / p90 / max of every numeric field across runs."""
    return {
        key: {
            "median": median([r[key] for r in runs]),
            "p90": percentile([r[key] for r in runs], 90),
            "max": max(r[key] for r in runs),
        }
        for key in runs[0]
    }


def print_table(delay: float, summary: dict[str, dict[str, float]]) -> None:
    rows = [
        ("added = first byte - healthy", "added"),
        ("  poll lag (ready -> 200 probe)", "poll_lag"),
        ("  dispatch (200 probe -> forwarded)", "dispatch"),
        ("  reply (forwarded -> first byte)", "reply"),
        ("  (warm request, for comparison)", "warm_ms"),
        ("poll interval at ready", "poll_interval_at_ready_ms"),
        ("cold start total (request -> byte)", "cold_total"),
        ("  spawn + interpreter", "spawn"),
        ("  upstream boot (imports, bind)", "boot"),
        ("  loading delay", "loading"),
    ]
    print(f"\nloading delay {delay:g} s (+ jitter) — ms: {'median':>8} {'p90':>8} {'max':>8}")
    for label, key in rows:
        s = summary[key]
        print(f"  {label:<38} {s['median']:8.1f} {s['p90']:8.1f} {s['max']:8.1f}")


async def measure_delay(
    swapd: Swapd, client: httpx.AsyncClient, settings: Settings, delay: float, events: Path
) -> dict[str, Any]:
    """``settings.runs`` cold starts of the model with loading delay ``delay``."""
    runs = []
    for index in range(settings.runs):
        run = await one_run(swapd, client, model_id(delay), events, settings.warm)
        print(f"  D={delay:g}s run {index + 1}/{settings.runs}: added {run['added']:.1f} ms")
        runs.append(run)
    summary = summarize(runs)
    print_table(delay, summary)
    return {"runs": runs, "summary": summary}


async def bench(settings: Settings, workdir: Path) -> dict[str, Any]:
    """One swapd with a model per loading delay; runs them in turn."""
    events = {d: workdir / f"events-{model_id(d)}.jsonl" for d in settings.delays}
    config = swapd_config(
        {model_id(d): timed_cmd(events[d], d, settings.jitter) for d in settings.delays},
        start_port=free_port(),
    )
    # Bounded: each run is a start (D + about 1 s), a few requests and an unload.
    limit = 60 + settings.runs * len(settings.delays) * (15 + max(settings.delays))
    results: dict[str, Any] = {}
    with trio.fail_after(limit):
        async with (
            start_swapd(workdir, config) as swapd,
            httpx.AsyncClient(trust_env=False, timeout=60.0) as client,
        ):
            for delay in settings.delays:
                results[f"{delay:g}"] = await measure_delay(
                    swapd, client, settings, delay, events[delay]
                )
    return results


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    info = machine_info()
    print(
        f"swap latency: {settings.runs} cold starts per loading delay {settings.delays} s"
        f" (+ random 0..{settings.jitter:g} s each)"
    )
    with tempfile.TemporaryDirectory(prefix="swapd-bench-") as tmp:
        results = trio.run(bench, settings, Path(tmp))
    write_results(
        settings.out,
        {
            "benchmark": "swap_latency",
            "machine": info,
            "settings": {
                "runs": settings.runs,
                "delays_s": settings.delays,
                "jitter_s": settings.jitter,
                "warm": settings.warm,
            },
            "unit": "ms",
            "by_loading_delay_s": results,
            "wall_s": time.monotonic() - started,
        },
    )
    print(f"\nwrote {settings.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
