"""swapd's benchmark: direct vs nginx vs swapd, cold swaps, bursts, scale, memory.

::

    nox -s bench                      # everything, ~5 min
    nox -s bench -- --quick           # smoke test, ~1 min
    python benchmarks/bench.py [--quick] [--reps N] [--duration S] [--only proxy,cold,burst,scale]
                               [--profile] [--pin] [--swapd-path DIR] [--out FILE]

Prints one table of ratios and the issue-#8 targets (met / missed), and writes everything
measured to ``results/bench.json`` (``bench.quick.json`` with ``--quick``). Method, per
scenario (all on 127.0.0.1; every child runs in its own process group and is killed when
the script ends, whatever happens):

* **Processes.** One process tree: the fake upstream (``fake_upstream.py``) started *by
  swapd* as model ``bench`` (``concurrencyLimit: 128``); nginx (``worker_processes 1``,
  ``master_process off``, upstream keep-alive, ``proxy_buffering off``) in front of that
  same upstream process; the load generator. "direct" is the upstream's own address from
  ``/running``, so the three targets reach the very same upstream process.
* **Load generator.** wrk (Debian ``wrk``, 1 thread, keep-alive) when installed, else a trio
  client in this process (the printed method says which). Small chat requests at
  concurrency 1, 16 and 64; streams of 100 content events (102 SSE events with the usage
  event and ``[DONE]``) at concurrency 16 at full speed, and at concurrency 4 with the
  events 1 ms apart ("paced": events reach swapd one by one, as tokens from a model do).
  Each repetition runs every target once (0.5 s warm-up + the timed run) and rotates the
  order; the table shows medians over repetitions.
* **Time to first byte and per-chunk latency.** A blocking keep-alive raw-socket client
  (``loadgen.RawClient``) sends one 100-chunk stream at a time, round-robin over the
  targets; TTFB is the first body byte, and "per chunk" is (stream time - TTFB) through the
  proxy minus the same direct, divided by 100.
* **CPU.** utime + stime of swapd (and nginx) from ``/proc/<pid>/stat`` around each timed
  run, per request or per SSE event forwarded. On a shared machine this is steadier than
  wall-clock rates.
* **Cold swap.** Model ``cold`` is the fake upstream with ``--ready-after 0.5``: /health is
  200 from 0.5 s after the *process was launched*. With nothing loaded, one small request;
  overhead = (first byte - request sent) - 0.5 s. Its launch log splits it into "request →
  process launched" and "ready → first byte".
* **Burst.** Models ``a`` and ``b`` in one ``swap: true`` group, both ready 0.5 s after
  launch; nothing loaded; 24 requests sent at once (12 each, interleaved, one connection
  each). Wall time until the last answer; launches counted from the upstreams' launch log.
* **Scale.** A 1,000-model config: ``parse_config`` in this process (best of 3), swapd
  start-up to a 200 on /health against a 1-model config, ``GET /v1/models`` latency (median
  of 20) and swapd's RSS with it loaded.
* **Memory.** swapd's VmRSS fresh, idle with the model loaded, the highest value sampled
  every 50 ms during the c=64 run, and after the runs.

* **Issue #25's table and targets.** Streams at c=16 and small requests at c=16 as a
  share of direct, added p50 at c=1 and p99 at c=16, for direct, nginx, a bare hypercorn
  app (``stack_floor.py hello``: a fixed answer, or the 100 events one ``send`` each),
  hypercorn + swapd's relay, and swapd. **Paced gaps**: streams of 50 events 20 ms apart,
  one at a time, round-robin; the gaps between events as the client reads them (p99),
  which a relay that held events back to batch them would widen.

``--profile`` also records swapd with py-spy during small requests at c=16 and streams at
c=16 and prints where the samples fall, by layer (``profiling.py``); the raw stacks go to
``results/profile-*.txt``. ``--swapd-path DIR`` runs the swapd package found in DIR instead
(PYTHONPATH), to compare a change against a copy of the tree.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import profiling
from common import (
    BENCH_DIR,
    LOOPBACK,
    RESULTS_DIR,
    Child,
    child_process,
    cpu_seconds,
    free_port,
    machine_info,
    memory_kib,
    start_ticks,
    write_results,
)
from loadgen import WRK, Job, RawClient, get, run_load, scratch_folder

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
APT_LINE = "apt-get update && apt-get install -y nginx wrk"
CHAT = "/v1/chat/completions"
CHUNKS = 100
#: The paced stream of the inter-event gap check: 50 events/s, a fast model's token rate.
GAP_DELAY_MS = 20.0
GAP_EVENTS = 50
MS = 1000.0
US = 1_000_000.0
MB = 1_000_000.0
START_TIMEOUT = 30.0

#: Issue #25's targets, checked at the end (see ``evaluate_25``).
TARGETS_25 = {
    "ratio_stream_c16": 0.85,  # x direct
    "added_c1_vs_bare": 1.5,  # x the bare hypercorn hello world's added p50, same run
    "p99_small_c16_ms": 30.0,
    "gap_p99_added_ms": 1.0,  # paced stream: p99 inter-event gap over direct's
}

#: Issue #8's targets, checked at the end.
TARGETS = {
    "added_c1_ms": 0.8,
    "added_c1_ms_stretch": 0.4,
    "ratio_small_c16": 0.25,
    "ratio_stream_c16": 0.50,
    "cpu_us_per_event": 30.0,
    "ttfb_added_ms": 2.0,
    "p99_c64_ms": 100.0,
    "cold_overhead_ms": 50.0,
    "burst_launches": 2,
    "burst_wall_s": 2.5,
    "scale_s": 1.0,
    "idle_rss_mb": 60.0,
}


@dataclass(frozen=True)
class Settings:
    quick: bool
    reps: int
    duration: float
    warmup: float
    ttfb_runs: int
    cold_runs: int
    burst_reps: int
    scale_models: int
    only: frozenset[str]
    profile: bool
    pin: bool
    swapd_path: Path | None
    out: Path


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 short repetition of each")
    parser.add_argument("--reps", type=int, help="repetitions of the load runs (3)")
    parser.add_argument("--duration", type=float, help="seconds per timed load run (3)")
    parser.add_argument("--only", default="proxy,cold,burst,scale", help="scenarios to run")
    parser.add_argument("--profile", action="store_true", help="py-spy profiles of swapd")
    parser.add_argument("--pin", action="store_true", help="swapd on CPU 0, the rest on CPU 1")
    parser.add_argument("--swapd-path", type=Path, help="run the swapd package found here")
    parser.add_argument("--out", type=Path, help="results JSON path")
    parser.add_argument(
        "--report", type=Path, help="only print the table of an earlier results file"
    )
    args = parser.parse_args(argv)
    if args.report:
        data = json.loads(args.report.read_text(encoding="utf-8"))
        print_report(data["results"], evaluate(data["results"]), data.get("notes", []))
        raise SystemExit(0)
    quick = args.quick
    only = frozenset(x.strip() for x in args.only.split(",") if x.strip())
    unknown = only - {"proxy", "cold", "burst", "scale"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return Settings(
        quick=quick,
        reps=args.reps or (1 if quick else 3),
        duration=args.duration or (1.0 if quick else 3.0),
        warmup=0.3 if quick else 0.5,
        ttfb_runs=8 if quick else 30,
        cold_runs=3 if quick else 8,
        burst_reps=1 if quick else 3,
        scale_models=1000,
        only=only,
        profile=args.profile,
        pin=args.pin,
        swapd_path=args.swapd_path.resolve() if args.swapd_path else None,
        out=args.out or RESULTS_DIR / ("bench.quick.json" if quick else "bench.json"),
    )


# --------------------------------------------------------------------------- helpers


def med(values: list[float]) -> float:
    kept = [v for v in values if v == v]  # drop NaN
    return statistics.median(kept) if kept else float("nan")


def chat_body(model: str, *, stream: bool, delay_ms: float = 0.0, chunks: int = CHUNKS) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 16,
    }
    if stream:
        body["x_chunks"] = chunks
        if delay_ms:
            body["x_delay_ms"] = delay_ms
    return json.dumps(body, separators=(",", ":")).encode()


def swapd_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if settings.swapd_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(settings.swapd_path), *filter(None, [env.get("PYTHONPATH")])]
        )
    return env


def upstream_cmd(*flags: str) -> str:
    argv = [sys.executable, str(BENCH_DIR / "fake_upstream.py"), "--port"]
    return " ".join(shlex.quote(a) for a in argv) + " ${PORT} " + " ".join(flags)


def config_text(models: dict[str, str], *, extra: str = "", limit: int | None = None) -> str:
    lines = ["healthCheckTimeout: 30", "logLevel: info", f"startPort: {free_port()}"]
    lines += ["models:"]
    for name, cmd in models.items():
        lines += [
            f"  {name}:",
            f"    cmd: {json.dumps(cmd)}",
            "    proxy: http://127.0.0.1:${PORT}",
        ]
        if limit:
            lines.append(f"    concurrencyLimit: {limit}")
    return "\n".join(lines) + "\n" + extra


def wait_until(check: Callable[[], bool], what: str, timeout: float, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited while {what}: {child.describe_failure()}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.005)
    raise TimeoutError(f"{what} took over {timeout} s: {child.describe_failure()}")


@dataclass
class Swapd:
    child: Child
    port: int
    seen_models: dict[int, int]

    @property
    def pid(self) -> int:
        return self.child.pid

    def post(self, path: str, timeout: float = START_TIMEOUT) -> Any:
        with RawClient(LOOPBACK, self.port, timeout=timeout) as client:
            timed = client.request(Job(LOOPBACK, self.port, path, b"", headers={}), keep_body=True)
        if timed.status != 200:
            raise RuntimeError(f"POST {path} answered {timed.status}: {timed.body[-300:]!r}")
        return timed

    def running(self) -> list[dict[str, Any]]:
        timed = get(LOOPBACK, self.port, "/running")
        entries: list[dict[str, Any]] = json.loads(_body(timed.body))["running"]
        for entry in entries:
            pid = entry.get("pid")
            if isinstance(pid, int) and pid not in self.seen_models:
                ticks = start_ticks(pid)
                if ticks is not None:
                    self.seen_models[pid] = ticks
        return entries

    def load(self, model: str) -> dict[str, Any]:
        self.post(f"/api/models/load/{model}")
        return next(e for e in self.running() if e["model"] == model)

    def unload_all(self) -> None:
        self.post("/api/models/unload")
        wait_until(lambda: not self.running(), "unloading", START_TIMEOUT, self.child)


def _body(raw: bytes) -> bytes:
    """The body of a raw HTTP response (Content-Length bodies, as swapd's JSON routes send)."""
    return raw.split(b"\r\n\r\n", 1)[1]


@contextlib.contextmanager
def swapd_process(settings: Settings, folder: Path, config: str, name: str) -> Iterator[Swapd]:
    path = folder / f"{name}.yaml"
    path.write_text(config, encoding="utf-8")
    port = free_port()
    argv = [sys.executable, "-m", "swapd", "--config", str(path), "--listen", f"{LOOPBACK}:{port}"]
    seen: dict[int, int] = {}
    try:
        # cwd: the scratch folder, so that `python -m swapd` imports the package from
        # PYTHONPATH (--swapd-path) or the installed one, never a checkout it runs in.
        # Its activity database goes to the scratch folder, never the user's state directory.
        env = {**swapd_env(settings), "XDG_STATE_HOME": str(folder / "state")}
        with child_process(
            f"swapd ({name})", argv, folder / f"{name}.log", env, cwd=folder
        ) as child:
            swapd = Swapd(child, port, seen)
            wait_until(
                lambda: get(LOOPBACK, port, "/health", timeout=2).status == 200,
                "starting",
                START_TIMEOUT,
                child,
            )
            yield swapd
    finally:
        for pid, ticks in seen.items():  # a model swapd left behind (it should not)
            if start_ticks(pid) == ticks:
                with contextlib.suppress(OSError):
                    os.killpg(pid, 9)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream up {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port};
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_process(folder: Path, upstream_port: int) -> Iterator[tuple[int, Child] | None]:
    """nginx as a plain reverse proxy in front of ``upstream_port``; None if not installed."""
    if NGINX is None:
        yield None
        return
    where = folder / "nginx"
    where.mkdir(exist_ok=True)
    port = free_port()
    conf = where / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=where, upstream=upstream_port, port=port))
    argv = [NGINX, "-p", str(where), "-c", str(conf), "-e", str(where / "error.log")]
    with child_process("nginx", argv, where / "stdout.log") as child:
        wait_until(
            lambda: get(LOOPBACK, port, "/health", timeout=2).status == 200,
            "starting nginx",
            10,
            child,
        )
        yield port, child


