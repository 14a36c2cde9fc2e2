"""Observability routes: token metrics, Prometheus, logs.

- ``GET /api/metrics``: stored token-metrics records, oldest first (``[]`` when none).
- ``GET /api/captures/<id>``: the request/response capture of metrics record ``id``
  (``captureBuffer`` > 0): headers (credentials redacted), bodies base64, the response
  body decompressed. 400 for a non-numeric ID, 404 when not (or no longer) kept.
- ``GET /metrics``: Prometheus text exposition (per-model state, requests, tokens,
  speeds, swaps and their durations, queue depth, crashes).
- ``GET /logs``: the terminal's log history as text (browsers are sent to the UI).
- ``GET /logs/stream[/<name>]``: the same, then live, as a never-ending text stream;
  ``<name>`` is ``proxy``, ``upstream`` or a model ID or alias; ``?no-history`` skips
  the history.
- ``GET /api/events``: server-sent events in llama-swap's framing
  (``event:message`` / ``data:{"type": T, "data": "<JSON text>"}``) with types
  ``modelStatus`` (every model and its state), ``logData`` (proxy and upstream log
  text), ``metrics`` (token-metrics records) and ``inflight``; swapd adds
  ``configReload`` (``{"state": "start", "trigger"}``, then ``{"state": "end", "ok",
  "error", "added", "removed", "changed", "updated", "unchanged", ...}``, followed by a
  fresh ``modelStatus``), ``modelPreloaded`` (``{"model", "success", "error"}``) and
  ``modelRestart`` (a kept model crashed: ``{"model", "state": "scheduled"|"gaveUp",
  "crashes", "delay", "error"}``).
  On connect: the log histories, the model list, all stored metrics, the in-flight count; then live
  changes, and a ``: keep-alive`` comment every 15 s of silence. A client too slow to
  keep up (its bounded queue overflows) is disconnected rather than fed a gap; it
  reconnects and starts from a fresh snapshot.
- ``GET /api/events/ws``: the same feed over a WebSocket, one text message per event
  (the JSON envelope of an SSE ``data:`` line). The API key may be given as
  ``?api_key=`` since browsers cannot set headers on a WebSocket.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import trio
from quart import Quart, Response, redirect, request, websocket
from werkzeug.wrappers.response import Response as Redirect

from swapd.core.events import ModelPreloaded, ModelRestart, ModelStateChanged
from swapd.errors import BadRequest
from swapd.observe.bus import Subscription
from swapd.observe.logs import MUX, PROXY, UPSTREAM
from swapd.observe.metrics import render_prometheus
from swapd.observe.telemetry import MetricsRecorded
from swapd.reload import ConfigReloaded, ConfigReloadStarted
from swapd.web import problems
from swapd.web.app import Services, json_response

__all__ = ["register"]

_STREAM_HEADERS = {
    "content-type": "text/plain; charset=utf-8",
    "x-content-type-options": "nosniff",
    "x-accel-buffering": "no",
    "cache-control": "no-cache",
}


EVENT_QUEUE = 512  # events a client may fall behind by before it is disconnected
KEEP_ALIVE = 15.0


def _envelope(kind: str, data: object) -> str:
    """llama-swap's envelope: the inner data is JSON text inside a JSON string."""
    inner = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return json.dumps({"type": kind, "data": inner}, ensure_ascii=False, separators=(",", ":"))


def _sse(kind: str, data: object) -> bytes:
    return b"event:message\ndata:" + _envelope(kind, data).encode() + b"\n\n"


