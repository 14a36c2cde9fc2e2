"""Shared benchmark helpers: child processes, /proc readings, a load generator, results.

Method (used by every script in this folder):

* **Processes.** swapd runs as a separate process (``python -m swapd --config <tmp>
  --listen 127.0.0.1:<free port>``) so that its own CPU time and memory can be read from
  ``/proc/<pid>/stat`` (utime + stime, divided by ``SC_CLK_TCK``) and ``/proc/<pid>/status``
  (``VmRSS`` now, ``VmHWM`` peak). The demo upstream (``swapd.testing.upstream``) is started
  either by swapd as a model's ``cmd`` or directly by ``start_upstream``. Every child runs
  in its own session (process group), writes to a log file in the run's temporary folder,
  and is killed with its group when the block that started it ends, whatever happened.
* **Load generator.** trio + httpx in this process: ``workers`` concurrent tasks, each with
  its own ``httpx.AsyncClient`` holding one keep-alive connection (so httpcore's per-request
  pool scan stays O(1) on the client side), sending the same request back to back until a
  duration or a request budget runs out. Each request is timed with ``perf_counter``:
  first body byte (TTFB) and complete response. A warm-up run on the same clients opens the
  connections first, so connection setup is not measured.
* **Loopback only**, every wait bounded by a timeout, every loop bounded in count and time.

The load generator is Python too, so it needs CPU of its own (about 1 ms per small request,
3-4 ms per 100-event stream, on the 2-core machine these numbers came from):
"direct" numbers are the upstream *plus this client*, not the upstream's ceiling. Ratios are
therefore "how much of what this client gets directly it still gets through swapd", and the
per-request CPU of swapd (from /proc) is the number that survives a noisy machine best.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
CHAT_PATH = "/v1/chat/completions"
START_TIMEOUT = 20.0  # seconds for a child to print its listening line / answer /health
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
POLL = 0.01  # seconds between two looks at a log file or an HTTP status
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


# --------------------------------------------------------------------------- ports, files


def free_port() -> int:
    """A loopback port that was free a moment ago (bind to 0, read, close)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def write_results(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, load average, Python and library versions, kernel."""
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "httpx": httpx.__version__,
        "trio": trio.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": source_state(),
    }


def source_state() -> dict[str, Any]:
    """The swapd checkout measured: HEAD commit and files changed since (read-only git)."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.rstrip("\n") if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"head": git("rev-parse", "--short", "HEAD"), "changed": changed}


# --------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/<pid>/stat (index 0 is field 3, the state)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` (field 22, clock ticks since boot); None if it is gone."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def memory_kib(pid: int, key: str = "VmRSS") -> int:
    """A ``/proc/<pid>/status`` memory line in KiB (``VmRSS`` now, ``VmHWM`` peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def own_cpu_seconds() -> float:
    """CPU time of this process (the load generator), all threads."""
    return time.process_time()


# --------------------------------------------------------------------------- children


@dataclass
class Child:
    """A child process in its own session, its output going to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def describe_failure(self) -> str:
        tail = "\n".join(self.log_text().splitlines()[-20:])
        return f"{self.name} (pid {self.pid}, exit {self.popen.poll()}); log tail:\n{tail}"


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_child(child: Child, grace: float = STOP_GRACE) -> None:
    """SIGTERM the child's group, wait up to ``grace`` s, then SIGKILL the group."""
    _signal_group(child.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.popen.wait(timeout=grace)
    _signal_group(child.pid, signal.SIGKILL)  # stragglers in the group, or the leader itself
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.popen.wait(timeout=grace)


@contextlib.contextmanager
def child_process(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Iterator[Child]:
    """Start ``argv`` in a new session; stop its process group when the block ends."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    child = Child(name, popen, log)
    try:
        yield child
    finally:
        stop_child(child)


async def wait_for_line(child: Child, pattern: str) -> re.Match[str]:
    """Poll the child's log every 10 ms, for at most START_TIMEOUT s, for regex ``pattern``."""
    regex = re.compile(pattern)
    for _ in range(polls(START_TIMEOUT, POLL)):
        match = regex.search(child.log_text())
        if match:
            return match
        if not child.alive():
            raise RuntimeError(f"exited before printing {pattern!r}: {child.describe_failure()}")
        await trio.sleep(POLL)
    raise TimeoutError(f"no {pattern!r} within {START_TIMEOUT} s: {child.describe_failure()}")


def polls(limit: float, interval: float) -> int:
    """How many ``interval`` sleeps fit in ``limit`` seconds (a loop's count bound)."""
    return max(1, math.ceil(limit / interval))


# --------------------------------------------------------------------------- demo upstream


def upstream_argv(*flags: str, port: int | str = 0) -> list[str]:
    """argv running swapd's demo upstream with this Python (``--silent`` always)."""
    return [sys.executable, "-m", "swapd.testing.upstream", "--port", str(port), "--silent", *flags]


@dataclass
class Upstream:
    url: str
    child: Child


@contextlib.asynccontextmanager
async def start_upstream(workdir: Path, *flags: str) -> AsyncIterator[Upstream]:
    """Run the demo upstream on a free port; yield once it printed ``listening on``."""
    with child_process("demo upstream", upstream_argv(*flags), workdir / "upstream.log") as child:
        match = await wait_for_line(child, r"listening on (http://\S+)")
        yield Upstream(match.group(1), child)


# --------------------------------------------------------------------------- swapd


@dataclass
class Swapd:
    """A swapd process and what the benchmark saw of it."""

    url: str
    child: Child
    models_seen: dict[int, int] = field(default_factory=dict)  # model pid -> its start time

    @property
    def pid(self) -> int:
        return self.child.pid

    async def running(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """``GET /running``; remembers model pids so they can be killed if swapd leaves them."""
        reply = await client.get(self.url + "/running")
        reply.raise_for_status()
        entries: list[dict[str, Any]] = reply.json()["running"]
        for entry in entries:
            pid = entry.get("pid")
            if isinstance(pid, int) and pid not in self.models_seen:
                started = start_ticks(pid)
                if started is not None:
                    self.models_seen[pid] = started
        return entries

    async def load(self, client: httpx.AsyncClient, model: str) -> dict[str, Any]:
        """``POST /api/models/load/<model>`` (answers once ready); returns its /running entry."""
        reply = await client.post(f"{self.url}/api/models/load/{model}", timeout=START_TIMEOUT)
        reply.raise_for_status()
        for entry in await self.running(client):
            if entry["model"] == model:
                return entry
        raise RuntimeError(f"{model} loaded but not in /running")

    async def unload_all(self, client: httpx.AsyncClient) -> None:
        """``POST /api/models/unload``, then wait (at most STOP_GRACE s) until /running is
        empty."""
        reply = await client.post(self.url + "/api/models/unload", timeout=STOP_GRACE)
        reply.raise_for_status()
        for _ in range(polls(STOP_GRACE, POLL)):
            if not await self.running(client):
                return
            await trio.sleep(POLL)
        raise TimeoutError(f"models still running {STOP_GRACE} s after unload")


def swapd_config(models: Mapping[str, str], *, start_port: int) -> str:
    """Config text: ``models`` maps a model id to its ``cmd``; one port each from start_port.

    ``concurrencyLimit: 128`` so that swapd's per-model queue (default 10 in flight) does
    not throttle the concurrency levels measured here."""
    lines = [
        "healthCheckTimeout: 30",
        "logLevel: info",
        "logToStdout: proxy",
        f"startPort: {start_port}",
        "models:",
    ]
    for model_id, cmd in models.items():
        lines += [
            f"  {model_id}:",
            f"    cmd: {json.dumps(cmd)}",
            "    proxy: http://127.0.0.1:${PORT}",
            "    concurrencyLimit: 128",
        ]
    return "\n".join(lines) + "\n"


def _kill_leftover_models(seen: Mapping[int, int]) -> None:
    """SIGKILL the group of every model process still alive (same pid *and* start time,
    so a recycled pid is left alone); models run as group leaders (procgroup.py)."""
    for pid, started in seen.items():
        if start_ticks(pid) == started:
            _signal_group(pid, signal.SIGKILL)


@contextlib.asynccontextmanager
async def start_swapd(workdir: Path, config_text: str) -> AsyncIterator[Swapd]:
    """Run ``python -m swapd`` on a free loopback port until the block ends.

    Ready when ``GET /health`` answers 200 (polled every 10 ms, at most START_TIMEOUT s).
    On exit: SIGTERM (swapd stops its models), SIGKILL after STOP_GRACE, then SIGKILL any
    model process group it was seen running, in case it left one behind."""
    config_path = workdir / "swapd.yaml"
    config_path.write_text(config_text, encoding="utf-8")
    port = free_port()
    argv = [sys.executable, "-m", "swapd", "--config", str(config_path)]
    argv += ["--listen", f"{LOOPBACK}:{port}"]
    swapd: Swapd | None = None
    try:
        with child_process("swapd", argv, workdir / "swapd.log") as child:
            swapd = Swapd(f"http://{LOOPBACK}:{port}", child)
            await _wait_http_ok(swapd.url + "/health", child)
            yield swapd
    finally:
        if swapd is not None:
            _kill_leftover_models(swapd.models_seen)


async def _wait_http_ok(url: str, child: Child) -> None:
    """Poll ``GET url`` every 10 ms until 200, for at most START_TIMEOUT s."""
    async with httpx.AsyncClient(trust_env=False, timeout=1.0) as client:
        for _ in range(polls(START_TIMEOUT, POLL)):
            if not child.alive():
                raise RuntimeError(f"exited while starting: {child.describe_failure()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await trio.sleep(POLL)
    raise TimeoutError(f"{url} not 200 within {START_TIMEOUT} s: {child.describe_failure()}")


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """Median ignoring NaN; NaN if nothing is left."""
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# --------------------------------------------------------------------------- load generator


@dataclass(frozen=True)
class Job:
    """One request, sent again and again: POST ``body`` to ``url``."""

    url: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    """What one load run measured (seconds)."""

    workers: int
    elapsed: float = 0.0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    first_error: str | None = None

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return ratio(self.requests, self.elapsed)

    def summary(self) -> dict[str, Any]:
        """Counts, req/s, latency percentiles in milliseconds, the first error if any."""
        ms = 1000.0
        return {
            "workers": self.workers,
            "requests": self.requests,
            "errors": self.errors,
            "elapsed_s": self.elapsed,
            "rps": self.rps,
            "p50_ms": percentile(self.latencies, 50) * ms,
            "p99_ms": percentile(self.latencies, 99) * ms,
            "ttfb_p50_ms": percentile(self.ttfbs, 50) * ms,
            "ttfb_p99_ms": percentile(self.ttfbs, 99) * ms,
            "first_error": self.first_error,
        }


class _Budget:
    """A shared request budget and deadline: workers take one ticket per request."""

    def __init__(self, duration: float, max_requests: int) -> None:
        self.deadline = time.perf_counter() + duration
        self.left = max_requests

    def take(self) -> bool:
        if self.left <= 0 or time.perf_counter() >= self.deadline:
            return False
        self.left -= 1
        return True


async def _one_request(client: httpx.AsyncClient, job: Job, result: LoadResult) -> None:
    started = time.perf_counter()
    first: float | None = None
    failure: str | None = None
    try:
        async with client.stream("POST", job.url, content=job.body, headers=job.headers) as reply:
            async for chunk in reply.aiter_raw():
                if first is None:
                    first = time.perf_counter()
                    if reply.status_code != 200:
                        failure = f"HTTP {reply.status_code}: {chunk[:200]!r}"
            if reply.status_code != 200 and failure is None:
                failure = f"HTTP {reply.status_code} (no body)"
    except httpx.HTTPError as exc:
        failure = f"{type(exc).__name__}: {exc}"
    if failure is not None:
        result.errors += 1
        result.first_error = result.first_error or failure
        return
    done = time.perf_counter()
    result.latencies.append(done - started)
    result.ttfbs.append((first or done) - started)


async def _worker(client: httpx.AsyncClient, job: Job, budget: _Budget, result: LoadResult) -> None:
    while budget.take():
        await _one_request(client, job, result)


@contextlib.asynccontextmanager
async def open_clients(workers: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client per worker, each limited to one keep-alive connection (plain HTTP, but
    httpx builds a TLS context per client unless given one)."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # shared: each new context costs ~50 ms (CA bundle)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    limits=limits, timeout=REQUEST_TIMEOUT, trust_env=False, verify=tls
                )
            )
            for _ in range(workers)
        ]
        yield clients


async def run_load(
    clients: Sequence[httpx.AsyncClient],
    job: Job,
    *,
    duration: float,
    max_requests: int = 1_000_000,
) -> LoadResult:
    """One worker per client sends ``job`` back to back for ``duration`` s (or the budget).

    Requests in flight at the deadline finish and count; the whole run is cut off after
    ``duration`` + 30 s whatever happens."""
    result = LoadResult(workers=len(clients))
    budget = _Budget(duration, max_requests)
    started = time.perf_counter()
    with trio.move_on_after(duration + 30.0):
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(_worker, client, job, budget, result)
    result.elapsed = time.perf_counter() - started
    return result


@dataclass
class Measured:
    """A load run plus the CPU time every watched process spent during it."""

    load: LoadResult
    cpu_s: dict[str, float]

    def summary(self) -> dict[str, Any]:
        return {**self.load.summary(), "cpu_s": self.cpu_s}


async def measure(
    clients: Sequence[httpx.AsyncClient],
    job: Job,
    *,
    duration: float,
    watch: Mapping[str, int],
) -> Measured:
    """``run_load`` bracketed by CPU readings of ``watch`` (name → pid) and of this process
    (``client``)."""
    before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    client_before = own_cpu_seconds()
    load = await run_load(clients, job, duration=duration)
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in watch.items()}
    cpu["client"] = own_cpu_seconds() - client_before
    return Measured(load, cpu)


def chat_body(model: str, *, stream: bool, chunks: int | None = None) -> bytes:
    """A small chat request body (about 100 bytes), optionally with ``x_chunks``."""
    body: dict[str, Any] = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 16,
    }
    if chunks is not None:
        body["x_chunks"] = chunks
    return json.dumps(body, separators=(",", ":")).encode()


JSON_HEADERS = {"content-type": "application/json"}
