"""hypercorn's WebSocket stream with two defects of hypercorn 0.18 fixed.

1. A refused handshake (401 without a key, 403 from a foreign Origin) could take the
   whole server down. hypercorn sends the refusal and keeps the stream until the app
   has returned; client bytes arriving in that window (a second request on the same
   keep-alive connection: two requests from any unauthenticated client did it,
   measured) reach ``WSStream.handle``, which answers them with a 400 although a
   response was already sent; h11 refuses that with ``LocalProtocolError``, which
   escapes the connection and ends hypercorn's server nursery: all of swapd stops.
   Such bytes are now dropped, as hypercorn already drops bytes arriving a moment later
   (once the stream is gone), and every refusal says ``Connection: close``: hypercorn
   never reuses such a connection, so clients must not either.
2. A message over ``websocket_max_message_size`` gets a 1009 close, but hypercorn's
   buffer keeps appending what follows (it writes before it checks, and is never
   cleared): a client that ignores the close and keeps sending grows swapd without
   bound. And after the close it stops at the first data event of each read, so a
   client's close reply that arrives behind data of its message is never seen: the
   connection stays open. Once a message is too large, nothing more of any message is
   kept, and the events after it are still handled.

``install()`` makes hypercorn's HTTP/1.1 and HTTP/2 protocols create ``GuardedWSStream``.
"""

from __future__ import annotations

from typing import Any

from hypercorn.protocol import h2, h11
from hypercorn.protocol.events import Body, Data, Event, StreamClosed
from hypercorn.protocol.ws_stream import (
    ASGIWebsocketState,
    FrameTooLargeError,
    WebsocketBuffer,
    WSStream,
)
from hypercorn.typing import WebsocketResponseBodyEvent
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

__all__ = ["GuardedWSStream", "install"]

_ANSWERED = frozenset({ASGIWebsocketState.RESPONSE, ASGIWebsocketState.HTTPCLOSED})


class _CheckingBuffer(WebsocketBuffer):
    """Checks the size before it keeps anything."""

    def extend(self, event: Message[Any]) -> None:
        if self.length + len(event.data) > self.max_length:
            self.clear()
            raise FrameTooLargeError()
        super().extend(event)


class GuardedWSStream(WSStream):
    """``WSStream`` without the two defects in the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer = _CheckingBuffer(self.config.websocket_max_message_size)
        self.too_big = False  # a message was too large: closing with 1009, keep nothing

    async def handle(self, event: Event) -> None:
        if isinstance(event, Body | Data) and self.state in _ANSWERED:
            return  # refused: the app's return then ends the stream as usual
        await super().handle(event)

    async def _handle_events(self) -> None:
        for event in self.connection.events():
            if isinstance(event, Message):
                if self.too_big:
                    continue
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    self.too_big = True
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    continue
                if event.message_finished:
                    assert self.app_put is not None  # set before the handshake was accepted
                    await self.app_put(self.buffer.to_message())
                    self.buffer.clear()
            elif isinstance(event, Ping):
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    async def _send_rejection(self, message: WebsocketResponseBodyEvent) -> None:
        if self.state == ASGIWebsocketState.HANDSHAKE:
            headers = [
                (name, value)
                for name, value in self.response.get("headers", ())
                if name.lower() != b"connection"
            ]
            self.response = {**self.response, "headers": [*headers, (b"connection", b"close")]}
        await super()._send_rejection(message)


def install() -> None:
    """Make hypercorn's protocols create ``GuardedWSStream`` (idempotent). HTTP/3 needs
    aioquic, which swapd does not install."""
    for protocol in (h11, h2):
        protocol.WSStream = GuardedWSStream  # type: ignore[attr-defined]
