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
  fresh ``modelStatus``) and ``modelPreloaded`` (``{"model", "success", "error"}``).
  On connect: the log histories, the model list, all stored metrics, the in-flight count; then live
  changes, and a ``: keep-alive`` comment every 15 s of silence. A client too slow to
  keep up (its bounded queue overflows) is disconnected rather than fed a gap; it
  reconnects and starts from a fresh snapshot.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Quart, Response, redirect, request
from werkzeug.wrappers.response import Response as Redirect

from swapd.core.events import ModelPreloaded, ModelStateChanged
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


def _sse(kind: str, data: object) -> bytes:
    """llama-swap's framing: the inner data is JSON text inside a JSON string."""
    inner = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    outer = json.dumps({"type": kind, "data": inner}, ensure_ascii=False, separators=(",", ":"))
    return b"event:message\ndata:" + outer.encode() + b"\n\n"


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

    async def events() -> Response:
        queue: Subscription[bytes] = Subscription(EVENT_QUEUE)

        def on_bus(event: object) -> None:
            if isinstance(event, ModelStateChanged):
                queue.put(_sse("modelStatus", model_status()))
                queue.put(_sse("inflight", in_flight()))
            elif isinstance(event, MetricsRecorded):
                queue.put(_sse("metrics", [event.record.as_json()]))
                queue.put(_sse("inflight", in_flight()))
            elif isinstance(event, ConfigReloadStarted):
                queue.put(_sse("configReload", {"state": "start", "trigger": event.trigger}))
            elif isinstance(event, ConfigReloaded):
                queue.put(_sse("configReload", {"state": "end", **event.result.as_json()}))
                queue.put(_sse("modelStatus", model_status()))
            elif isinstance(event, ModelPreloaded):
                queue.put(_sse("modelPreloaded", event.as_json()))

        def on_log(source: str) -> Any:
            return lambda data: queue.put(
                _sse("logData", {"data": data.decode("utf-8", "replace"), "source": source})
            )

        async def body() -> AsyncIterator[bytes]:
            logs = telemetry.logs
            with (
                services.bus.watch(on_bus),
                logs.watch(PROXY, on_log(PROXY)),
                logs.watch(UPSTREAM, on_log(UPSTREAM)),
            ):
                # The snapshot is taken with no checkpoint after the watchers are in
                # place, so the live events that follow continue it without a gap.
                yield b"".join(
                    [
                        _sse(
                            "logData",
                            {
                                "data": logs.history(PROXY).decode("utf-8", "replace"),
                                "source": PROXY,
                            },
                        ),
                        _sse(
                            "logData",
                            {
                                "data": logs.history(UPSTREAM).decode("utf-8", "replace"),
                                "source": UPSTREAM,
                            },
                        ),
                        _sse("modelStatus", model_status()),
                        _sse("metrics", [r.as_json() for r in telemetry.store.records()]),
                        _sse("inflight", in_flight()),
                    ]
                )
                while True:
                    with trio.move_on_after(KEEP_ALIVE) as idle:
                        item = await queue.receive()
                    if idle.cancelled_caught:
                        yield b": keep-alive\n\n"
                        continue
                    if queue.dropped:
                        return  # fell behind: the client reconnects and gets a snapshot
                    yield item

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

    app.add_url_rule("/api/events", "events", events, methods=["GET"])
    app.add_url_rule("/api/metrics", "token-metrics", token_metrics, methods=["GET"])
    app.add_url_rule("/api/captures/<capture_id>", "capture", capture, methods=["GET"])
    app.add_url_rule("/metrics", "prometheus", prometheus, methods=["GET"])
    app.add_url_rule("/logs", "logs", logs, methods=["GET"])
    app.add_url_rule("/logs/stream", "logs-stream", stream, methods=["GET"])
    app.add_url_rule("/logs/stream/<path:name>", "logs-stream-named", stream, methods=["GET"])
