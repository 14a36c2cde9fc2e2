"""Routes llama-swap v250 added on top of the inference routes (delta spec 4.1, 4.6).

- ``POST /v/chat/completions`` (and ``/v/responses``, ``/v/completions``, ``/v/messages``,
  ``/v/messages/count_tokens``, ``/v/embeddings``, ``/v/rerank``, ``/v/reranking``):
  versionless, for upstreams without ``/v1``: the request goes through the JSON inference
  pipeline like its ``/v1`` twin, and ``/v`` is stripped from the path the upstream sees.
- ``POST /audioapi/v1/tasks/run``: audio.cpp, JSON model; ``/audioapi`` is stripped, so the
  upstream sees ``/v1/tasks/run``.
- ``/comfyui/<path>`` (any method): always the reserved model ``comfyui_auto``; ``/comfyui``
  is stripped (escaping kept). Only ``/comfyui/`` itself may start the model; any other
  path on a model that is not ready is a 409. ``/comfyui`` redirects to ``/comfyui/``
  (301 for GET/HEAD, else 308, query kept). Not recorded in the activity history.
  WebSocket upgrades (ComfyUI's ``/ws``) are relayed while the model is ready (409 else).

Every one of them needs an API key when ``apiKeys`` is set (the app's guard).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import trio_websocket
from quart import Quart, Response, current_app, redirect, request, websocket
from werkzeug.datastructures import Headers
from werkzeug.wrappers.response import Response as Redirect

from swapd.core.routing import Route
from swapd.core.states import ModelState
from swapd.errors import BadRequest, Conflict, ModelNotFound
from swapd.web import problems, relay, upstream_ws
from swapd.web.app import Services, json_response, register_cleanup
from swapd.web.auth import strip_credentials

__all__ = ["COMFYUI_MODEL", "RECORDED_PATHS", "register"]

COMFYUI_MODEL = "comfyui_auto"
VERSIONLESS = tuple(
    f"/v/{name}"
    for name in (
        "chat/completions",
        "responses",
        "completions",
        "messages",
        "messages/count_tokens",
        "embeddings",
        "rerank",
        "reranking",
    )
)
AUDIO_TASKS = "/audioapi/v1/tasks/run"
#: Model-dispatched POSTs that get activity rows (app.py hands them to the recorder).
RECORDED_PATHS = (*VERSIONLESS, AUDIO_TASKS)
_JSON_VIEW = "json:/v1/chat/completions"  # inference.py's JSON pipeline (one view, every path)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


def register(app: Quart, services: Services) -> None:
    async def stripped(prefix: str) -> Response:
        # The JSON pipeline forwards the raw path it finds in the scope: hand it the path
        # without the prefix; everything else (model, filters, metering) is the pipeline's.
        raw = request.scope.get("raw_path") or request.path.encode()
        request.scope["raw_path"] = raw[len(prefix) :]
        view: Callable[[], Awaitable[Response]] = current_app.view_functions[_JSON_VIEW]  # type: ignore[assignment]
        return await view()

    async def versionless() -> Response:
        return await stripped("/v")

    async def audio_tasks() -> Response:
        return await stripped("/audioapi")

    for path in VERSIONLESS:
        app.add_url_rule(path, f"versionless:{path}", versionless, methods=["POST"])
    app.add_url_rule(AUDIO_TASKS, "audioapi-tasks", audio_tasks, methods=["POST"])

    async def comfyui_root() -> Redirect:
        target = "/comfyui/"
        if request.query_string:
            target += "?" + request.query_string.decode("latin-1")
        return redirect(target, 301 if request.method in ("GET", "HEAD") else 308)

    async def comfyui(rest: str = "") -> Response:
        if COMFYUI_MODEL not in services.config.models:
            raise ModelNotFound(f"local model {COMFYUI_MODEL} not found")
        raw = (request.scope.get("raw_path") or request.path.encode()).decode("latin-1")
        path = raw.removeprefix("/comfyui") or "/"
        if any(urllib.parse.unquote(s) in (".", "..") for s in path.split("/")):
            raise BadRequest("'.' and '..' path segments are not allowed in /comfyui/ paths")
        state = services.supervisor.runner(COMFYUI_MODEL).state
        if path != "/" and state is not ModelState.READY:
            raise Conflict(f"model {COMFYUI_MODEL} is not loaded; only /comfyui/ can start it")
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.scope["headers"]]
        if services.keys.enabled:  # swapd's own credentials never reach the model
            headers = strip_credentials(headers)
        content = None if request.method in ("GET", "HEAD") else _body()
        exchange, body = await relay.forward(
            services,
            Route("local", COMFYUI_MODEL, COMFYUI_MODEL),
            request.method,
            path,
            headers,
            request.remote_addr,
            content,
            register_cleanup,
        )
        response = Response(body, status=exchange.status, headers=Headers(exchange.headers))
        response.timeout = None
        return response

    async def comfyui_websocket(rest: str = "") -> Response | None:
        # ComfyUI's /ws: relayed like /upstream WebSockets of an ignoreWebsockets model
        # (comfyui_auto always is one): never starts the model, holds no lease.
        if COMFYUI_MODEL not in services.config.models:
            return _reject(404, f"local model {COMFYUI_MODEL} not found")
        if services.supervisor.runner(COMFYUI_MODEL).state is not ModelState.READY:
            return _reject(409, f"model {COMFYUI_MODEL} is not loaded; only /comfyui/ can start it")
        raw = websocket.scope.get("raw_path") or websocket.path.encode()
        path = raw.decode("latin-1").removeprefix("/comfyui") or "/"
        proxy = services.config.models[COMFYUI_MODEL].proxy
        accepted: list[bool] = []
        try:
            await upstream_ws.relay_websocket(proxy, path, accepted)
        except (OSError, trio_websocket.HandshakeError) as exc:
            if accepted:
                raise
            return _reject(502, f"upstream {proxy} refused the websocket: {exc}")
        return None

    app.add_websocket("/comfyui/", "comfyui-websocket-index", comfyui_websocket)
    app.add_websocket("/comfyui/<path:rest>", "comfyui-websocket", comfyui_websocket)
    app.add_url_rule("/comfyui", "comfyui-root", comfyui_root, methods=_METHODS)
    app.add_url_rule("/comfyui/", "comfyui-index", comfyui, methods=_METHODS)
    app.add_url_rule("/comfyui/<path:rest>", "comfyui", comfyui, methods=_METHODS)


def _reject(status: int, message: str) -> Response:
    return json_response(status, problems.openai_error(status, message))


async def _body() -> AsyncIterator[bytes]:
    async for chunk in request.body:
        yield chunk
