"""Ollama's API on swapd: the ``/api/*`` routes Ollama clients call.

Routes (errors are Ollama's ``{"error": "..."}`` with the matching status):

- ``GET /api/tags``: the models swapd serves (as ``/v1/models`` lists them).
- ``GET /api/ps``: models loaded now, with ``expires_at`` from their TTL.
- ``POST /api/show``: one model's details (from its config).
- ``POST /api/chat``, ``POST /api/generate``: translated (``ollama_translate``) to the
  model's OpenAI route, forwarded through swapd's normal relay (lease, swap, metrics,
  captures, activity), and the answer translated back (``ollama_answer``): NDJSON, one line
  per upstream event as it arrives, unless ``"stream": false``. An empty prompt (no
  messages) only loads the model, or unloads it with ``keep_alive: 0``, as in Ollama.
- ``POST /api/embed``, ``POST /api/embeddings`` (older): through ``/v1/embeddings``.
- ``/api/pull``, ``/api/push``, ``/api/create``, ``/api/copy``, ``/api/delete``,
  ``/api/blobs/…``: 501, swapd serves the models its config names.
- ``GET /api/version`` is swapd's own route (``admin_api``), already Ollama's shape.

``keep_alive`` (request field, else the ``OLLAMA_KEEP_ALIVE`` environment variable read
at start): ``0`` unloads the model once the answer is done (if nothing else uses it);
other values are recorded per model in the supervisor's ``TtlOverrides`` table
(``Supervisor.ttl_overrides``, ``core/keepalive.py``): a positive value replaces the
model's TTL, a negative one turns it off, for as long as the latest Ollama request to that
model said so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

import trio
from quart import Blueprint, Quart, Response, current_app, request
from werkzeug.exceptions import HTTPException

from swapd.core.keepalive import TtlOverrides, parse_keep_alive
from swapd.core.routing import Route
from swapd.errors import SwapdError
from swapd.web import bodies, ollama_answer, ollama_models, problems, relay, scopes
from swapd.web.admin_api import model_list
from swapd.web.app import Services, json_response, register_cleanup
from swapd.web.auth import strip_credentials
from swapd.web.ollama_answer import StreamTranslator, Timing
from swapd.web.ollama_errors import OllamaError, error, guard_error, http_error, ollama_errors
from swapd.web.ollama_translate import (
    Upstream,
    chat_request,
    embed_request,
    embeddings_request,
    generate_request,
)

__all__ = ["KEEP_ALIVE_ENV", "RECORDED_PATHS", "register"]

log = logging.getLogger(__name__)

#: The routes that reach a model get activity rows like the OpenAI ones (app.py hands them
#: to the recorder): who asked (the key's name), the model, the tokens the relay's tap read
#: (which a key's ``dailyTokens`` counts, ``scopes.admit``).
RECORDED_PATHS = ("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")
KEEP_ALIVE_ENV = "OLLAMA_KEEP_ALIVE"
NDJSON = "application/x-ndjson"
MANAGE_MESSAGE = (
    "swapd serves the models its config file names; it does not pull, push, create, copy "
    "or delete models. Add the model to swapd's config (a `cmd` that serves it) instead."
)
_CLIENT_ONLY = {"content-length", "content-type", "accept-encoding", "transfer-encoding"}


def _now() -> str:
    return ollama_models.timestamp(dt.datetime.now(dt.UTC))


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


class OllamaRoutes:
    """The route handlers, with what they share: services, keep-alive table and default."""

    def __init__(self, services: Services, default_keep_alive: float | None) -> None:
        self.services = services
        self.default_keep_alive = default_keep_alive
        # The supervisor's own table: its TTL logic applies what the routes record here.
        self.overrides: TtlOverrides = services.supervisor.ttl_overrides
        self.last_answer: dict[str, float] = {}

    # ------------------------------------------------------------------ helpers

    async def _body(self) -> dict[str, Any]:
        raw = await request.get_data(cache=False)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise OllamaError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise OllamaError(400, "the request body must be a JSON object")
        return body

    def _resolve(self, body: Mapping[str, Any]) -> Route:
        name = body.get("model") or body.get("name")  # older clients send "name"
        if not isinstance(name, str) or not name:
            raise OllamaError(400, "missing or invalid 'model' in the request body")
        router = self.services.router
        route = router.resolve(name)
        if route is None and name.endswith(":latest"):  # Ollama's default tag
            route = router.resolve(name.removesuffix(":latest"))
        if route is None:
            names = scopes.visible_names(self.services, router.names())
            raise OllamaError(404, problems.unknown_model_message(name, names))
        if not scopes.visible(scopes.current(), scopes.names_of(self.services, route)):
            raise OllamaError(403, f"this API key may not use the model '{name}'")
        return route

    def _keep_alive(self, body: Mapping[str, Any]) -> float | None:
        value = body.get("keep_alive")
        return self.default_keep_alive if value is None else parse_keep_alive(value)

    def _upstream_headers(self) -> list[tuple[str, str]]:
        headers = [(n, v) for n, v in request.headers.items() if n.lower() not in _CLIENT_ONLY]
        if self.services.keys.enabled:
            headers = strip_credentials(headers)
        return [*headers, ("content-type", "application/json")]

    def _unload_when_done(self, model_id: str) -> None:
        """``keep_alive: 0``: once this request is over (its lease released), unload the
        model unless another request uses it or waits for it."""
        nursery: trio.Nursery = current_app.nursery  # type: ignore[attr-defined]
        supervisor = self.services.supervisor

        async def unload() -> None:
            stat = next((s for s in supervisor.statistics() if s.model == model_id), None)
            if stat is None or stat.in_flight or stat.waiting or stat.state not in LOADED:
                return
            self.overrides.set(model_id, None)
            await supervisor.unload(model_id)  # checked and stopped with no checkpoint between

        def schedule() -> None:
            # RuntimeError: swapd is shutting down, and everything stops anyway.
            with contextlib.suppress(RuntimeError):
                nursery.start_soon(unload)

        register_cleanup(schedule)

    async def _send(
        self, route: Route, upstream: Upstream, keep: float | None, timing: Timing
    ) -> tuple[int, str, AsyncIterator[bytes]]:
        """Forward ``upstream`` through swapd's relay; (status, content type, body)."""
        services = self.services
        # The name that resolved (a ":latest" suffix dropped), as a peer knows it.
        body = json.dumps({**upstream.body, "model": route.requested}).encode()
        if route.kind == "local":
            spec = services.config.models[route.target]
            body = bodies.rewrite_json_body(
                body,
                use_model_name=spec.use_model_name,
                strip=spec.filters.stripped_keys(),
                set_items=spec.filters.set_items(),
            )
            self.overrides.set(route.target, keep)
            if keep == 0:
                self._unload_when_done(route.target)  # registered first: runs after release
        else:
            filters = services.config.peers[route.target].filters
            body = bodies.rewrite_json_body(
                body,
                use_model_name="",
                strip=filters.stripped_keys(),
                set_items=filters.set_items(),
            )
        exchange, stream = await relay.forward(
            services,
            route,
            "POST",
            upstream.path,
            self._upstream_headers(),
            request.remote_addr,
            body,
            register_cleanup,
        )
        timing.answered = trio.current_time()
        if route.kind == "local":
            model_id = route.target

            def answered() -> None:
                self.last_answer[model_id] = trio.current_time()

            register_cleanup(answered)
        content_type = {n.lower(): v for n, v in exchange.headers}.get("content-type", "")
        if exchange.status != 200:
            message = ollama_answer.error_message(await _read(stream))
            raise OllamaError(exchange.status, message)
        return exchange.status, content_type, stream

    # ------------------------------------------------------------------ generation

    async def chat(self) -> Response:
        return await self._generation("chat")

    async def generate(self) -> Response:
        return await self._generation("generate")

    async def _generation(self, kind: ollama_answer.Kind) -> Response:
        timing = Timing(started=trio.current_time())
        body = await self._body()
        route = self._resolve(body)
        keep = self._keep_alive(body)
        name = str(body.get("model") or body.get("name"))
        empty = not body.get("messages") if kind == "chat" else not body.get("prompt")
        if empty and not body.get("images"):
            return await self._load_or_unload(kind, route, name, keep)
        upstream = chat_request(body) if kind == "chat" else generate_request(body)
        _, content_type, stream = await self._send(route, upstream, keep, timing)
        think = body.get("think")
        if upstream.stream and "text/event-stream" in content_type:
            translator = StreamTranslator(kind, name, _now, think)
            response = Response(_ndjson(stream, translator, timing), status=200)
            response.headers["content-type"] = NDJSON
            response.timeout = None
            return response
        answer = _parse(await _read(stream))
        timing.ended = trio.current_time()
        build = ollama_answer.chat_answer if kind == "chat" else ollama_answer.generate_answer
        result = build(answer, name, _now(), think, timing)
        if not upstream.stream:
            return json_response(200, result)
        response = Response(_line(result), status=200)  # upstream did not stream after all
        response.headers["content-type"] = NDJSON
        return response

    async def _load_or_unload(
        self, kind: ollama_answer.Kind, route: Route, name: str, keep: float | None
    ) -> Response:
        """An empty prompt: load the model (or unload it, ``keep_alive: 0``) and say so."""
        reason = "load"
        if route.kind == "local":
            supervisor = self.services.supervisor
            if keep == 0:
                reason = "unload"
                self.overrides.set(route.target, None)
                if supervisor.runner(route.target).state in LOADED:
                    await supervisor.unload(route.target)
            else:
                self.overrides.set(route.target, keep)
                await supervisor.load(route.target)
        answer: dict[str, Any] = {"model": name, "created_at": _now()}
        if kind == "chat":
            answer["message"] = {"role": "assistant", "content": ""}
        else:
            answer["response"] = ""
        answer.update(done=True, done_reason=reason)
        return json_response(200, answer)

    # ------------------------------------------------------------------ embeddings

    async def embed(self) -> Response:
        timing = Timing(started=trio.current_time())
        body = await self._body()
        route = self._resolve(body)
        keep = self._keep_alive(body)
        _, _, stream = await self._send(route, embed_request(body), keep, timing)
        answer = _parse(await _read(stream))
        timing.ended = trio.current_time()
        return json_response(200, ollama_answer.embed_answer(answer, str(body["model"]), timing))

    async def embeddings(self) -> Response:
        body = await self._body()
        route = self._resolve(body)
        keep = self._keep_alive(body)
        timing = Timing(started=trio.current_time())
        _, _, stream = await self._send(route, embeddings_request(body), keep, timing)
        return json_response(200, ollama_answer.embeddings_answer(_parse(await _read(stream))))

    # ------------------------------------------------------------------ models

    async def tags(self) -> Response:
        config = self.services.config
        started = dt.datetime.fromtimestamp(self.services.started_at, dt.UTC)
        models = [
            ollama_models.tag_entry(r["id"], config.models.get(r["id"]), started)
            for r in scopes.in_scope(self.services, model_list(self.services))
        ]
        return json_response(200, {"models": models})

    async def show(self) -> Response:
        body = await self._body()
        route = self._resolve(body)
        spec = self.services.config.models.get(route.target) if route.kind == "local" else None
        started = dt.datetime.fromtimestamp(self.services.started_at, dt.UTC)
        return json_response(200, ollama_models.show_answer(route.requested, spec, started))

    async def ps(self) -> Response:
        now, wall = trio.current_time(), dt.datetime.now(dt.UTC)
        models = []
        for stat in self.services.supervisor.statistics():
            spec = self.services.config.models.get(stat.model)
            if stat.state not in LOADED or spec is None:
                continue
            if not scopes.visible(scopes.current(), [stat.model, *spec.aliases]):
                continue  # a scoped key sees only its own models
            configured = ttl = self.overrides.ttl(stat.model, float(max(spec.ttl, 0)))
            expires = ollama_models.expires_at(
                stat,
                configured,
                ttl,
                last_answer=self.last_answer.get(stat.model),
                now=now,
                wall=wall,
            )
            models.append(ollama_models.ps_entry(stat.model, spec, expires))
        return json_response(200, {"models": models})

    async def manage(self) -> Response:
        return error(501, MANAGE_MESSAGE)


