"""trio-websocket's client, on a TCP connection the test owns and always closes.

trio-websocket 0.12 closes its TCP connection only when the client ends the WebSocket.
When the server ends it first (a slow subscriber dropped, a revoked key, swapd stopping)
or refuses the handshake, the socket is left to the garbage collector, and its
ResourceWarning fails whichever test happens to be running then (under CPU load, once, a
config-parsing test). ``open_ws`` opens the connection itself, hands it to trio-websocket
(``wrap_client_stream``, public API) and closes it when the block ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import DisconnectionTimeout, WebSocketConnection, wrap_client_stream

__all__ = ["open_ws"]


@asynccontextmanager
async def open_ws(
    url: str, *, disconnect_timeout: float = 60, **options: Any
) -> AsyncIterator[WebSocketConnection]:
    """Like ``trio_websocket.open_websocket_url(url, **options)`` for ``ws://`` URLs:
    the same errors (unwrapped, not in exception groups), the same close handshake
    bounded by ``disconnect_timeout``; and the socket is closed whatever happened."""
    parts = urlsplit(url)
    assert parts.scheme == "ws" and parts.hostname and parts.port, url
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    try:
        with _unwrapped():
            async with trio.open_nursery() as nursery:  # trio-websocket's reader task
                host = f"{parts.hostname}:{parts.port}"
                ws = await wrap_client_stream(nursery, stream, host, resource, **options)
                try:
                    yield ws
                except BaseException:
                    nursery.cancel_scope.cancel()
                    raise
                with trio.move_on_after(disconnect_timeout) as waited:
                    await ws.aclose()
                nursery.cancel_scope.cancel()
                if waited.cancelled_caught:
                    raise DisconnectionTimeout
    finally:
        await trio.aclose_forcefully(stream)


@contextmanager
def _unwrapped() -> Iterator[None]:
    """A group of one error (a nursery wraps even one) raised as that error."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from leaves[0].__cause__
        raise


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