#: Stack-floor servers (stack_floor.py) and the scenarios each is loaded in.
FLOOR_SCENARIOS = {
    "hypercorn hello": ("small c=1", "small c=16", "stream c=16"),
    "quart hello": ("small c=1", "small c=16"),
    "hypercorn + relay": ("small c=1", "small c=16", "stream c=16", "paced stream c=4"),
}
_FLOOR_MODES = {"hypercorn hello": "hello", "quart hello": "quart", "hypercorn + relay": "relay"}


@contextlib.contextmanager
def floor_processes(settings: Settings, folder: Path, upstream_port: int) -> Iterator[list[Target]]:
    """The stack_floor.py servers, each in its own process; their targets."""
    with contextlib.ExitStack() as stack:
        started: list[tuple[str, int, Child]] = []
        for name, mode in _FLOOR_MODES.items():
            port = free_port()
            argv = [sys.executable, str(BENCH_DIR / "stack_floor.py"), "--mode", mode]
            argv += ["--port", str(port), "--upstream", f"http://{LOOPBACK}:{upstream_port}"]
            log = folder / f"floor-{mode}.log"
            child = stack.enter_context(
                child_process(name, argv, log, swapd_env(settings), cwd=folder)
            )
            started.append((name, port, child))
        for _name, port, child in started:
            wait_until(lambda port=port: _accepts(port), "starting", START_TIMEOUT, child)
        yield [Target(name, port, child.pid) for name, port, child in started]