LOADED = ollama_models.LOADED


async def _read(stream: AsyncIterator[bytes]) -> bytes:
    async with aclosing(stream) as body:  # type: ignore[type-var]
        return b"".join([chunk async for chunk in body])


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except ValueError:
        raise OllamaError(502, "the upstream's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise OllamaError(502, "the upstream's answer is not a JSON object")
    return answer


async def _ndjson(
    stream: AsyncIterator[bytes], translator: StreamTranslator, timing: Timing
) -> AsyncIterator[bytes]:
    """Upstream SSE → Ollama NDJSON, one line per event as it arrives; an upstream error
    (or a cut stream) becomes an ``{"error": ...}`` line, which Ollama clients raise."""
    decoder = ollama_answer.SseDecoder()
    try:
        async with aclosing(stream) as body:  # type: ignore[type-var]
            async for chunk in body:
                if timing.first is None:
                    timing.first = trio.current_time()
                for payload in decoder.feed(chunk):
                    for line in translator.event(payload):
                        yield _line(line)
        for payload in decoder.close():
            for line in translator.event(payload):
                yield _line(line)
        timing.ended = trio.current_time()
        for line in translator.finish(timing):
            yield _line(line)
    except ValueError as exc:
        yield _line({"error": str(exc)})


def _default_keep_alive() -> float | None:
    value = os.environ.get(KEEP_ALIVE_ENV, "").strip()
    if not value:
        return None
    try:
        return parse_keep_alive(value)
    except ValueError as exc:
        log.warning("ignoring %s=%r: %s", KEEP_ALIVE_ENV, value, exc)
        return None


def register(app: Quart, services: Services) -> None:
    """Register the routes on a blueprint, so its error handlers answer in Ollama's shape
    also for what fails before a handler runs (a missing API key) or while Quart reads the
    body (too large)."""
    routes = OllamaRoutes(services, _default_keep_alive())
    blueprint = Blueprint("ollama", __name__)
    blueprint.register_error_handler(SwapdError, guard_error)
    blueprint.register_error_handler(HTTPException, http_error)
    for path, handler, method in (
        ("/api/tags", routes.tags, "GET"),
        ("/api/ps", routes.ps, "GET"),
        ("/api/show", routes.show, "POST"),
        ("/api/chat", routes.chat, "POST"),
        ("/api/generate", routes.generate, "POST"),
        ("/api/embed", routes.embed, "POST"),
        ("/api/embeddings", routes.embeddings, "POST"),
    ):
        blueprint.add_url_rule(path, path, ollama_errors(handler), methods=[method])
    manage = ollama_errors(routes.manage)
    for path in ("/api/pull", "/api/push", "/api/create", "/api/copy"):
        blueprint.add_url_rule(path, path, manage, methods=["POST"])
    blueprint.add_url_rule("/api/delete", "/api/delete", manage, methods=["DELETE"])
    blueprint.add_url_rule(
        "/api/blobs/<path:digest>", "blobs", _blobs(manage), methods=["HEAD", "POST"]
    )
    app.register_blueprint(blueprint)


def _blobs(manage: Callable[[], Awaitable[Response]]) -> Callable[[str], Awaitable[Response]]:
    async def blobs(digest: str) -> Response:
        return await manage()

    return blobs
