"""Observability routes: token metrics, captures, Prometheus, logs.

- ``GET /api/metrics``: stored token-metrics records, oldest first (``[]`` when none).

A key limited to some models (docs/keys.md) reads the token metrics and ``/metrics`` of
its models only (``scope_filters.View``) and only its models' own logs
(``scopes.check_log``); captures are admin-only (``scopes.check_route``).

- ``GET /api/captures/<id>``: the request/response capture of metrics record ``id``
  (``captureBuffer`` > 0): headers (credentials redacted), bodies base64, the response
  body decompressed. 400 for a non-numeric ID, 404 when not (or no longer) kept.
- ``GET /metrics``: Prometheus text exposition (per-model state, requests, tokens,
  speeds, swaps and their durations, queue depth, crashes).
- ``GET /logs``: the terminal's log history as text (browsers are sent to the UI).
- ``GET /logs/stream[/<name>]``: the same, then live, as a never-ending text stream;
  ``<name>`` is ``proxy``, ``upstream`` or a model ID or alias; ``?no-history`` skips
  the history. The stream ends when a reload revokes the key it was opened with.
- The live event feed (``/api/events``, ``/api/events/ws``) is in ``events_api.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Quart, Response, redirect, request
from werkzeug.wrappers.response import Response as Redirect

from swapd.errors import BadRequest
from swapd.observe.logs import MUX, PROXY, UPSTREAM
from swapd.observe.memory_metrics import memory_families
from swapd.observe.metrics import (
    GaugeFamily,
    MetricFamily,
    render_prometheus,
    resident_family,
    system_families,
)
from swapd.web import problems, scopes
from swapd.web.admin_api import resident_sizes  # the /running measurement, shared
from swapd.web.app import Services, json_response
from swapd.web.revocation import credentials_of, ended_when_revoked
from swapd.web.scope_filters import view_of

__all__ = ["register"]

_STREAM_HEADERS = {
    "content-type": "text/plain; charset=utf-8",
    "x-content-type-options": "nosniff",
    "x-accel-buffering": "no",
    "cache-control": "no-cache",
}


def register(app: Quart, services: Services) -> None:
    telemetry = services.telemetry

    async def token_metrics() -> Response:
        view = view_of(services)
        return json_response(200, view.records(r.as_json() for r in telemetry.store.records()))

    async def capture(capture_id: str) -> Response:
        if not (capture_id.isascii() and capture_id.isdigit()):  # not "²" or "①"
            return json_response(400, problems.openai_error(400, "invalid capture ID"))
        found = telemetry.captures.get(int(capture_id))
        if found is None:
            return json_response(404, problems.openai_error(404, "capture not found"))
        return json_response(200, found.as_json())

    async def prometheus() -> Response:
        for stat in services.supervisor.statistics():
            telemetry.prometheus.set_queue_depth(stat.model, stat.waiting)
        view = view_of(services)  # a key limited to some models: only their series
        text = render_prometheus(
            view.prometheus(
                [
                    *telemetry.prometheus.families(),
                    *memory_gauges(services),
                    *await host_gauges(services),
                    *scopes.key_metrics(services),
                ]
            )
        )
        return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")

    async def logs() -> Response | Redirect:
        if "text/html" in request.headers.get("accept", ""):
            return redirect("/ui/", 302)
        scopes.check_log(services, "mux", None)
        return Response(telemetry.logs.history(MUX), content_type="text/plain; charset=utf-8")

    def log_name(name: str) -> str:
        if name in ("", PROXY, UPSTREAM):
            scopes.check_log(services, name or MUX, None)
            return name or MUX
        model_id = services.router.resolve_local(name)
        if model_id is None:
            raise BadRequest("invalid logger. Use 'proxy', 'upstream' or a model's ID")
        scopes.check_log(services, name, model_id)  # a limited key: its models' logs only
        return model_id

    async def stream(name: str = "") -> Response:
        target = log_name(name)
        with_history = "no-history" not in request.args
        credentials = credentials_of(request.headers.items())

        async def body() -> AsyncIterator[bytes]:
            with (
                telemetry.logs.subscribe(target, maxlen=256) as sub,
                ended_when_revoked(services, credentials, lambda: sub.close(discard=True)),
            ):
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

    app.add_url_rule("/api/metrics", "token-metrics", token_metrics, methods=["GET"])
    app.add_url_rule("/api/captures/<capture_id>", "capture", capture, methods=["GET"])
    app.add_url_rule("/metrics", "prometheus", prometheus, methods=["GET"])
    app.add_url_rule("/logs", "logs", logs, methods=["GET"])
    app.add_url_rule("/logs/stream", "logs-stream", stream, methods=["GET"])
    app.add_url_rule("/logs/stream/<path:name>", "logs-stream-named", stream, methods=["GET"])


def memory_gauges(services: Services) -> list[GaugeFamily]:
    """The memory budget gauges (empty without ``memory.budgets``)."""
    supervisor = services.supervisor
    if not supervisor.budgets:
        return []
    return memory_families(
        supervisor.footprints_now(), supervisor.budgets, supervisor.memory_held()
    )


async def host_gauges(services: Services) -> list[MetricFamily]:
    """Each running model's resident memory and the latest system/GPU sample (hardware_api)."""
    sample, gpus = services.telemetry.performance.latest()
    return [
        resident_family(await resident_sizes(services.supervisor)),
        *system_families(sample, gpus),
    ]