def _accepts(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=1):
        return True


class RssSampler:
    """Samples a process's VmRSS every 50 ms in a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, KeyError):
                self.peak_kib = max(self.peak_kib, memory_kib(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- proxy scenarios


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    pid: int | None  # the proxy's process, for CPU; None for direct


def load_run(
    target: Target, job: Job, connections: int, settings: Settings, folder: Path, upstream: int
) -> dict[str, Any]:
    """Warm-up, then one timed run; the proxy's and the upstream's CPU seconds around it."""
    job = Job(LOOPBACK, target.port, job.path, job.body)
    cpus = "1" if settings.pin else None
    run_load(job, connections=connections, duration=settings.warmup, folder=folder, cpus=cpus)
    before = cpu_seconds(target.pid) if target.pid else 0.0
    up_before = cpu_seconds(upstream)
    stats = run_load(
        job, connections=connections, duration=settings.duration, folder=folder, cpus=cpus
    )
    cpu = cpu_seconds(target.pid) - before if target.pid else 0.0
    if stats.errors:
        print(f"  ! {target.name} c={connections}: {stats.errors} errors ({stats.first_error})")
    return {
        "tool": stats.tool,
        "rps": stats.rps,
        "requests": stats.requests,
        "errors": stats.errors,
        "p50_ms": stats.p50_ms,
        "p90_ms": stats.p90_ms,
        "p99_ms": stats.p99_ms,
        "proxy_cpu_s": cpu,
        "upstream_cpu_s": cpu_seconds(upstream) - up_before,
        "cpu_ms_per_request": cpu / stats.requests * MS if stats.requests and target.pid else None,
    }


def rotated(targets: list[Target], rep: int) -> list[Target]:
    shift = rep % len(targets)
    return targets[shift:] + targets[:shift]


def proxy_scenarios(settings: Settings, folder: Path) -> dict[str, Any]:
    config = config_text({"bench": upstream_cmd()}, limit=128)
    out: dict[str, Any] = {"runs": {}}
    with swapd_process(settings, folder, config, "proxy") as swapd:
        fresh = memory_kib(swapd.pid)
        entry = swapd.load("bench")
        upstream_port = int(entry["proxy"].rstrip("/").rsplit(":", 1)[1])
        upstream_pid = int(entry["pid"])
        if settings.pin:
            pin(swapd.pid, upstream_pid)
        with (
            nginx_process(folder, upstream_port) as nginx,
            floor_processes(settings, folder, upstream_port) as floor,
        ):
            targets = [Target("direct", upstream_port, None)]
            if nginx is not None:
                targets.append(Target("nginx", nginx[0], nginx[1].pid))
            targets.append(Target("swapd", swapd.port, swapd.pid))
            small = Job(LOOPBACK, 0, CHAT, chat_body("bench", stream=False))
            # a few requests through swapd, then "idle" memory
            with RawClient(LOOPBACK, swapd.port) as client:
                for _ in range(20):
                    client.request(Job(LOOPBACK, swapd.port, CHAT, small.body))
            idle = memory_kib(swapd.pid)
            events = count_events(upstream_port)
            out["events_per_stream"] = events
            out["tool"] = "wrk 4.1 (1 thread)" if WRK else "trio client in the benchmark process"
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
            peak_c64 = 0

            def record(scenario: str, target: Target, result: dict[str, Any]) -> None:
                runs.setdefault(scenario, {}).setdefault(target.name, []).append(result)

            stream = Job(LOOPBACK, 0, CHAT, chat_body("bench", stream=True))
            paced = Job(LOOPBACK, 0, CHAT, chat_body("bench", stream=True, delay_ms=1))
            plan = [("small c=1", small, 1), ("small c=16", small, 16), ("small c=64", small, 64)]
            plan += [("stream c=16", stream, 16), ("paced stream c=4", paced, 4)]
            for rep in range(settings.reps):
                for scenario, job, conc in plan:
                    extra = [t for t in floor if scenario in FLOOR_SCENARIOS[t.name]]
                    for target in rotated(targets + extra, rep):
                        if target.name == "swapd" and scenario == "small c=64":
                            with RssSampler(swapd.pid) as sampler:
                                result = load_run(target, job, conc, settings, folder, upstream_pid)
                            peak_c64 = max(peak_c64, sampler.peak_kib)
                        else:
                            result = load_run(target, job, conc, settings, folder, upstream_pid)
                        record(scenario, target, result)
                    print(
                        f"  rep {rep + 1}/{settings.reps} {scenario:<17} "
                        + "  ".join(
                            f"{t.name} {runs[scenario][t.name][-1]['rps']:7.0f}/s"
                            for t in targets + extra
                        )
                    )
            out["runs"] = runs
            out["ttfb"] = ttfb_runs(targets, settings)
            out["gaps"] = gap_runs(targets, settings)
            if settings.profile:
                out["profiles"] = profile_swapd(
                    swapd, upstream_pid, small, stream, settings, folder
                )
        out["rss_kib"] = {
            "fresh": fresh,
            "idle": idle,
            "peak_c64": peak_c64,
            "after": memory_kib(swapd.pid),
            "hwm": memory_kib(swapd.pid, "VmHWM"),
        }
    out["summary"] = summarise_proxy(out)
    return out


def count_events(port: int) -> int:
    with RawClient(LOOPBACK, port) as client:
        timed = client.request(
            Job(LOOPBACK, port, CHAT, chat_body("bench", stream=True)), keep_body=True
        )
    return timed.body.count(b"data:")


def ttfb_runs(targets: list[Target], settings: Settings) -> dict[str, dict[str, float]]:
    """One 100-chunk stream at a time, round-robin over the targets."""
    body = chat_body("bench", stream=True)
    times: dict[str, dict[str, list[float]]] = {t.name: {"ttfb": [], "total": []} for t in targets}
    clients = {t.name: RawClient(LOOPBACK, t.port) for t in targets}
    try:
        for i in range(settings.ttfb_runs + 3):
            for target in rotated(targets, i):
                timed = clients[target.name].request(Job(LOOPBACK, target.port, CHAT, body))
                if i >= 3:  # the first rounds warm the connections up
                    times[target.name]["ttfb"].append(timed.ttfb_s)
                    times[target.name]["total"].append(timed.total_s)
    finally:
        for client in clients.values():
            client.close()
    return {
        name: {
            "ttfb_ms": med(t["ttfb"]) * MS,
            "ttfb_p90_ms": sorted(t["ttfb"])[int(0.9 * (len(t["ttfb"]) - 1))] * MS,
            "stream_ms": med(t["total"]) * MS,
            "after_first_byte_ms": med([a - b for a, b in zip(t["total"], t["ttfb"], strict=True)])
            * MS,
        }
        for name, t in times.items()
    }


def gap_runs(targets: list[Target], settings: Settings) -> dict[str, dict[str, float]]:
    """Streams paced at 50 events/s, one at a time, round-robin over the targets: the gaps
    between consecutive events as the client reads them (a relay that batched or held
    events back would widen the tail of these gaps)."""
    body = chat_body("bench", stream=True, delay_ms=GAP_DELAY_MS, chunks=GAP_EVENTS)
    gaps: dict[str, list[float]] = {t.name: [] for t in targets}
    clients = {t.name: RawClient(LOOPBACK, t.port) for t in targets}
    rounds = 2 if settings.quick else 6
    try:
        for i in range(rounds + 1):
            for target in rotated(targets, i):
                arrivals: list[tuple[float, bytes]] = []
                clients[target.name].request(
                    Job(LOOPBACK, target.port, CHAT, body), arrivals=arrivals
                )
                if i == 0:
                    continue  # the first round warms the connections up
                times = event_times(arrivals)
                # The paced content events only: the usage event and [DONE] follow the last
                # one at once, in every column alike.
                paced = times[:GAP_EVENTS]
                gaps[target.name] += [b - a for a, b in itertools.pairwise(paced)]
    finally:
        for client in clients.values():
            client.close()
    out = {}
    for name, values in gaps.items():
        ordered = sorted(values)
        out[name] = {
            "events": float(len(ordered)),
            "gap_p50_ms": ordered[len(ordered) // 2] * MS if ordered else float("nan"),
            "gap_p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * MS if ordered else float("nan"),
            "gap_max_ms": ordered[-1] * MS if ordered else float("nan"),
        }
    return out


def event_times(arrivals: list[tuple[float, bytes]]) -> list[float]:
    """The arrival time of every SSE event (``data:``) in a stream's reads."""
    times: list[float] = []
    tail = b""
    for at, chunk in arrivals:
        data = tail + chunk
        times += [at] * data.count(b"data:")
        tail = data[-4:]  # "data:" split across two reads is counted once, in the second
    return times


