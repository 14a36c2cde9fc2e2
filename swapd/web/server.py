"""Serve the app with hypercorn's trio worker, in this process and this trio run.

One worker only: model processes live in this process's memory, and a second worker
would start models of its own. The hypercorn ``Config`` is built here from swapd's own
settings; users never see hypercorn's keys.
"""

from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Quart

__all__ = ["serve"]


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(host: str, port: int, *, graceful_timeout: float) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [_bind(host, port)]
    config.accesslog = None  # an access log costs ~8% per request; swapd logs its own events
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = 75
    config.include_server_header = False
    config.h11_max_incomplete_size = 64 * 1024  # request line + headers; more is refused
    return config


async def serve(
    app: Quart,
    host: str,
    port: int,
    shutdown: trio.Event,
    *,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set, then drain for up to ``graceful_timeout`` seconds.

    ``task_status.started`` receives the bound URLs (``http://127.0.0.1:41234``) once the
    socket listens, so port 0 works.
    """
    config = hypercorn_config(host, port, graceful_timeout=graceful_timeout)
    await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)
