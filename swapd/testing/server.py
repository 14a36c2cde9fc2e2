"""Run a real swapd in a test: ``open_swapd(config)`` on a free loopback port.

::

    async with open_swapd(CONFIG) as swapd:
        async with httpx.AsyncClient(base_url=swapd.url) as client:
            reply = await client.post("/v1/chat/completions", json={...})

``upstream_cmd(...)`` builds a model ``cmd`` that runs swapd's demo upstream with this
Python, so a test config needs nothing installed on PATH.
"""

from __future__ import annotations

import shlex
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


@asynccontextmanager
async def open_swapd(config: str | Config, *, stop_grace: float = 2.0) -> AsyncIterator[Daemon]:
    """Serve ``config`` on 127.0.0.1 (free port) until the block ends; then stop it all."""
    if isinstance(config, str):
        config = parse_config(config, file="<test>")
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(
            partial(serve, config, host="127.0.0.1", port=0, stop_grace=stop_grace)
        )
        try:
            yield daemon
        finally:
            daemon.stop()