def profile_swapd(
    swapd: Swapd, upstream_pid: int, small: Job, stream: Job, settings: Settings, folder: Path
) -> dict[str, Any]:
    """py-spy on swapd while small requests, then streams, run at c=16.

    swapd runs alone on the first CPU meanwhile (the upstream, the load generator and py-spy
    on the others): py-spy counts a thread that is runnable but waiting for its CPU as busy
    in whatever frame it stopped, which without pinning charges the loopback ``send`` calls
    (they wake the peer, which then takes the CPU) with time swapd did not spend."""
    profiles: dict[str, Any] = {}
    seconds = 3.0 if settings.quick else 8.0
    cpus = sorted(os.sched_getaffinity(0))
    others = ",".join(map(str, cpus[1:])) or None
    if len(cpus) >= 2:
        os.sched_setaffinity(swapd.pid, {cpus[0]})
        os.sched_setaffinity(upstream_pid, set(cpus[1:]))
        os.sched_setaffinity(0, set(cpus[1:]))
    try:
        for name, job in (("small c=16", small), ("stream c=16", stream)):
            out = RESULTS_DIR / f"profile-{name.split()[0]}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            target = Job(LOOPBACK, swapd.port, job.path, job.body)
            holder: dict[str, str | None] = {}
            thread = threading.Thread(target=_record_into, args=(holder, swapd.pid, seconds, out))
            thread.start()
            time.sleep(0.3)  # py-spy attaches
            run_load(target, connections=16, duration=seconds, folder=folder, cpus=others)
            thread.join()
            raw = holder.get("raw")
            if raw:
                summary = profiling.summarise(raw)
                profiles[name] = {"file": str(out.relative_to(BENCH_DIR)), **summary}
                profiling.print_summary(f"swapd profile, {name}", summary)
    finally:
        if not settings.pin:
            for pid in (swapd.pid, upstream_pid, 0):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(pid, set(cpus))
    return profiles


