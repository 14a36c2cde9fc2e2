"""Flow control for request bodies that are streamed, not read whole.

quart-trio takes every body message from hypercorn as soon as it arrives and appends it to
the request's ``Body``, whether or not anything is reading it. A request whose upload is
forwarded as it arrives (multipart, ``/upstream/``) but that waits for its model first
would therefore hold the whole upload in memory while the model loads (up to the body
limit, 512 MiB by default). Here the receiver stops taking messages once
``HIGH_WATER`` bytes wait unread; hypercorn's queue to the app is small, so it stops
reading the socket and TCP pushes back on the client, as a Go or nginx server does. A
route that reads the whole body (``await request.get_data()``) lifts the limit: it needs
every byte before it can do anything.

While the receiver is paused, a client that goes away is noticed only when the body is
read on (the socket is not being read either); the request then ends as soon as its
forward reads the body.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import trio
from quart_trio.asgi import TrioASGIHTTPConnection
from quart_trio.wrappers.request import TrioBody, TrioRequest

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable
    from quart.wrappers import Request

__all__ = ["HIGH_WATER", "FlowBody", "FlowHTTPConnection", "FlowRequest"]

HIGH_WATER = 1024 * 1024


class FlowBody(TrioBody):
    """A body that lets its receiver wait while too much of it is unread."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._whole = False
        self._drained = trio.Event()
        self.abandoned = False

    def abandon(self) -> None:
        """The response is complete: nobody reads the rest of the body. The receiver takes
        and drops it from now on, so hypercorn can hand over the end of the request."""
        self.abandoned = True
        self._drained.set()

    async def room(self) -> None:
        """Return once the receiver may take another message."""
        while (
            not self._whole
            and not self.abandoned
            and self._must_raise is None
            and len(self._data) >= HIGH_WATER
        ):
            if self._drained.is_set():
                self._drained = trio.Event()
            await self._drained.wait()

    async def __anext__(self) -> bytes:
        data = await super().__anext__()
        self._drained.set()
        return data

    def __await__(self) -> Generator[Any, None, Any]:
        self._whole = True
        self._drained.set()
        return super().__await__()


class FlowRequest(TrioRequest):
    body_class = FlowBody


class FlowHTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's connection with a receiver that waits for room in the body.

    A response that ends while the receiver waits (a 400 for a form refused after its
    first megabyte) abandons the body: hypercorn delivers the end of the request
    (``http.disconnect``) behind the unread body messages, from inside the response's
    last send, and would wait for room forever (measured: the connection hung)."""

    async def handle_request(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, send: ASGISendCallable
    ) -> None:
        body = request.body

        async def send_and_abandon(message: Any) -> None:
            if (
                isinstance(body, FlowBody)
                and message["type"] == "http.response.body"
                and not message.get("more_body", False)
            ):
                body.abandon()
            await send(message)

        await super().handle_request(nursery, request, send_and_abandon)

    async def handle_messages(  # type: ignore[override]
        self, nursery: trio.Nursery, request: Request, receive: ASGIReceiveCallable
    ) -> None:
        body = request.body
        while True:
            if isinstance(body, FlowBody):
                await body.room()
            message = await receive()
            if message["type"] == "http.request":
                if isinstance(body, FlowBody) and body.abandoned:
                    continue
                body.append(message.get("body", b""))
                if not message.get("more_body", False):
                    body.set_complete()
            elif message["type"] == "http.disconnect":
                break
        nursery.cancel_scope.cancel()
