"""Load generators for the benchmarks: wrk when installed, else a trio client; a raw client.

* :func:`run_wrk` drives `wrk <https://github.com/wg/wrk>`_ 4.1 (Debian package ``wrk``):
  C, event-driven, keep-alive, one thread. A Lua script sets the method, headers and body
  and prints a JSON summary (requests, errors, latency percentiles from wrk's histogram).
  wrk's latency is the time to the *complete* response.
* :func:`run_trio` is the fallback when wrk is missing: N trio tasks in this process, each
  with one keep-alive socket, sending back to back and parsing the answers with
  :class:`ResponseReader`. It needs ~100-200 µs of CPU per small request itself, so "direct"
  rates are capped by the client, which the printed method says.
* :class:`RawClient` sends one request at a time on a blocking keep-alive socket and times
  the first body byte (TTFB) and the end of the body with ``perf_counter``: used for
  time-to-first-byte, per-chunk and cold-start measurements, where one request is timed at
  a time and the client must add as little as possible.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

WRK = shutil.which("wrk")
MS = 1000.0


@dataclass(frozen=True)
class Job:
    """One request, sent again and again."""

    host: str
    port: int
    path: str
    body: bytes
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=lambda: {"content-type": "application/json"})

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def request_bytes(self) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        lines.append(f"content-length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class LoadStats:
    """One load run: counts, rate, latency percentiles (ms)."""

    tool: str
    connections: int
    duration_s: float
    requests: int
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_error: str | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


# --------------------------------------------------------------------------- wrk

_WRK_LUA = """
wrk.method = {method}
wrk.body = {body}
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for our ASCII bodies


def wrk_script(job: Job, folder: Path) -> Path:
    headers = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in job.headers.items()
    )
    text = _WRK_LUA.format(
        method=_lua_string(job.method), body=_lua_string(job.body.decode()), headers=headers
    )
    path = folder / f"job-{abs(hash((job.method, job.body, tuple(job.headers.items()))))}.lua"
    path.write_text(text, encoding="utf-8")
    return path