def _record_into(holder: dict[str, str | None], pid: int, seconds: float, out: Path) -> None:
    holder["raw"] = profiling.record(pid, seconds, out)


def summarise_proxy(out: dict[str, Any]) -> dict[str, Any]:
    runs = out["runs"]
    events = out["events_per_stream"]
    summary: dict[str, Any] = {}
    for scenario, per_target in runs.items():
        row: dict[str, Any] = {}
        for name, results in per_target.items():
            cell = {key: med([r[key] for r in results]) for key in ("rps", "p50_ms", "p99_ms")}
            cell["errors"] = sum(r["errors"] for r in results)
            if name != "direct":
                per_request = med(
                    [r["proxy_cpu_s"] / r["requests"] for r in results if r["requests"]]
                )
                cell["cpu_ms_per_request"] = per_request * MS
                if "stream" in scenario:
                    cell["cpu_us_per_event"] = per_request / events * US
            up = med([r["upstream_cpu_s"] / r["requests"] for r in results if r["requests"]])
            if "stream" in scenario:
                cell["upstream_cpu_us_per_event"] = up / events * US
            row[name] = cell
        direct = row["direct"]
        for name, cell in row.items():
            if name != "direct":
                cell["x_direct"] = cell["rps"] / direct["rps"] if direct["rps"] else float("nan")
                cell["added_p50_ms"] = cell["p50_ms"] - direct["p50_ms"]
        summary[scenario] = row
    ttfb = out["ttfb"]
    for name, cell in ttfb.items():
        if name != "direct":
            cell["added_ttfb_ms"] = cell["ttfb_ms"] - ttfb["direct"]["ttfb_ms"]
            cell["added_us_per_chunk"] = (
                (cell["after_first_byte_ms"] - ttfb["direct"]["after_first_byte_ms"])
                / CHUNKS
                * 1000
            )
    summary["ttfb"] = ttfb
    if "gaps" in out:
        summary["gaps"] = out["gaps"]
    return summary


def pin(swapd_pid: int, upstream_pid: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("  --pin ignored: fewer than 2 CPUs")
        return
    os.sched_setaffinity(swapd_pid, {cpus[0]})
    os.sched_setaffinity(upstream_pid, set(cpus[1:]))
    os.sched_setaffinity(0, set(cpus[1:]))


# --------------------------------------------------------------------------- cold swap


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def last_launch(log: Path) -> dict[str, Any]:
    return json.loads(log.read_text().splitlines()[-1])


def cold_swap(settings: Settings, folder: Path) -> dict[str, Any]:
    log = folder / "cold-launch.jsonl"
    cmd = upstream_cmd("--ready-after", "0.5", "--launch-log", shlex.quote(str(log)))
    runs: list[dict[str, float]] = []
    with swapd_process(settings, folder, config_text({"cold": cmd}), "cold") as swapd:
        job = Job(LOOPBACK, swapd.port, CHAT, chat_body("cold", stream=False))
        for _ in range(settings.cold_runs):
            if swapd.running():
                swapd.unload_all()
            with RawClient(LOOPBACK, swapd.port) as client:
                client._connect()
                sent = boottime()
                timed = client.request(job, clock=boottime)
            if timed.status != 200:
                raise RuntimeError(f"cold request answered {timed.status}")
            launch = last_launch(log)
            first_byte = sent + timed.ttfb_s
            runs.append(
                {
                    "first_byte_s": timed.ttfb_s,
                    "overhead_ms": (timed.ttfb_s - 0.5) * MS,
                    "to_launch_ms": (launch["launched"] - sent) * MS,
                    "ready_to_first_byte_ms": (first_byte - launch["ready_at"]) * MS,
                }
            )
            swapd.running()
            swapd.unload_all()
    overheads = sorted(r["overhead_ms"] for r in runs)
    return {
        "runs": runs,
        "overhead_ms_median": med(overheads),
        "overhead_ms_max": overheads[-1],
        "to_launch_ms_median": med([r["to_launch_ms"] for r in runs]),
        "ready_to_first_byte_ms_median": med([r["ready_to_first_byte_ms"] for r in runs]),
    }


# --------------------------------------------------------------------------- burst


def burst(settings: Settings, folder: Path) -> dict[str, Any]:
    log = folder / "burst-launch.jsonl"
    cmd = upstream_cmd("--ready-after", "0.5", "--launch-log", shlex.quote(str(log)))
    groups = "groups:\n  pair:\n    swap: true\n    members: [a, b]\n"
    config = config_text({"a": cmd, "b": cmd}, extra=groups)
    runs: list[dict[str, Any]] = []
    with swapd_process(settings, folder, config, "burst") as swapd:
        for _ in range(settings.burst_reps):
            if swapd.running():
                swapd.unload_all()
            launches_before = len(log.read_text().splitlines()) if log.exists() else 0
            statuses, wall = _burst_once(swapd, ["a", "b"] * 12)
            launches = len(log.read_text().splitlines()) - launches_before
            runs.append(
                {
                    "wall_s": wall,
                    "launches": launches,
                    "ok": sum(1 for s in statuses if s == 200),
                    "statuses": sorted(set(statuses)),
                }
            )
            swapd.running()
    return {
        "runs": runs,
        "wall_s_median": med([r["wall_s"] for r in runs]),
        "launches_max": max(r["launches"] for r in runs),
        "all_ok": all(r["ok"] == 24 for r in runs),
    }


# --------------------------------------------------------------------------- scale


def _burst_once(swapd: Swapd, models: list[str]) -> tuple[list[int], float]:
    """One request per entry of ``models``, all sent at once (one connection each, opened
    beforehand); the statuses and the wall time until the last answer."""
    clients = [RawClient(LOOPBACK, swapd.port, timeout=60) for _ in models]
    for client in clients:
        client._connect()
    statuses = [0] * len(models)
    ends = [0.0] * len(models)
    gate = threading.Barrier(len(models) + 1)

    def send(i: int, model: str) -> None:
        job = Job(LOOPBACK, swapd.port, CHAT, chat_body(model, stream=False))
        gate.wait()
        try:
            statuses[i] = clients[i].request(job).status
        finally:
            ends[i] = time.perf_counter()

    threads = [threading.Thread(target=send, args=(i, m)) for i, m in enumerate(models)]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout=60)
    for client in clients:
        client.close()
    return statuses, max(ends) - started


