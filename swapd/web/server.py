"""Serve the app with hypercorn's trio worker, in this process and this trio run.

One worker only: model processes live in this process's memory, and a second worker
would start models of its own. The hypercorn ``Config`` is built here from swapd's own
settings; users never see hypercorn's keys.

Listeners are hypercorn bind strings, made by :func:`tcp_bind` or given as they are:
``127.0.0.1:8080``, ``[::1]:8080``, ``unix:/run/user/1000/swapd.sock`` (a stale socket
file there is replaced; the file is removed again at exit) and ``fd://3`` (an inherited,
already bound socket: systemd socket activation). With :class:`TLSFiles` every listener
serves HTTPS (HTTP/1.1 and HTTP/2 by ALPN).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Sequence

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Quart

from swapd.web import ws_stream

__all__ = ["WEBSOCKET_MAX_MESSAGE", "TLSFiles", "hypercorn_config", "serve", "tcp_bind"]

# swapd's only WebSocket (the event feed) takes nothing from the client; hypercorn's
# default (16 MiB, assembled in memory before the app sees it) let a client park
# hundreds of MB per connection. A larger message closes the connection (1009).
WEBSOCKET_MAX_MESSAGE = 64 * 1024


@attrs.frozen
class TLSFiles:
    """A PEM certificate chain and its private key (llama-swap's ``-tls-cert-file`` and
    ``-tls-key-file``)."""

    certfile: str
    keyfile: str


def tcp_bind(host: str, port: int) -> str:
    """The bind string for ``host:port`` (IPv6 hosts in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def hypercorn_config(
    binds: Sequence[str], *, graceful_timeout: float, tls: TLSFiles | None = None
) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = list(binds)
    config.accesslog = None  # an access log costs ~8% per request; swapd logs its own events
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = graceful_timeout
    config.keep_alive_timeout = 75
    config.include_server_header = False
    config.h11_max_incomplete_size = 64 * 1024  # request line + headers; more is refused
    config.websocket_max_message_size = WEBSOCKET_MAX_MESSAGE
    if tls is not None:
        config.certfile, config.keyfile = tls.certfile, tls.keyfile
    return config


async def serve(
    app: Quart,
    binds: Sequence[str],
    shutdown: trio.Event,
    *,
    tls: TLSFiles | None = None,
    graceful_timeout: float = 5.0,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on ``binds`` until ``shutdown`` is set, then drain for up to
    ``graceful_timeout`` seconds.

    ``task_status.started`` receives the bound URLs (``http://127.0.0.1:41234``,
    ``https://…``, ``http://unix:/path``) once every socket listens, so port 0 works.
    Binding errors (``OSError``, and ``ssl.SSLError`` for unusable TLS files) propagate
    before ``started``.
    """
    config = hypercorn_config(binds, graceful_timeout=graceful_timeout, tls=tls)
    ws_stream.install()  # hypercorn WebSocket defects: see ws_stream.py
    paths = [bind.removeprefix("unix:") for bind in binds if bind.startswith("unix:")]
    for path in paths:
        _refuse_live_socket(path)
    try:
        await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)
    finally:
        for path in paths:
            _remove_socket_file(path)


def _refuse_live_socket(path: str) -> None:
    """hypercorn replaces any socket file at ``path``: refuse if a server still answers there
    (another swapd), rather than silently taking its address."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)  # a full accept queue blocks a unix connect
        try:
            probe.connect(path)
        except TimeoutError:
            pass  # alive, with a full accept queue
        except OSError:
            return  # no file, or a stale one: hypercorn replaces it
    raise OSError(errno.EADDRINUSE, f"a server is already listening on {path}")


def _remove_socket_file(path: str) -> None:
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
