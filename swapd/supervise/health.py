"""Health probing: poll a model's check endpoint until it answers 200.

Polls every 10 ms at first and backs off to 50 ms, so a server that becomes healthy is
used within about 50 ms, not on llama-swap's 5-second tick. A loopback probe costs
well under a millisecond; a 250 ms cap measured ~125 ms of added cold-start latency on
average (benchmarks/swap_latency.py), almost all of it waiting for the next probe.
The caller owns the deadline (``healthCheckTimeout``) and watches the process for an
early exit.

Fast polling makes a server that logs its requests print ~30 ``GET /health 503`` lines
in two seconds of loading; ``ProbeLog`` folds them (the first of each run is shown, the
rest counted in one line) so the model's log stays readable.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import httpx
import trio

from swapd.config.model import ModelConfig

__all__ = [
    "FIRST_INTERVAL",
    "MAX_INTERVAL",
    "ProbeLog",
    "health_url",
    "wait_accepting",
    "wait_healthy",
]

FIRST_INTERVAL = 0.01
MAX_INTERVAL = 0.05
_PROBE_TIMEOUT = httpx.Timeout(5.0, connect=0.5)


def health_url(spec: ModelConfig) -> str | None:
    """``proxy`` + ``checkEndpoint`` (path appended), or None when checks are disabled."""
    if spec.health_check_disabled:
        return None
    return spec.proxy.rstrip("/") + spec.check_endpoint.strip()


async def wait_healthy(client: httpx.AsyncClient, url: str) -> None:
    """Return when ``GET url`` answers exactly 200. Never returns otherwise."""

    async def answers_200() -> bool:
        try:
            response = await client.get(url, timeout=_PROBE_TIMEOUT)
        except httpx.HTTPError:
            return False  # not listening yet, or answering garbage: keep polling
        return response.status_code == 200

    await _poll(answers_200)


async def wait_accepting(url: str) -> None:
    """Return once a new TCP connection to ``url``'s host and port succeeds; poll until then.

    A new connection on purpose: the health client's pooled keep-alive connection may
    still be served by a server that has closed its listening socket."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return  # no address to try: nothing to judge the server by

    async def accepts() -> bool:
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        await trio.aclose_forcefully(stream)
        return True

    await _poll(accepts)


async def _poll(succeeds: Callable[[], Awaitable[bool]]) -> None:
    """Call ``succeeds`` until it says yes, FIRST_INTERVAL apart at first, then further
    apart up to MAX_INTERVAL."""
    interval = FIRST_INTERVAL
    while not await succeeds():
        await trio.sleep(interval)
        interval = min(interval * 1.5, MAX_INTERVAL)


_STATUS = re.compile(r"\b([1-5]\d\d)\b")


class ProbeLog:
    """Passes a model's output lines on to ``emit``, folding the ones that log swapd's own
    health probes while ``probing()`` is active.

    A probe line is one with ``GET <check path>`` in it (the demo upstream's ``GET /health
    503``, uvicorn's ``"GET /health HTTP/1.1" 503``). Of a run of probe lines with the same
    status, the first is passed on and the rest are counted; one line saying how many
    follows when the run ends: at another line, another status, or the end of probing.
    Everything else passes untouched and in order."""

    def __init__(self, spec: ModelConfig, emit: Callable[[str, str], None]) -> None:
        url = health_url(spec)
        path = urllib.parse.urlsplit(url).path if url else ""
        self._probe = re.compile(rf"\bGET\s+{re.escape(path)}(?=[\s?\"]|$)") if path else None
        self._path = path
        self._emit = emit
        self._probing = False
        self._run: tuple[str, str | None] | None = None  # (stream, status) being folded
        self._folded = 0

    @contextmanager
    def probing(self) -> Iterator[None]:
        """Fold probe lines while the block runs (the health wait)."""
        self._probing = True
        try:
            yield
        finally:
            self._probing = False
            self._end_run()

    def line(self, stream: str, line: str) -> None:
        match = self._probe.search(line) if self._probing and self._probe else None
        if match is None:
            self._end_run()
        else:
            status = _STATUS.search(line, match.end())
            run = (stream, status[1] if status else None)
            if run == self._run:
                self._folded += 1
                return
            self._end_run()
            self._run = run
        self._emit(stream, line)

    def _end_run(self) -> None:
        if self._run is not None and self._folded:
            stream, status = self._run
            answered = f" answered {status}" if status else ""
            self._emit(
                stream,
                f"… {self._folded} more health checks (GET {self._path}){answered}"
                " (swapd folded these lines)",
            )
        self._run = None
        self._folded = 0
