"""``create_app``: the QuartTrio application, its limits, auth, CORS and error handling.

The app holds no global state: everything it serves comes from the ``Services`` it is
built with, so a test can run several swapds in one process. Route groups live in their
own modules (``inference.py``, ``admin_api.py``) and register themselves here.

Quart's defaults would cut real traffic (60 s response and body timeouts, 16 MiB
bodies), so they are set deliberately below. Every error leaves as JSON in the caller's
dialect (OpenAI, or Anthropic on ``/v1/messages``) with the right status; no traceback
ever reaches a client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import attrs
import trio
from quart import Quart, Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from swapd.config.model import Config
from swapd.core.keys import Limiter
from swapd.core.routing import Router
from swapd.errors import SwapdError, Unauthorized
from swapd.observe.bus import EventBus
from swapd.observe.progress import LoadProgressObserver
from swapd.observe.telemetry import Telemetry
from swapd.reload import Reloader
from swapd.supervise.supervisor import Supervisor
from swapd.supervise.warm import WarmKeeper
from swapd.web import cors, problems, scopes
from swapd.web.auth import WWW_AUTHENTICATE, KeyChecker
from swapd.web.flow import FlowHTTPConnection, FlowRequest
from swapd.web.forward import Forwarder
from swapd.web.relay import StallWatch

__all__ = ["Services", "create_app", "json_response", "register_cleanup"]

log = logging.getLogger(__name__)

# Paths anyone may reach without an API key.
PUBLIC_PATHS = frozenset({"/", "/health", "/wol-health", "/favicon.ico", "/upstream"})
CLEANUP_KEY = "swapd.cleanup"
_JSON_ROUTES: frozenset[str] = frozenset()  # set by create_app (inference imports this module)


@attrs.define(eq=False)
class Services:
    """Everything the HTTP layer uses, built by the daemon (or a test)."""

    config: Config
    supervisor: Supervisor
    forwarder: Forwarder
    bus: EventBus[object]
    telemetry: Telemetry
    router: Router = attrs.field(init=False)
    keys: KeyChecker = attrs.field(init=False)
    started_at: float = attrs.field(factory=time.time)
    max_body_bytes: int = 512 * 1024 * 1024
    reloader: Reloader | None = None  # None: no file to reload from
    stalls: StallWatch = attrs.field(init=False)
    progress: LoadProgressObserver | None = None  # None: no load progress (tests, tools)
    warm: WarmKeeper | None = None  # models.<id>.warm; None: nothing is warmed
    key_limits: Limiter = attrs.field(factory=Limiter)  # per key name, kept across reloads

    def __attrs_post_init__(self) -> None:
        self.use_config(self.config)
        self.stalls = StallWatch(lambda: self.config.send_timeout)

    def use_config(self, config: Config) -> None:
        """Switch every per-request lookup to ``config`` at once (a reload)."""
        self.config = config
        self.router = Router(config)
        self.keys = KeyChecker(config.api_keys, config.keys)


def json_response(status: int, body: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    response = Response(
        problems.json_bytes(body),
        status=status,
        content_type="application/json; charset=utf-8",
    )
    for name, value in headers or ():
        response.headers[name] = value
    return response


def register_cleanup(fn: Callable[[], Awaitable[None] | None]) -> None:
    """Run ``fn`` when this request is completely over (response sent or client gone).

    This is the only safe place to release upstream responses and model leases: a body
    generator that never started (client gone before the first byte) never runs its
    ``finally`` (measured in the stack prototype)."""
    scope: Any = request.scope
    scope[CLEANUP_KEY].append(fn)


class _CleanupMiddleware:
    """ASGI wrapper that runs the request's cleanups, shielded, once it ends."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cleanups: list[Callable[[], Awaitable[None] | None]] = []
        scope[CLEANUP_KEY] = cleanups
        bridge = _EndAfterResponse(scope, receive, send)
        try:
            await self.app(scope, bridge.receive, bridge.send)
        finally:
            with trio.CancelScope(shield=True):
                for fn in reversed(cleanups):
                    result = fn()
                    if result is not None:
                        await result