def scale_config(models: int) -> str:
    lines = ["healthCheckTimeout: 30", f"startPort: {free_port()}", "models:"]
    for i in range(models):
        lines += [
            f"  model-{i}:",
            f"    cmd: llama-server --port ${{PORT}} -m /models/{i}.gguf",
            "    proxy: http://127.0.0.1:${PORT}",
            f"    aliases: [alias-{i}]",
            "    ttl: 300",
        ]
    return "\n".join(lines) + "\n"


def scale(settings: Settings, folder: Path) -> dict[str, Any]:
    text = scale_config(settings.scale_models)
    if settings.swapd_path is not None:
        sys.path.insert(0, str(settings.swapd_path))
    from swapd.config import parse_config
    from swapd.config.source import parse_yaml

    def best(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        return min(walls), min(cpus)

    repeat = 3 if settings.quick else 5
    parse_wall, parse_cpu = best(lambda: parse_config(text, file="scale.yaml"), repeat)
    yaml_wall, yaml_cpu = best(lambda: parse_yaml(text, file="scale.yaml"), repeat)
    startup = {}
    for name, config in (("1 model", scale_config(1)), (f"{settings.scale_models} models", text)):
        started = time.perf_counter()
        with swapd_process(settings, folder, config, f"scale-{name.split()[0]}") as swapd:
            startup[name] = time.perf_counter() - started
            if name != "1 model":
                times = []
                size = 0
                with RawClient(LOOPBACK, swapd.port) as client:
                    for _ in range(21):
                        timed = client.request(
                            Job(LOOPBACK, swapd.port, "/v1/models", b"", method="GET", headers={})
                        )
                        times.append(timed.total_s)
                        size = timed.body_bytes
                models_ms = med(times[1:]) * MS
                rss = memory_kib(swapd.pid)
    return {
        "models": settings.scale_models,
        "parse_config_s": parse_wall,
        "parse_config_cpu_s": parse_cpu,
        "yaml_parse_s": yaml_wall,
        "yaml_parse_cpu_s": yaml_cpu,
        "startup_s": startup,
        "startup_extra_s": startup[f"{settings.scale_models} models"] - startup["1 model"],
        "v1_models_ms": models_ms,
        "v1_models_bytes": size,
        "rss_kib": rss,
        "load_and_list_s": parse_wall + models_ms / MS,
        "load_and_list_cpu_s": parse_cpu + models_ms / MS,
    }


# --------------------------------------------------------------------------- report


def fmt(value: float | None, spec: str = ".2f") -> str:
    if value is None or value != value:
        return "-"
    return format(value, spec)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each issue-#8 target: what was measured and whether it is met."""
    rows: list[dict[str, Any]] = []

    def add(name: str, target: str, value: float | None, text: str, met: bool | None) -> None:
        rows.append({"target": name, "goal": target, "value": value, "measured": text, "met": met})

    proxy = results.get("proxy", {}).get("summary")
    if proxy:
        swapd = proxy["small c=1"]["swapd"]
        added = swapd["added_p50_ms"]
        add(
            "added latency, c=1 (p50)",
            "<= 0.8 ms (stretch 0.4)",
            added,
            f"{added:.2f} ms",
            added <= TARGETS["added_c1_ms"],
        )
        r16 = proxy["small c=16"]["swapd"]["x_direct"]
        add("throughput small c=16", ">= 0.25 x direct", r16, f"{r16:.3f} x", r16 >= 0.25)
        s16 = proxy["stream c=16"]["swapd"]["x_direct"]
        add("throughput streams c=16", ">= 0.50 x direct", s16, f"{s16:.3f} x", s16 >= 0.5)
        ev = proxy["stream c=16"]["swapd"]["cpu_us_per_event"]
        add("swapd CPU per SSE event, full speed", "<= 30 us", ev, f"{ev:.1f} us", ev <= 30)
        paced = proxy["paced stream c=4"]["swapd"]["cpu_us_per_event"]
        nginx = proxy["paced stream c=4"].get("nginx", {}).get("cpu_us_per_event")
        add(
            "swapd CPU per SSE event, paced 1 ms",
            "<= 30 us",
            paced,
            f"{paced:.1f} us" + (f" (nginx: {nginx:.1f} us)" if nginx is not None else ""),
            paced <= 30,
        )
        ttfb = proxy["ttfb"]["swapd"]["added_ttfb_ms"]
        add(
            "first byte (stream, c=1)",
            "<= direct + 2 ms",
            ttfb,
            f"direct + {ttfb:.2f} ms",
            ttfb <= 2.0,
        )
        p99 = proxy["small c=64"]["swapd"]["p99_ms"]
        add("p99 at c=64", "<= 100 ms", p99, f"{p99:.1f} ms", p99 <= 100)
        idle_mb = results["proxy"]["rss_kib"]["idle"] * 1024 / MB
        add("idle RSS", "<= 60 MB", idle_mb, f"{idle_mb:.1f} MB", idle_mb <= 60)
    cold = results.get("cold")
    if cold:
        value = cold["overhead_ms_median"]
        add(
            "cold swap overhead (median)",
            "<= 50 ms",
            value,
            f"{value:.1f} ms (max {cold['overhead_ms_max']:.1f})",
            value <= 50,
        )
    burst_result = results.get("burst")
    if burst_result:
        wall, launches = burst_result["wall_s_median"], burst_result["launches_max"]
        add(
            "burst of 24 over 2 models",
            "<= 2 launches, <= 2.5 s",
            wall,
            f"{launches} launches, {wall:.2f} s",
            launches <= 2 and wall <= 2.5 and burst_result["all_ok"],
        )
    scale_result = results.get("scale")
    if scale_result:
        cpu = scale_result["load_and_list_cpu_s"]
        wall = scale_result["load_and_list_s"]
        add(
            "1,000-model config: load + list",
            "<= 1 s",
            cpu,
            f"{cpu:.2f} s CPU ({scale_result['parse_config_cpu_s']:.2f} + "
            f"{scale_result['v1_models_ms'] / MS:.3f}); wall {wall:.2f} s",
            cpu <= 1.0,
        )
    return rows


COLUMNS_25 = ("direct", "nginx", "hypercorn hello", "hypercorn + relay", "swapd")


def table_25(summary: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Issue #25's table: one row per measure, one cell per column present in the run."""

    def cell(scenario: str, name: str, text: Callable[[dict[str, Any]], str]) -> str | None:
        row = summary.get(scenario, {})
        return text(row[name]) if name in row else None

    rows: list[tuple[str, dict[str, str]]] = []

    def ratio(digits: int) -> Callable[[dict[str, Any]], str]:
        return lambda c: f"{c.get('x_direct', 1.0):.{digits}f}"

    measures: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
        ("streams at c=16, x direct", "stream c=16", ratio(2)),
        ("small requests at c=16, x direct", "small c=16", ratio(3)),
        ("added p50 at c=1", "small c=1", lambda c: f"+{c.get('added_p50_ms', 0.0):.2f} ms"),
        ("p99 small at c=16", "small c=16", lambda c: f"{c['p99_ms']:.1f} ms"),
        (
            "CPU per small request, c=1",
            "small c=1",
            lambda c: fmt(c.get("cpu_ms_per_request"), ".2f") + " ms",
        ),
    ]
    for label, scenario, text in measures:
        cells = {n: v for n in COLUMNS_25 if (v := cell(scenario, n, text)) is not None}
        if "CPU" in label:
            cells.pop("direct", None)
        rows.append((label, cells))
    gaps = summary.get("gaps", {})
    if gaps:
        rows.append(
            (
                "paced stream (50 events/s), p99 gap",
                {n: f"{gaps[n]['gap_p99_ms']:.2f} ms" for n in COLUMNS_25 if n in gaps},
            )
        )
    return rows


def print_table_25(summary: dict[str, Any]) -> None:
    rows = table_25(summary)
    names = [n for n in COLUMNS_25 if any(n in cells for _, cells in rows)]
    print("\n  issue #25 table (medians of the repetitions):")
    print(f"    {'':<36}" + "".join(f"{n:>19}" for n in names))
    for label, cells in rows:
        print(f"    {label:<36}" + "".join(f"{cells.get(n, '-'):>19}" for n in names))


def evaluate_25(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue #25's targets: what was measured and whether it is met."""
    summary = results.get("proxy", {}).get("summary")
    if not summary:
        return []
    rows: list[dict[str, Any]] = []
    goal = TARGETS_25
    ratio = summary["stream c=16"]["swapd"]["x_direct"]
    rows.append(
        {
            "target": "streams at c=16",
            "goal": f">= {goal['ratio_stream_c16']} x direct",
            "value": ratio,
            "measured": f"{ratio:.2f} x",
            "met": ratio >= goal["ratio_stream_c16"],
        }
    )
    added = summary["small c=1"]["swapd"]["added_p50_ms"]
    bare = summary["small c=1"].get("hypercorn hello", {}).get("added_p50_ms")
    rows.append(
        {
            "target": "added p50 at c=1",
            "goal": f"<= {goal['added_c1_vs_bare']} x bare hypercorn",
            "value": added,
            "measured": f"{added:.2f} ms"
            + (f" = {added / bare:.2f} x bare hypercorn's {bare:.2f} ms" if bare else ""),
            "met": None if not bare else added <= goal["added_c1_vs_bare"] * bare,
        }
    )
    p99 = summary["small c=16"]["swapd"]["p99_ms"]
    rows.append(
        {
            "target": "p99 small at c=16",
            "goal": f"<= {goal['p99_small_c16_ms']:.0f} ms",
            "value": p99,
            "measured": f"{p99:.1f} ms",
            "met": p99 <= goal["p99_small_c16_ms"],
        }
    )
    gaps = summary.get("gaps", {})
    if "swapd" in gaps and "direct" in gaps:
        extra = gaps["swapd"]["gap_p99_ms"] - gaps["direct"]["gap_p99_ms"]
        rows.append(
            {
                "target": "paced stream: p99 gap between events",
                "goal": f"<= direct + {goal['gap_p99_added_ms']:.0f} ms",
                "value": extra,
                "measured": f"direct {extra:+.2f} ms",
                "met": extra <= goal["gap_p99_added_ms"],
            }
        )
    return rows


def print_report(results: dict[str, Any], targets: list[dict[str, Any]], notes: list[str]) -> None:
    proxy = results.get("proxy")
    if proxy:
        summary = proxy["summary"]
        print(f"\nload generator: {proxy['tool']}; medians of the repetitions")
        names = [n for n in ("direct", "nginx", "swapd") if n in summary["small c=1"]]
        head = f"  {'scenario':<17} {'direct':>20}"
        for name in names[1:]:
            head += f" {name:>20} {'x direct':>8} {'CPU/req':>8}"
        print(head)
        print(
            f"  {'':<17} {'req/s  p50/p99 ms':>20}"
            + f" {'req/s  p50/p99 ms':>20} {'':>8} {'ms':>8}" * (len(names) - 1)
        )
        for scenario, row in summary.items():
            if scenario in ("ttfb", "gaps"):
                continue
            line = f"  {scenario:<17}"
            for name in names:
                cell = row[name]
                line += f" {cell['rps']:7.0f} {cell['p50_ms']:5.2f}/{cell['p99_ms']:<6.1f}"
                if name != "direct":
                    line += (
                        f" {cell['x_direct']:8.3f} {fmt(cell.get('cpu_ms_per_request'), '8.3f')}"
                    )
            print(line)
        full, paced = summary["stream c=16"], summary["paced stream c=4"]
        per_event = [
            f"{name}: {fmt(full[name].get('cpu_us_per_event'), '.1f')} full speed,"
            f" {fmt(paced[name].get('cpu_us_per_event'), '.1f')} paced"
            for name in names[1:]
        ]
        upstream = (
            f"{full['direct']['upstream_cpu_us_per_event']:.1f} / "
            f"{paced['direct']['upstream_cpu_us_per_event']:.1f}"
        )
        print(
            "\n  CPU per SSE event (us):   "
            + "   ".join(per_event)
            + f"   (the upstream itself: {upstream})"
        )
        ttfb = summary["ttfb"]
        cells = []
        for name in names:
            cell = ttfb[name]
            text = f"{name}: TTFB {cell['ttfb_ms']:.2f} ms"
            if name == "direct":
                text += f", stream {cell['stream_ms']:.2f} ms"
            else:
                text += (
                    f" ({cell['added_ttfb_ms']:+.2f}), {cell['added_us_per_chunk']:+.1f} us/chunk"
                )
            cells.append(text)
        print("  100-chunk stream, c=1:    " + "   ".join(cells))
        rss = {key: kib * 1024 / MB for key, kib in proxy["rss_kib"].items()}
        print(
            f"  swapd RSS MB: fresh {rss['fresh']:.1f}, idle {rss['idle']:.1f},"
            f" peak at c=64 {rss['peak_c64']:.1f}, after {rss['after']:.1f}"
        )
        print_floor(summary)
        print_table_25(summary)
    cold = results.get("cold")
    if cold:
        print(
            f"\ncold swap (ready 0.5 s after launch), {len(cold['runs'])} runs: overhead median"
            f" {cold['overhead_ms_median']:.1f} ms, max {cold['overhead_ms_max']:.1f} ms"
            f" (request -> launch {cold['to_launch_ms_median']:.1f} ms,"
            f" ready -> first byte {cold['ready_to_first_byte_ms_median']:.1f} ms; launch times"
            " have 10 ms steps)"
        )
    burst_result = results.get("burst")
    if burst_result:
        print(
            "burst, 24 requests over 2 swapping models: "
            + ", ".join(
                f"{r['wall_s']:.2f} s / {r['launches']} launches / {r['ok']} ok"
                for r in burst_result["runs"]
            )
        )
    scale_result = results.get("scale")
    if scale_result:
        sc = scale_result
        print(
            f"scale, {sc['models']} models: parse_config {sc['parse_config_cpu_s']:.2f} s CPU,"
            f" {sc['parse_config_s']:.2f} s wall (YAML {sc['yaml_parse_cpu_s']:.2f} s CPU),"
            f" start-up +{sc['startup_extra_s']:.2f} s"
            f" over 1 model, /v1/models {sc['v1_models_ms']:.1f} ms"
            f" ({sc['v1_models_bytes'] / 1000:.0f} kB), RSS {sc['rss_kib'] * 1024 / MB:.1f} MB"
        )
    targets_25 = evaluate_25(results)
    if targets_25:
        print("\nissue #25 targets:")
        for row in targets_25:
            mark = {True: "met   ", False: "MISSED", None: "  -   "}[row["met"]]
            print(f"  {mark} {row['target']:<38} {row['goal']:<30} {row['measured']}")
    if targets:
        print("\nissue #8 targets:")
        for row in targets:
            mark = {True: "met   ", False: "MISSED", None: "  -   "}[row["met"]]
            print(f"  {mark} {row['target']:<38} {row['goal']:<26} {row['measured']}")
    for note in notes:
        print(f"note: {note}")


def print_floor(summary: dict[str, Any]) -> None:
    """The stack floor next to swapd: CPU per request (and per event), same runs."""
    names = [n for n in FLOOR_SCENARIOS if n in summary.get("small c=1", {})]
    if not names:
        return
    print("\n  stack floor, same runs (CPU ms per request; p50 ms):")
    for scenario in ("small c=1", "small c=16"):
        row = summary[scenario]
        cells = [
            f"{name} {row[name]['cpu_ms_per_request']:.2f} ({row[name]['p50_ms']:.2f})"
            for name in [*names, "swapd"]
            if name in row
        ]
        print(f"    {scenario:<11} " + "   ".join(cells))
    stream = summary.get("stream c=16", {})
    if "hypercorn + relay" in stream:
        relay = stream["hypercorn + relay"]["cpu_us_per_event"]
        print(
            f"    stream c=16 CPU us per event: hypercorn + relay {relay:.1f},"
            f" swapd {stream['swapd']['cpu_us_per_event']:.1f}"
        )


def tool_notes() -> list[str]:
    notes = []
    if WRK is None:
        notes.append(
            "wrk not found: load from the trio client in this process instead (slower; "
            f"direct rates are the client's). Install: {APT_LINE}"
        )
    if NGINX is None:
        notes.append(f"nginx not found: the nginx column is skipped. Install: {APT_LINE}")
    return notes


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind, so every child process group is stopped


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    notes = tool_notes()
    for note in notes:
        print(f"note: {note}")
    info = machine_info()
    info["nginx"] = NGINX
    info["wrk"] = WRK
    results: dict[str, Any] = {}
    scenarios = (
        ("proxy", proxy_scenarios),
        ("cold", cold_swap),
        ("burst", burst),
        ("scale", scale),
    )
    with scratch_folder() as tmp:
        folder = Path(tmp)
        for name, fn in scenarios:
            if name in settings.only:
                print(f"\n== {name}")
                results[name] = fn(settings, folder)
    targets = evaluate(results)
    print_report(results, targets, notes)
    write_results(
        settings.out,
        {
            "benchmark": "bench",
            "machine": info,
            "settings": {
                "quick": settings.quick,
                "reps": settings.reps,
                "duration_s": settings.duration,
                "warmup_s": settings.warmup,
                "pinned": settings.pin,
                "swapd_path": str(settings.swapd_path) if settings.swapd_path else None,
            },
            "notes": notes,
            "results": results,
            "targets": targets,
            "targets_25": evaluate_25(results),
            "wall_s": time.monotonic() - started,
        },
    )
    print(f"\nwrote {settings.out} ({time.monotonic() - started:.0f} s)")
    errors = sum(
        r["errors"]
        for per_target in results.get("proxy", {}).get("runs", {}).values()
        for rs in per_target.values()
        for r in rs
    )
    if errors:
        print(f"FAILED: {errors} requests failed during the load runs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