def run_wrk(
    job: Job, *, connections: int, duration: float, folder: Path, cpus: str | None = None
) -> LoadStats:
    """One wrk run (1 thread, keep-alive) of ``duration`` seconds."""
    assert WRK is not None
    script = wrk_script(job, folder)
    argv = [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s"]
    argv += ["-s", str(script), job.url]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {done.stdout[-500:]} {done.stderr[-500:]}")
    data = json.loads(line[len("WRKJSON ") :])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return LoadStats(
        tool="wrk",
        connections=connections,
        duration_s=data["duration_us"] / 1e6,
        requests=data["requests"],
        errors=errors,
        p50_ms=data["p50"] / MS,
        p90_ms=data["p90"] / MS,
        p99_ms=data["p99"] / MS,
        max_ms=data["max"] / MS,
        first_error=None if not errors else json.dumps(data),
    )


# --------------------------------------------------------------------------- response parsing


class ResponseReader:
    """Incremental HTTP/1.1 response parser: feed bytes until :attr:`complete`.

    Handles Content-Length and chunked bodies (what the benchmark targets send).
    ``body_started`` turns true with the first body byte."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.status = 0
        self.head_done = False
        self.body_started = False
        self.complete = False
        self.body_bytes = 0
        self._length: int | None = None
        self._chunked = False
        self._pos = 0  # chunked: offset of the next chunk-size line in buffer

    def feed(self, data: bytes) -> bytes:
        """Take bytes; returns what is left over after a complete response (pipelining)."""
        self.buffer += data
        if not self.head_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return b""
            head = bytes(self.buffer[:end]).split(b"\r\n")
            self.status = int(head[0].split(b" ", 2)[1])
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self._length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self._chunked = True
            del self.buffer[: end + 4]
            self.head_done = True
            if not self._chunked and self._length is None:
                self._length = 0
        if self.buffer:
            self.body_started = True
        if self._chunked:
            return self._chunked_feed()
        assert self._length is not None
        if len(self.buffer) >= self._length:
            rest = bytes(self.buffer[self._length :])
            self.body_bytes = self._length
            self.complete = True
            self.body_started = True
            return rest
        return b""

    def _chunked_feed(self) -> bytes:
        buf = self.buffer
        while True:
            line_end = buf.find(b"\r\n", self._pos)
            if line_end < 0:
                return b""
            size = int(bytes(buf[self._pos : line_end]).split(b";", 1)[0] or b"0", 16)
            if size == 0:
                if len(buf) < line_end + 4:
                    return b""
                self.complete = True
                return bytes(buf[line_end + 4 :])
            end = line_end + 2 + size + 2
            if len(buf) < end:
                return b""
            self.body_bytes += size
            self._pos = end


# --------------------------------------------------------------------------- trio fallback


async def _trio_worker(
    job: Job, deadline: float, latencies: list[float], failures: list[str]
) -> None:
    request = job.request_bytes()
    stream = await trio.open_tcp_stream(job.host, job.port)
    async with stream:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            reader = ResponseReader()
            await stream.send_all(request)
            while not reader.complete:
                data = await stream.receive_some(65536)
                if not data:
                    failures.append("connection closed")
                    return
                reader.feed(data)
            if reader.status != 200:
                failures.append(f"HTTP {reader.status}")
                continue
            latencies.append(time.perf_counter() - started)


def run_trio(job: Job, *, connections: int, duration: float) -> LoadStats:
    """The fallback load generator: ``connections`` trio tasks in this process."""
    latencies: list[float] = []
    failures: list[str] = []

    async def main() -> float:
        started = time.perf_counter()
        with trio.move_on_after(duration + 30):
            async with trio.open_nursery() as nursery:
                for _ in range(connections):
                    nursery.start_soon(_trio_worker, job, started + duration, latencies, failures)
        return time.perf_counter() - started

    elapsed = trio.run(main)
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * MS

    return LoadStats(
        tool="trio",
        connections=connections,
        duration_s=elapsed,
        requests=len(latencies),
        errors=len(failures),
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        max_ms=pct(100),
        first_error=failures[0] if failures else None,
    )


def run_load(
    job: Job, *, connections: int, duration: float, folder: Path, cpus: str | None = None
) -> LoadStats:
    """wrk if installed, else the trio client."""
    if WRK is not None:
        return run_wrk(job, connections=connections, duration=duration, folder=folder, cpus=cpus)
    return run_trio(job, connections=connections, duration=duration)


# --------------------------------------------------------------------------- raw client


@dataclass
class Timed:
    status: int
    ttfb_s: float  # first body byte
    total_s: float  # end of the body
    body_bytes: int
    body: bytes = b""


class RawClient:
    """One blocking keep-alive connection; one request at a time, timed."""

    def __init__(self, host: str, port: int, *, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        job: Job,
        *,
        keep_body: bool = False,
        clock: Callable[[], float] = time.perf_counter,
        arrivals: list[tuple[float, bytes]] | None = None,
    ) -> Timed:
        """Send ``job`` once; times are measured with ``clock`` from just before sending.
        ``arrivals`` receives (time, bytes) for every read."""
        sock = self._connect()
        reader = ResponseReader()
        data = job.request_bytes()
        started = clock()
        first: float | None = None
        sock.sendall(data)
        kept = bytearray()
        while not reader.complete:
            chunk = sock.recv(65536)
            if not chunk:
                self.close()
                raise ConnectionError("connection closed mid-response")
            if arrivals is not None:
                arrivals.append((clock(), chunk))
            if keep_body:
                kept += chunk
            reader.feed(chunk)
            if first is None and reader.body_started:
                first = clock()
        done = clock()
        return Timed(
            reader.status,
            (first or done) - started,
            done - started,
            reader.body_bytes,
            bytes(kept),
        )


def get(host: str, port: int, path: str, *, timeout: float = 30.0) -> Timed:
    """One GET on a fresh connection (body kept)."""
    with RawClient(host, port, timeout=timeout) as client:
        return client.request(Job(host, port, path, b"", method="GET", headers={}), keep_body=True)


def scratch_folder() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="swapd-bench-")