def _closes_after(scope: dict[str, Any]) -> bool:
    """The client asked to close the connection after this response."""
    if scope.get("http_version") == "1.0":
        return True
    return any(
        name == b"connection" and b"close" in value.lower() for name, value in scope["headers"]
    )


def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}


class _EndAfterResponse:
    """Lets Quart return once a response that ends the connection is sent.

    Quart keeps a request open until it hears ``http.disconnect``, and hypercorn ends a
    connection that must close only once the app returned: each waits for the other and
    the client hangs (measured: a bare ASGI app closes at once, a QuartTrio app never).
    A connection must close when the client asked (``Connection: close``, HTTP/1.0) or
    when the response starts before the request body is complete (a 401 or 413 on a POST:
    the rest of the body can no longer be told from the next request). Then the wrapper
    says so in the response, and a ``receive`` made from then on also ends when the
    response has been sent, answering Quart with a disconnect. Other requests only pass
    through two plain method calls."""

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send
        self._close = _closes_after(scope)
        self._body_done = not _has_body(scope)
        self._sent = trio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self._body_done and not self._close:
            self._close = True
            message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
        if kind != "http.response.body" or message.get("more_body", False):
            await self._send(message)
            return
        # Shielded: with the last message hypercorn hands Quart an ``http.disconnect``,
        # and Quart cancels the request on it; a cancel landing inside this send (where
        # hypercorn closes a connection that must close) left the socket open and a
        # client that reused it hanging. Hypercorn's own socket writes are shielded too.
        with trio.CancelScope(shield=True):
            await self._send(message)
        self._sent.set()

    async def receive(self) -> dict[str, Any]:
        if not self._close:
            message: dict[str, Any] = await self._receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                self._body_done = True
            return message
        if self._sent.is_set():
            return _DISCONNECT
        received = _DISCONNECT
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                nonlocal received
                received = await self._receive()
                nursery.cancel_scope.cancel()

            async def sent() -> None:
                await self._sent.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(take)
            nursery.start_soon(sent)
        return received


SMALL_BODY = 64 * 1024


async def _drain_small_body() -> None:
    """Read the rest of a small request body before an error answers it early (a 401
    before the body was looked at, a 404).

    A response that starts before the body is complete must close the connection
    (``_EndAfterResponse``), and hypercorn closes it from its reading task while the
    response may still be written from ours: with a pipelined request behind the body,
    about half such answers were lost (``BusyResourceError``). A small body that is
    already on its way is read instead (at most 1 s), so the connection stays usable and
    the next request is answered. Large or slow bodies still close the connection."""
    if not has_request_context():
        return
    length = request.content_length
    if length is None or length > SMALL_BODY or request.method in ("GET", "HEAD"):
        return
    with trio.move_on_after(1.0):
        try:
            await request.get_data(cache=False)
        except Exception:  # the body was streamed already: close as before
            log.debug("could not drain the request body", exc_info=True)


def _current_path() -> str:
    return request.path if has_request_context() else websocket.path


def error_response(exc: SwapdError, path: str) -> Response:
    status, body, headers = problems.error_for(exc, anthropic=problems.is_anthropic_path(path))
    if isinstance(exc, Unauthorized):
        headers = [*headers, ("WWW-Authenticate", WWW_AUTHENTICATE)]
    return json_response(status, body, headers)


def _check_key(services: Services, scope: Any, method: str, path: str) -> None:
    """401 without a valid key, 403 when the key's role does not open the route
    (``scopes.KeyGate`` identified the key already)."""
    if not services.keys.enabled:
        return
    grant = scope.get(scopes.GRANT_KEY)
    if grant is None:
        raise Unauthorized("unauthorized: invalid or missing API key")
    scopes.check_route(grant, method, path, _JSON_ROUTES)


