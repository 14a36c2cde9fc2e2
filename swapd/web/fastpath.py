"""The hot path below Quart: plain JSON inference POSTs served as a bare ASGI app.

Quart's per-request machinery (request and app contexts, a null session, URL matching,
before-request hooks, ``Response`` objects and its body loop) cost about as much CPU as the
relay itself: measured on the benchmark machine, ~0.4 ms of the ~1.6 ms swapd spent per
small request, and a trip through its body loop per streamed chunk (see
benchmarks/README.md). Inference requests are nearly all of swapd's traffic, so they skip
it: this wrapper sits in front of the Quart app and takes a request only when it is the
plain case —

* ``POST`` to one of the JSON routes (``model_routes.JSON_ROUTES``), with an API key that
  passes when keys are configured;
* a body within ``max_body_bytes`` whose ``model`` names a local model (not a peer) that
  has no ``sendLoadingState``.

Everything else, including every request that will fail before a lease is asked for (no
model, unknown model, bad key, body too large), goes to the Quart app unchanged, with the
body already read handed back to it first, so each error and special case keeps one
implementation. Once committed, the request takes the same relay as the Quart routes
(``relay.forward``); a ``SwapdError`` from it (queue full, start failed, upstream
unreachable) is answered with the same JSON ``problems.error_for`` gives Quart's handler.
As in quart-trio, a task watches for the client going away and cancels the request, so a
disconnect leaves the model queue or closes the upstream stream at once (it stops before
the response's last message, see ``_serve``); the lease and the upstream exchange are
released in a shielded ``finally``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from swapd.core.routing import Route
from swapd.errors import SwapdError
from swapd.web import bodies, problems, relay, scopes
from swapd.web.auth import strip_credentials

if TYPE_CHECKING:
    from swapd.web.app import Services

__all__ = ["FIELDS_KEY", "MAX_NAME", "FastPath", "read_json_fields"]

log = logging.getLogger(__name__)

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]

FIELDS_KEY = "swapd.json_fields"
#: Longer model names are no model (IDs are short); they are not looked up or matched.
MAX_NAME = 1024


async def read_json_fields(body: bytes) -> bodies.JsonFields:
    """``bodies.read_fields``, off the event loop for a body too large to parse whole:
    the scan is Python code, so the loop keeps running while it works."""
    if len(body) <= bodies.PARSE_WHOLE:
        return bodies.read_fields(body)
    return await trio.to_thread.run_sync(bodies.read_fields, body)


class FastPath:
    """ASGI wrapper: serves plain JSON inference POSTs itself, passes the rest to ``app``."""

    def __init__(self, app: ASGIApp, services: Services, paths: frozenset[str]) -> None:
        self.app = app
        self.services = services
        self.paths = paths

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        services = self.services
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
        grant = scope.get(scopes.GRANT_KEY)
        if (services.keys.enabled and grant is None) or _declared_over(
            scope, services.max_body_bytes
        ):
            await self.app(scope, receive, send)  # Quart answers 401, or 413 without reading
            return
        body, more = await _read_body(receive, services.max_body_bytes)
        if body is None:
            return  # the client went away before its body arrived
        route = None
        if not more:
            # Parsed once: the Quart route reads the result from the scope.
            fields = scope[FIELDS_KEY] = await read_json_fields(body)
            name = fields.model
            route = services.router.resolve(name) if name and len(name) <= MAX_NAME else None
        spec = services.config.models.get(route.target) if route is not None else None
        if (
            route is None
            or route.kind != "local"
            or spec is None
            or spec.send_loading_state
            or route.requested != name  # a profile pin: the app rewrites the model name
            or not scopes.visible(grant, [route.target, *spec.aliases])  # the app says 403
        ):
            await self.app(scope, _replay(body, more, receive), send)
            return
        body = bodies.rewrite_json_body(
            body,
            use_model_name=spec.use_model_name,
            strip=spec.filters.stripped_keys(),
            set_items=spec.filters.set_items(route.requested),
        )
        if services.keys.enabled:
            headers = strip_credentials(headers)
        await _serve(services, scope, receive, send, route, headers, body)


def _declared_over(scope: dict[str, Any], limit: int) -> bool:
    """The request declares a Content-Length over ``limit`` (refused before it is sent)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return not value.isdigit() or int(value) > limit
    return False


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, bool]:
    """The request body and whether more of it is still to come (over ``limit``: the rest
    is left for the Quart app, which answers 413); None if the client disconnected."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, False
        chunk = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if not more or size > limit:
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            return body, more


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` that first hands back the body already read."""
    pending = [{"type": "http.request", "body": body, "more_body": more}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


async def _watch_disconnect(
    receive: Receive, request: trio.CancelScope, watcher: trio.CancelScope
) -> None:
    """Cancel ``request`` when the client goes away; stops when ``watcher`` is cancelled."""
    with watcher:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                request.cancel()
                return


async def _serve(
    services: Services,
    scope: dict[str, Any],
    receive: Receive,
    send: Send,
    route: Route,
    headers: list[tuple[str, str]],
    body: bytes,
) -> None:
    path: str = scope["path"]
    query = scope["query_string"].decode("latin-1")
    target = f"{path}?{query}" if query else path
    client = scope.get("client")
    cleanups: list[Callable[[], Awaitable[None] | None]] = []
    stream: AsyncIterator[bytes] | None = None
    # The watcher stops before the response's last message is sent: hypercorn answers
    # that message with http.disconnect and, for a connection that must close (HTTP/1.0,
    # Connection: close), closes the socket inside the same send; a cancel arriving
    # there would leave the connection open and the client waiting.
    watcher = trio.CancelScope()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope, watcher)
            try:
                exchange, stream = await relay.forward(
                    services,
                    route,
                    "POST",
                    target,
                    headers,
                    client[0] if client else None,
                    body,
                    cleanups.append,
                )
            except SwapdError as exc:
                watcher.cancel()
                anthropic = problems.is_anthropic_path(path)
                await _send_error(send, *problems.error_for(exc, anthropic=anthropic))
                return
            except Exception:
                log.exception("unexpected error while handling %s", path)
                watcher.cancel()
                internal = problems.openai_error(500, "internal error in swapd")
                await _send_error(send, 500, internal, [])
                return
            raw_headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in exchange.headers]
            await send(
                {"type": "http.response.start", "status": exchange.status, "headers": raw_headers}
            )
            ended = False
            async for chunk in stream:
                # The last chunk ends the response in the same message when it is known
                # to be the last (a whole small body arrives in one read).
                ended = exchange.complete
                if ended:
                    watcher.cancel()
                await send({"type": "http.response.body", "body": chunk, "more_body": not ended})
                if ended:
                    break  # the stream is closed below, which records the exchange
            if not ended:
                watcher.cancel()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()
        with trio.CancelScope(shield=True):
            if stream is not None:
                await stream.aclose()  # type: ignore[attr-defined]
            for fn in reversed(cleanups):
                result = fn()
                if result is not None:
                    await result


async def _send_error(
    send: Send, status: int, body: dict[str, Any], extra: list[tuple[str, str]]
) -> None:
    data = problems.json_bytes(body)
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(data)).encode()),
        *((n.encode("latin-1"), v.encode("latin-1")) for n, v in extra),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})
