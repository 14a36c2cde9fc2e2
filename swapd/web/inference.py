"""Inference routes: find the model, wait until it is ready, forward, stream back.

Every inference request takes the same path: read the model name (JSON body, multipart
field, or query), resolve it to a local model or a peer, rewrite the body if the model's
filters say so, ask the supervisor for a lease (this is where a request waits for a
load), open the upstream exchange, and return its body as a stream. The lease and the
exchange are released by the request's cleanup, whatever happens to the client.

Routes (POST unless noted):
- JSON body: OpenAI ``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``,
  ``/v1/embeddings``, ``/v1/audio/speech``, ``/v1/images/generations``; Anthropic
  ``/v1/messages``, ``/v1/messages/count_tokens``; llama-server ``/completion``,
  ``/infill``, ``/rerank``, ``/reranking``, ``/v1/rerank``, ``/v1/reranking``;
  stable-diffusion ``/sdapi/v1/<anything>`` (model from the body or ``?model=``).
- multipart: ``/v1/audio/transcriptions``, ``/v1/images/edits`` (``?model=`` wins).
- GET with ``?model=``: ``/v1/audio/voices``, ``/props``.
- any method: ``/upstream/<model>/<path>`` passes straight through to the model.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator

import trio
from quart import Quart, Response, current_app, redirect, request
from werkzeug.datastructures import Headers
from werkzeug.wrappers.response import Response as Redirect

from swapd.config.model import Selector, SelectorStrategy
from swapd.core.routing import Route
from swapd.core.selectors import pick_target
from swapd.core.states import ModelState
from swapd.errors import BadRequest, Conflict, ModelNotFound, ModelUnavailable
from swapd.supervise.supervisor import Lease
from swapd.web import bodies, problems, recording, relay, scopes
from swapd.web.app import Services, register_cleanup
from swapd.web.auth import strip_credentials
from swapd.web.bodies import JsonFields
from swapd.web.fastpath import FIELDS_KEY, MAX_NAME, read_json_fields
from swapd.web.forward import Exchange, request_headers
from swapd.web.loading import loading_stream, metered
from swapd.web.model_routes import JSON_ROUTES, MULTIPART_ROUTES, QUERY_ROUTES
from swapd.web.upload import read_upload

__all__ = ["JSON_ROUTES", "MULTIPART_ROUTES", "register"]


def register(app: Quart, services: Services) -> None:
    async def json_inference() -> Response:
        body = await request.get_data(cache=False)
        assert isinstance(body, bytes)
        cached = request.scope.get(FIELDS_KEY)  # the fast path parsed it already
        fields = cached if isinstance(cached, JsonFields) else await read_json_fields(body)
        name = fields.model or request.args.get("model") or None
        if name is None:
            raise BadRequest(
                fields.error or "missing or invalid 'model' key in the JSON request body"
            )
        route = _resolve(services, name)
        # A profile pin rewrote the name: the upstream sees the pin's target.
        pinned = route.requested if route.requested != name else ""
        original = body
        if route.kind == "local":
            spec = services.config.models[route.target]
            body = bodies.rewrite_json_body(
                body,
                use_model_name=spec.use_model_name or pinned,
                strip=spec.filters.stripped_keys(),
                set_items=spec.filters.set_items(route.requested),
            )
            if (
                spec.send_loading_state
                and request.path == "/v1/chat/completions"
                and services.supervisor.runner(route.target).state is not ModelState.READY
                and (fields.stream if body is original else bodies.is_streaming(body))
            ):
                return await _loading_response(services, route, body)
        else:
            filters = services.config.peers[route.target].filters
            body = bodies.rewrite_json_body(
                body,
                use_model_name=pinned,
                strip=filters.stripped_keys(),
                set_items=filters.set_items(route.requested),
            )
        return await _forward(services, route, body)

    async def multipart_inference() -> Response:
        content_type = request.headers.get("content-type", "")
        try:
            upload = await read_upload(content_type, request.body)
        except ValueError as exc:
            raise BadRequest(f"error parsing multipart form: {exc}") from None
        register_cleanup(upload.close)
        form_model = upload.model
        name = request.args.get("model") or form_model
        if not name:
            raise BadRequest("missing or invalid 'model' parameter in form data")
        route = _resolve(services, name)
        new_name = None
        if route.kind == "local":
            new_name = services.config.models[route.target].use_model_name or route.requested
        try:
            body = upload.body(new_name if form_model is not None else None)
        except ValueError as exc:
            raise BadRequest(f"cannot rewrite the form's model field: {exc}") from None
        return await _forward(services, route, body)

    async def query_inference() -> Response:
        name = request.args.get("model")
        if not name:
            raise BadRequest("missing required 'model' query parameter")
        return await _forward(services, _resolve(services, name), None)

    for path in JSON_ROUTES:
        app.add_url_rule(path, f"json:{path}", json_inference, methods=["POST"])

    async def sdapi(rest: str) -> Response:
        return await json_inference()

    app.add_url_rule("/sdapi/v1/<path:rest>", "json:sdapi", sdapi, methods=["POST"])
    for path in MULTIPART_ROUTES:
        app.add_url_rule(path, f"multipart:{path}", multipart_inference, methods=["POST"])
    for path in QUERY_ROUTES:
        app.add_url_rule(path, f"query:{path}", query_inference, methods=["GET"])

    async def upstream_root() -> Redirect:
        return redirect("/ui/models", 302)

    async def upstream(rest: str) -> Response | Redirect:
        # Work on the path as the client sent it (still percent-encoded): the remainder
        # is forwarded byte for byte, so %2F, %3F and non-ASCII survive, and a dot segment,
        # encoded or not, can be refused before it climbs out of the model's proxy path.
        raw = _raw_path().removeprefix("/upstream/")
        segments = raw.split("/")
        model_id = None
        for end in range(1, len(segments) + 1):
            candidate = "/".join(urllib.parse.unquote(s) for s in segments[:end])
            model_id = services.router.resolve_local(candidate)
            if model_id is not None:
                break
        if model_id is None:
            raise BadRequest("model id required in path: /upstream/<model>/<path>")
        scopes.check_model(services, Route("local", model_id, model_id), candidate)
        remainder = segments[end:]
        if any(urllib.parse.unquote(s) in (".", "..") for s in remainder):
            raise BadRequest("'.' and '..' path segments are not allowed in /upstream/ paths")
        if end == len(segments):
            target = f"/upstream/{raw}/"
            if request.query_string:
                target += "?" + request.query_string.decode("latin-1")
            return redirect(target, 301 if request.method in ("GET", "HEAD") else 308)
        _refuse_ignored_path(services, model_id, "/" + "/".join(remainder))
        route = Route("local", model_id, model_id)
        content = _stream_request_body() if request.method not in ("GET", "HEAD") else None
        return await _forward(services, route, content, path="/" + "/".join(remainder))

    app.add_url_rule("/upstream", "upstream-root", upstream_root, methods=["GET"])
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]
    app.add_url_rule("/upstream/<path:rest>", "upstream", upstream, methods=methods)


def _select(services: Services, selector_id: str, selector: Selector) -> str:
    """The selector's target for this request; a spillover pick is reserved until the
    request is over. No usable target: 503."""
    router = services.router

    def state_of(target: str) -> ModelState | None:
        route = router.lookup(target)  # pins were applied to the selector's name already
        if route is None or route.kind != "local":
            return None
        return services.supervisor.runner(route.target).state

    reserved = router.reservations.get(selector_id, {})
    target = pick_target(selector, state_of, reserved)
    if target is None:
        raise ModelUnavailable(f'selector "{selector_id}" has no available spillover targets')
    if selector.strategy is SelectorStrategy.SPILLOVER:
        router.reserve(selector_id, target, +1)
        register_cleanup(lambda: router.reserve(selector_id, target, -1))
    return target


def _refuse_ignored_path(services: Services, model_id: str, path: str) -> None:
    """``upstream.ignorePaths``: a matching path (a UI's static asset, say) on a model that
    is not ready answers 409 instead of loading the model (llama-swap v229)."""
    if services.supervisor.runner(model_id).state is ModelState.READY:
        return
    unquoted = urllib.parse.unquote(path)
    if any(p.search(unquoted) for p in _ignore_patterns(services.config.upstream.ignore_paths)):
        raise Conflict(f"model {model_id} is not loaded; path matches upstream.ignorePaths")


@functools.cache
def _ignore_patterns(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


async def _stream_request_body() -> AsyncIterator[bytes]:
    async for chunk in request.body:
        yield chunk


def _resolve(services: Services, name: str) -> Route:
    """Profile pin, then selector, then model/alias/peer (llama-swap v241's order)."""
    activity = recording.current()
    if activity is not None:  # an unknown model's row names what was asked for
        activity.note_model(name[:MAX_NAME])
    if len(name) > MAX_NAME:  # no model has such a name; nothing more is done with it
        raise ModelNotFound(
            problems.unknown_model_message(
                name, scopes.visible_names(services, services.router.names())
            )
        )
    router = services.router
    wanted = router.pinned(name)
    if wanted == "":  # the active profile disables this name
        raise ModelNotFound("no model id could be identified")
    selector = services.config.selectors.get(wanted or name)
    if selector is not None:
        wanted = _select(services, wanted or name, selector)
    route = router.lookup(wanted or name)
    if route is None:
        raise ModelNotFound(
            problems.unknown_model_message(
                name, scopes.visible_names(services, services.router.names())
            )
        )
    scopes.check_model(services, route, name)  # the final target, after pins and selectors
    return route


async def _loading_response(services: Services, route: Route, body: bytes) -> Response:
    headers = request_headers(_client_headers(services), client_ip=request.remote_addr)
    target = _target(None)

    pool = services.config.models[route.target].effective_concurrency_limit
    # The key's limits, as for every model request: over one, 429 before anything loads.
    scopes.admit(services, route, register_cleanup)
    activity = recording.current()
    if activity is not None:
        activity.note_model(route.target)
    started = trio.current_time()

    def meter(exchange: Exchange) -> AsyncGenerator[bytes, None]:
        return metered(
            services.telemetry, route.target, exchange, activity, path=request.path, started=started
        )

    async def open_exchange(lease: Lease) -> Exchange:
        return await relay.open_exchange(
            services, route, lease.proxy, "POST", target, headers, body, pool
        )

    nursery = current_app.nursery  # type: ignore[attr-defined]
    stream = await loading_stream(
        nursery, services.supervisor, route.target, open_exchange, register_cleanup, meter
    )
    response = Response(
        stream,
        status=200,
        headers={
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        },
    )
    response.timeout = None
    return response


def _client_headers(services: Services) -> list[tuple[str, str]]:
    """The client's headers as it sent them (not Quart's view, which adds a synthetic
    ``Remote-Addr``), without the credentials it used for swapd itself."""
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.scope["headers"]]
    return strip_credentials(headers) if services.keys.enabled else headers


def _raw_path() -> str:
    """The request path exactly as the client sent it (percent-encoding kept)."""
    raw = request.scope.get("raw_path")
    if not raw:
        return urllib.parse.quote(request.path)
    path = raw.decode("latin-1")
    if not path.startswith("/"):  # absolute-form target (http://host/path): the path only
        path = urllib.parse.urlsplit(path).path or "/"
    return path


def _target(path: str | None) -> str:
    target = path if path is not None else _raw_path()
    query = request.query_string.decode("latin-1")
    return f"{target}?{query}" if query else target


async def _forward(
    services: Services,
    route: Route,
    content: bytes | AsyncIterator[bytes] | None,
    *,
    path: str | None = None,
) -> Response:
    exchange, body = await relay.forward(
        services,
        route,
        request.method,
        _target(path),
        _client_headers(services),
        request.remote_addr,
        content,
        register_cleanup,
    )
    response = Response(body, status=exchange.status, headers=Headers(exchange.headers))
    response.timeout = None
    return response