def create_app(services: Services) -> Quart:
    """Build the app. Register routes of every group; set limits; install handlers."""
    app = QuartTrio("swapd")
    # Streamed bodies are read no faster than they are forwarded (flow.py).
    app.request_class = FlowRequest
    app.asgi_http_class = FlowHTTPConnection
    app.config.update(
        MAX_CONTENT_LENGTH=services.max_body_bytes,
        BODY_TIMEOUT=None,  # uploads and long prompts may be slow; the client decides
        RESPONSE_TIMEOUT=None,  # generations may stream for many minutes
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.url_map.strict_slashes = False
    app.extensions["swapd"] = services

    @app.while_serving
    async def watch_stalled_clients() -> AsyncGenerator[None, None]:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await services.stalls.run()

        app.nursery.start_soon(run)
        yield
        scope.cancel()

    @app.before_request
    async def guard() -> Response | None:
        if request.method == "OPTIONS":
            response = Response("", status=204)
            for name, value in cors.preflight_headers(dict(request.headers)):
                response.headers[name] = value
            return response
        path = request.path
        if path in PUBLIC_PATHS or path.startswith("/ui"):
            return None
        _check_key(services, request.scope, request.method, path)
        return None

    @app.before_websocket
    async def guard_websocket() -> None:
        # The key may come as ?api_key= (scopes.KeyGate reads it).
        _check_key(services, websocket.scope, "WEBSOCKET", websocket.path)

    @app.errorhandler(SwapdError)
    async def swapd_error(exc: SwapdError) -> Response:
        await _drain_small_body()
        return error_response(exc, _current_path())

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        await _drain_small_body()
        status = exc.code or 500
        message = {404: "not found", 405: "method not allowed", 413: "request body too large"}.get(
            status, exc.description or exc.name
        )
        body = (
            problems.anthropic_error(status, message)
            if problems.is_anthropic_path(_current_path())
            else problems.openai_error(status, message)
        )
        return json_response(status, body)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error while handling %s", _current_path())
        return json_response(500, problems.openai_error(500, "internal error in swapd"))

    from swapd.web import (
        activity_api,
        admin_api,
        config_api,
        events_api,
        extra_routes,
        fastpath,
        hardware_api,
        hostcheck,
        inference,
        inflight_api,
        key_api,
        observe_api,
        ollama_api,
        profiles_api,
        recording,
        ui_routes,
        upstream_ws,
    )

    global _JSON_ROUTES
    _JSON_ROUTES = frozenset(inference.JSON_ROUTES)
    inference.register(app, services)
    admin_api.register(app, services)
    observe_api.register(app, services)
    events_api.register(app, services)
    config_api.register(app, services)
    ui_routes.register(app, services)
    ollama_api.register(app, services)  # Ollama's /api/* routes
    activity_api.register(app, services)
    inflight_api.register(app, services)
    profiles_api.register(app, services)
    upstream_ws.register(app, services)
    hardware_api.register(app, services)  # /api/hardware, /api/performance
    key_api.register(app, services)  # /api/key: the presented key's role and models
    extra_routes.register(app, services)  # /v/*, /audioapi/v1/tasks/run, /comfyui/
    # Plain JSON inference POSTs skip Quart (fastpath.py); everything else gets the
    # cleanup middleware and the app.
    fast = fastpath.FastPath(
        _CleanupMiddleware(app.asgi_app), services, frozenset(inference.JSON_ROUTES)
    )
    # Every inference request, fast path or not, gets its activity row.
    recorded = recording.ActivityRecorder(
        fast,
        services.telemetry,
        paths=frozenset(
            inference.JSON_ROUTES
            + inference.MULTIPART_ROUTES
            + extra_routes.RECORDED_PATHS
            + ollama_api.RECORDED_PATHS
        ),
        prefixes=("/sdapi/v1/", "/upstream/"),
    )
    # Outermost: the Host check (hostcheck.py), for every request and WebSocket.
    # Inside it, the key is identified once for every layer (scopes.KeyGate).
    gated = scopes.KeyGate(recorded, services)
    app.asgi_app = hostcheck.HostCheck(gated, services)  # type: ignore[method-assign, assignment]
    return app
