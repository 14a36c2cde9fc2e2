"""Run a real swapd in a test: ``open_swapd(config)`` on a free loopback port.

::

    async with open_swapd(CONFIG) as swapd:
        async with httpx.AsyncClient(base_url=swapd.url) as client:
            reply = await client.post("/v1/chat/completions", json={...})

``upstream_cmd(...)`` builds a model ``cmd`` that runs swapd's demo upstream with this
Python, so a test config needs nothing installed on PATH.
"""

from __future__ import annotations

import random
import shlex
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

from swapd.config import Config, parse_config
from swapd.daemon import Daemon, serve

__all__ = ["open_swapd", "upstream_cmd"]


def upstream_cmd(*flags: str, silent: bool = True) -> str:
    """A ``cmd`` running the demo upstream on ``${PORT}`` with extra ``flags``."""
    argv = [sys.executable, "-m", "swapd.testing.upstream", "--port", "${PORT}"]
    if silent:
        argv.append("--silent")
    return " ".join(
        [shlex.quote(a) if a != "${PORT}" else a for a in argv] + [shlex.quote(f) for f in flags]
    )


def free_port_base(count: int = 20) -> int:
    """A random port with ``count`` free ports from it, so parallel test runs don't collide
    on ``${PORT}`` numbers (a model would answer for another run's model).

    The range lies below the kernel's ephemeral ports: a port seen free here can still be
    taken before the server binds it, and outgoing connections (every test client makes
    them) draw from the ephemeral range, so a port from there was taken under load."""
    low, high = _outside_ephemeral_ports()
    rng = random.Random()  # noqa: S311 - spreading test ports, not cryptography
    for _ in range(50):
        base = rng.randrange(low, high - count)
        if all(_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free port range found")


def _outside_ephemeral_ports() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as file:
            first, last = (int(part) for part in file.read().split())
    except (OSError, ValueError):
        return 20000, 60000
    if first - 10000 >= 5000:
        return 10000, first
    if 65535 - last >= 5000:
        return last + 1, 65535
    return 20000, 60000  # the ephemeral range covers nearly everything: nothing better


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@asynccontextmanager
async def open_swapd(
    config: str | Config, *, stop_grace: float = 2.0, watch_config: bool = False
) -> AsyncIterator[Daemon]:
    """Serve ``config`` on 127.0.0.1 (free port) until the block ends; then stop it all.

    Config text without ``startPort`` gets a random free range, so tests in parallel
    processes never hand out the same model ports."""
    if isinstance(config, str):
        if "startPort" not in config:
            config = f"startPort: {free_port_base()}\n" + config
        config = parse_config(config, file="<test>")
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(
            partial(
                serve,
                config,
                host="127.0.0.1",
                port=0,
                stop_grace=stop_grace,
                watch_config=watch_config,
            )
        )
        try:
            yield daemon
        finally:
            daemon.stop()
