"""Health probing: poll a model's check endpoint until it answers 200.

Polls every 10 ms at first and backs off to 50 ms, so a server that becomes healthy is
used within about 50 ms, not on llama-swap's 5-second tick. A loopback probe costs
well under a millisecond; a 250 ms cap measured ~125 ms of added cold-start latency on
average (benchmarks/swap_latency.py), almost all of it waiting for the next probe.
The caller owns the deadline (``healthCheckTimeout``) and watches the process for an
early exit.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable

import httpx
import trio

from swapd.config.model import ModelConfig

__all__ = ["FIRST_INTERVAL", "MAX_INTERVAL", "health_url", "wait_accepting", "wait_healthy"]

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