def register(app: Quart, services: Services) -> None:
    telemetry = services.telemetry

    async def token_metrics() -> Response:
        return json_response(200, [r.as_json() for r in telemetry.store.records()])

    async def capture(capture_id: str) -> Response:
        if not capture_id.isdigit():
            return json_response(400, problems.openai_error(400, "invalid capture ID"))
        found = telemetry.captures.get(int(capture_id))
        if found is None:
            return json_response(404, problems.openai_error(404, "capture not found"))
        return json_response(200, found.as_json())

    async def prometheus() -> Response:
        for stat in services.supervisor.statistics():
            telemetry.prometheus.set_queue_depth(stat.model, stat.waiting)
        text = render_prometheus(telemetry.prometheus.families())
        return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def logs() -> Response | Redirect:
        if "text/html" in request.headers.get("accept", ""):
            return redirect("/ui/", 302)
        return Response(telemetry.logs.history(MUX), content_type="text/plain; charset=utf-8")

    def log_name(name: str) -> str:
        if name in ("", PROXY, UPSTREAM):
            return name or MUX
        model_id = services.router.resolve_local(name)
        if model_id is None:
            raise BadRequest("invalid logger. Use 'proxy', 'upstream' or a model's ID")
        return model_id

    async def stream(name: str = "") -> Response:
        target = log_name(name)
        with_history = "no-history" not in request.args

        async def body() -> AsyncIterator[bytes]:
            with telemetry.logs.subscribe(target, maxlen=256) as sub:
                # subscribe() and history() with no checkpoint between: nothing is lost
                # or sent twice
                history = telemetry.logs.history(target) if with_history else b""
                if history:
                    yield history
                async for chunk in sub:
                    yield chunk

        response = Response(body(), headers=_STREAM_HEADERS)
        response.timeout = None
        return response

    def model_status() -> list[dict[str, Any]]:
        """llama-swap's fields, then swapd's for the UI: ``group``, ``ttl`` (seconds, 0:
        never), ``idleDeadline`` (epoch seconds when TTL unloads the idle model, else
        null), ``pid``, ``port``, ``inFlight``, ``waiting``, ``lastError``, ``sleepable``."""
        import time
        from urllib.parse import urlsplit

        stats = {s.model: s for s in services.supervisor.statistics()}
        to_epoch = time.time() - trio.current_time()
        entries = []
        for model_id in sorted(services.config.models):
            spec = services.config.models[model_id]
            stat = stats[model_id]
            try:
                port = spec.port or urlsplit(spec.proxy).port
            except ValueError:
                port = None
            deadline = stat.idle_deadline
            entries.append(
                {
                    "id": model_id,
                    "name": spec.name,
                    "description": spec.description,
                    "state": stat.state.value,
                    "unlisted": spec.unlisted,
                    "peerID": "",
                    "group": stat.group,
                    "ttl": max(spec.ttl, 0),
                    "idleDeadline": None if deadline is None else round(deadline + to_epoch, 3),
                    "pid": stat.pid,
                    "port": port,
                    "inFlight": stat.in_flight,
                    "waiting": stat.waiting,
                    "lastError": stat.last_error,
                    "sleepable": spec.sleep_enabled,
                }
            )
        for peer_id, peer in sorted(services.config.peers.items()):
            entries.extend(
                {
                    "id": name,
                    "name": "",
                    "description": "",
                    "state": "",
                    "unlisted": False,
                    "peerID": peer_id,
                }
                for name in peer.models
            )
        return entries

    def in_flight() -> dict[str, int]:
        return {"total": sum(s.in_flight for s in services.supervisor.statistics())}

    @contextlib.contextmanager
    def event_feed() -> Iterator[tuple[list[tuple[str, object]], Subscription[tuple[str, object]]]]:
        """The snapshot a new client starts from, and the queue of what follows it."""
        queue: Subscription[tuple[str, object]] = Subscription(EVENT_QUEUE)

        def on_bus(event: object) -> None:
            if isinstance(event, ModelStateChanged):
                queue.put(("modelStatus", model_status()))
                queue.put(("inflight", in_flight()))
            elif isinstance(event, MetricsRecorded):
                queue.put(("metrics", [event.record.as_json()]))
                queue.put(("inflight", in_flight()))
            elif isinstance(event, ConfigReloadStarted):
                queue.put(("configReload", {"state": "start", "trigger": event.trigger}))
            elif isinstance(event, ConfigReloaded):
                queue.put(("configReload", {"state": "end", **event.result.as_json()}))
                queue.put(("modelStatus", model_status()))
            elif isinstance(event, ModelPreloaded | ModelRestart):
                queue.put((event.kind, event.as_json()))

        def on_log(source: str) -> Callable[[bytes], None]:
            return lambda data: queue.put(
                ("logData", {"data": data.decode("utf-8", "replace"), "source": source})
            )

        logs = telemetry.logs
        with (
            services.bus.watch(on_bus),
            logs.watch(PROXY, on_log(PROXY)),
            logs.watch(UPSTREAM, on_log(UPSTREAM)),
        ):
            # The snapshot is taken with no checkpoint after the watchers are in place,
            # so the live events that follow continue it without a gap.
            snapshot: list[tuple[str, object]] = [
                (
                    "logData",
                    {"data": logs.history(PROXY).decode("utf-8", "replace"), "source": PROXY},
                ),
                (
                    "logData",
                    {"data": logs.history(UPSTREAM).decode("utf-8", "replace"), "source": UPSTREAM},
                ),
                ("modelStatus", model_status()),
                ("metrics", [r.as_json() for r in telemetry.store.records()]),
                ("inflight", in_flight()),
            ]
            yield snapshot, queue

    async def events() -> Response:
        async def body() -> AsyncIterator[bytes]:
            with event_feed() as (snapshot, queue):
                yield b"".join(_sse(kind, data) for kind, data in snapshot)
                while True:
                    with trio.move_on_after(KEEP_ALIVE) as idle:
                        kind, data = await queue.receive()
                    if idle.cancelled_caught:
                        yield b": keep-alive\n\n"
                        continue
                    if queue.dropped:
                        return  # fell behind: the client reconnects and gets a snapshot
                    yield _sse(kind, data)

        response = Response(
            body(),
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "x-content-type-options": "nosniff",
                "x-accel-buffering": "no",
            },
        )
        response.timeout = None
        return response

    async def events_ws() -> None:
        """The same feed over a WebSocket: one text message per event, each the JSON
        envelope an SSE ``data:`` line carries. A client too slow to keep up is closed
        with 1013 (try again later)."""
        await websocket.accept()
        with event_feed() as (snapshot, queue):
            for kind, data in snapshot:
                await websocket.send(_envelope(kind, data))
            while True:
                kind, data = await queue.receive()
                if queue.dropped:
                    await websocket.close(1013, "too slow: reconnect for a fresh snapshot")
                    return
                await websocket.send(_envelope(kind, data))

    app.add_url_rule("/api/events", "events", events, methods=["GET"])
    app.add_websocket("/api/events/ws", "events-ws", events_ws)
    app.add_url_rule("/api/metrics", "token-metrics", token_metrics, methods=["GET"])
    app.add_url_rule("/api/captures/<capture_id>", "capture", capture, methods=["GET"])
    app.add_url_rule("/metrics", "prometheus", prometheus, methods=["GET"])
    app.add_url_rule("/logs", "logs", logs, methods=["GET"])
    app.add_url_rule("/logs/stream", "logs-stream", stream, methods=["GET"])
    app.add_url_rule("/logs/stream/<path:name>", "logs-stream-named", stream, methods=["GET"])
