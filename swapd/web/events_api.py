"""The live event feed: ``GET /api/events`` (SSE) and ``GET /api/events/ws`` (WebSocket).

Both carry the same messages in llama-swap's envelope, ``{"type": T, "data": "<JSON
text>"}`` (the inner data is JSON serialised to a string). SSE frames each as
``event:message`` / ``data:<envelope>``; the WebSocket sends each envelope as one text
message (a browser may pass the API key as ``?api_key=``, having no way to set headers).

Types: ``modelStatus`` (every model with its state, then peers' models; swapd adds
``aliases``, ``group``, ``ttl``, ``idleDeadline``, ``pid``, ``port``, ``inFlight``, ``waiting``,
``lastError``, ``sleepable``, ``crashes``, ``gaveUp`` for the UI), ``logData`` (proxy
and upstream log text), ``metrics`` (token-metrics records), ``inflight`` (llama-swap
v250's operations: ``{"operation": "snapshot", "requests": [...]}``, then ``upsert`` with
one ``request`` and ``remove`` with its ``id``; ``observe.inflight``), ``activity``
(``{"id"}`` of each new activity row, once it can be read from ``/api/metrics/activity``;
llama-swap v250 sends it instead of ``metrics``, swapd sends both); swapd's own:
``memory`` (with memory budgets: ``{"devices": {"ram": {"budget", "held", "budgetFree",
"total", "used", "free"}, ...}}`` when it changed, at most once a second, and in the
snapshot on connect; ``supervise/memory_report.py``; ``modelStatus`` entries then carry
each model's ``footprint`` too), ``configReload`` (``{"state": "start", "trigger"}``, then
``{"state": "end", "ok", "error", "added", "removed", "changed", "updated",
"unchanged", ...}`` and a fresh ``modelStatus``), ``modelPreloaded`` (``{"model",
"success", "error"}``), ``modelRestart`` (``{"model", "state": "scheduled"|"gaveUp",
"crashes", "delay", "error"}``) and ``loadProgress`` (a loading model's stage, percent and
ETA: ``swapd.core.events.LoadProgressed``).

On connect: the log histories, the model list, all stored metrics, the in-flight snapshot;
then live changes, in the order they happened: every state change at once; request
counts change with every request, so those refreshes are coalesced to at most four a
second. A client holds at most one unsent ``modelStatus`` of a state change: if another
change comes before it was sent, the pending one is replaced by the newer (in its place
in the queue), so a client that reads slowly skips intermediate states but never sees
an older state after a newer one, and an idle client costs one status, not one per
change (the status is computed once per change and shared by all clients). SSE sends a
``: keep-alive`` comment after 15 s of silence. A client too slow to keep up (its
bounded queue overflows) is disconnected rather than fed a gap (WebSocket close code
1013); it reconnects and gets a fresh snapshot. Both streams end when swapd starts
shutting down, and when a reload revokes the key they were opened with (WebSocket
close code 1008; see ``revocation.py``).

An API key limited to some models (not admin; docs/keys.md) gets the same feed filtered
to its models (``scope_filters.FeedFilter``): their ``modelStatus`` entries, load progress,
restarts, KV cache events, metrics, activity and in-flight requests; as ``logData`` only
its models' own output under ``upstream`` (never swapd's ``proxy`` log); ``configReload``
without the lists of model names.

The WebSocket takes nothing from the client: whatever it sends is read and thrown away
at once (so a close is always noticed and nothing piles up), and a message larger than
the server's limit (``server.WEBSOCKET_MAX_MESSAGE``) closes the connection (1009). A
handshake from a foreign ``Origin`` is refused with 403 (``cors.origin_allowed``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from quart import Quart, Response, request, websocket

from swapd.core.capabilities import capability_fields
from swapd.core.events import (
    KvCacheDeleted,
    KvCacheFailed,
    KvCacheRestored,
    KvCacheSaved,
    LoadProgressed,
    ModelPreloaded,
    ModelRestart,
    ModelStateChanged,
    RequestQueued,
    RequestsChanged,
    ShuttingDown,
)
from swapd.observe.bus import Subscription
from swapd.observe.inflight import InflightChanged
from swapd.observe.logs import PROXY, UPSTREAM
from swapd.observe.telemetry import ActivityRecorded, MetricsRecorded
from swapd.reload import ConfigReloaded, ConfigReloadStarted
from swapd.supervise.memory_report import MemoryReported
from swapd.supervise.supervisor import ModelStatistics
from swapd.web import cors, problems
from swapd.web.admin_api import footprint_json
from swapd.web.app import Services, json_response
from swapd.web.profiles_api import ProfileChanged
from swapd.web.revocation import credentials_of, ended_when_revoked
from swapd.web.scope_filters import FeedFilter, View, view_of

__all__ = ["model_status", "register"]

EVENT_QUEUE = 512  # events a client may fall behind by before it is disconnected
KEEP_ALIVE = 15.0
REFRESH_INTERVAL = 0.25  # at most this often a status refresh for request counts
_REFRESH = "refresh"  # queue marker: send modelStatus, computed when sent
_CHANGED = "changed"  # queue marker: send the feed's pending state-change status

Message = tuple[str, object]


def _envelope(kind: str, data: object) -> str:
    inner = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return json.dumps({"type": kind, "data": inner}, ensure_ascii=False, separators=(",", ":"))


def _sse(kind: str, data: object) -> bytes:
    return b"event:message\ndata:" + _envelope(kind, data).encode() + b"\n\n"


def _status(services: Services) -> list[Message]:
    """``modelStatus`` from one reading of the supervisor."""
    return [("modelStatus", model_status(services, services.supervisor.statistics()))]


def model_status(
    services: Services, statistics: list[ModelStatistics] | None = None
) -> list[dict[str, Any]]:
    """Every local model (sorted by ID, unlisted included), then peers' models."""
    if statistics is None:
        statistics = services.supervisor.statistics()
    stats = {s.model: s for s in statistics}
    to_epoch = time.time() - trio.current_time()
    entries: list[dict[str, Any]] = []
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
                "aliases": [alias.strip() for alias in spec.aliases if alias.strip()],
                "group": stat.group,
                "ttl": max(spec.ttl, 0),
                "idleDeadline": None if deadline is None else round(deadline + to_epoch, 3),
                "pid": stat.pid,
                "port": port,
                "inFlight": stat.in_flight,
                "waiting": stat.waiting,
                "lastError": stat.last_error,
                "sleepable": spec.sleep_enabled,
                "crashes": stat.crashes,
                "gaveUp": stat.gave_up,
                **capability_fields(spec.capabilities),  # as in /v1/models (v225)
                "footprint": footprint_json(services.supervisor, model_id),
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


class _SharedStatus:
    """The ``modelStatus`` of one state change, computed once for every
    feed (each feed's watcher sees the same event object, one after the other)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._event: object = None
        self._messages: list[Message] = []

    def of(self, event: ModelStateChanged) -> list[Message]:
        if event is not self._event:
            self._event, self._messages = event, _status(self._services)
        return self._messages


class _Feed:
    """One client's view: the snapshot it starts from and the queue of what follows."""

    def __init__(self, services: Services, shared: _SharedStatus, view: View) -> None:
        self._services = services
        self._shared = shared
        self.filter = FeedFilter(view)  # what the feed's API key may see (scope_filters)
        self.queue: Subscription[Message] = Subscription(EVENT_QUEUE)
        self._changed: list[Message] | None = None  # the unsent status of a state change
        self._refresh_queued = False
        self._last_refresh = -math.inf
        self.revoked = False

    def status(self) -> list[Message]:
        return _status(self._services)

    def on_bus(self, event: object) -> None:
        put = self.queue.put
        if isinstance(event, ModelStateChanged):
            # Sent at once, as it was at this change; if the previous one is still
            # queued, this newer one takes its place (an idle client holds one).
            if self._changed is None:
                put((_CHANGED, None))
            self._changed = self._shared.of(event)
        elif isinstance(event, RequestQueued | RequestsChanged):
            self._refresh()
        elif isinstance(event, InflightChanged):
            put(("inflight", event.as_json()))
        elif isinstance(event, ActivityRecorded):
            if self.filter.view.shows(event.model):
                put(("activity", {"id": event.id}))
        elif isinstance(event, MetricsRecorded):
            put(("metrics", [event.record.as_json()]))
        elif isinstance(event, ConfigReloadStarted):
            put(("configReload", {"state": "start", "trigger": event.trigger}))
        elif isinstance(event, ConfigReloaded):
            put(("configReload", {"state": "end", **event.result.as_json()}))
            self._refresh()
        elif isinstance(
            event,
            ModelPreloaded
            | ModelRestart
            | ProfileChanged
            | LoadProgressed
            | KvCacheSaved
            | KvCacheRestored
            | KvCacheFailed
            | KvCacheDeleted
            | MemoryReported,
        ):
            put((event.kind, event.as_json()))
        elif isinstance(event, ShuttingDown):
            self.queue.close()

    def revoke(self) -> None:
        """The key this feed was opened with is no longer valid: end it, sending nothing
        more."""
        self.revoked = True
        self.queue.close(discard=True)

    def on_log(self, source: str) -> Callable[[bytes], None]:
        return lambda data: self.queue.put(
            ("logData", {"data": data.decode("utf-8", "replace"), "source": source})
        )

    def _refresh(self) -> None:
        if not self._refresh_queued:
            self._refresh_queued = True
            self.queue.put((_REFRESH, None))

    def shown(self, messages: list[Message]) -> list[Message]:
        """``messages`` as the feed's API key may see them."""
        if self.filter.view.everything:
            return messages
        kept = ((kind, self.filter.apply(kind, data)) for kind, data in messages)
        return [(kind, data) for kind, data in kept if data is not None]

    async def next(self) -> list[Message]:
        """The next messages (possibly none), as the feed's API key may see them; raises
        trio.EndOfChannel when the feed ends."""
        return self.shown(await self._next())

    async def _next(self) -> list[Message]:
        kind, data = await self.queue.receive()
        if kind == _CHANGED:
            changed, self._changed = self._changed, None
            return changed or []  # none: its marker was dropped (the client is cut anyway)
        if kind != _REFRESH:
            return [(kind, data)]
        # A state change is sent at once; a burst of request-count changes waits a little
        # and goes out as one refresh (the marker stays queued, so later ones join it).
        await trio.sleep_until(self._last_refresh + REFRESH_INTERVAL)
        self._refresh_queued = False
        self._last_refresh = trio.current_time()
        # Computed now, so newer than any pending state-change status: that one must not
        # follow it (its marker, still queued, then sends nothing).
        self._changed = None
        return self.status()


@contextmanager
def _open_feed(
    services: Services,
    shared: _SharedStatus,
    credentials: list[tuple[str, str]],
    view: View = View(),  # noqa: B008 - frozen, shared safely: the everything-view
) -> Iterator[tuple[list[Message], _Feed]]:
    feed = _Feed(services, shared, view)
    logs = services.telemetry.logs
    with ExitStack() as stack:
        stack.enter_context(ended_when_revoked(services, credentials, feed.revoke))
        stack.enter_context(services.bus.watch(feed.on_bus))
        log_data: list[Message] = []
        # Taken with no checkpoint after each watcher is in place: the live events that
        # follow continue the snapshot without a gap.
        if view.everything:
            for name in (PROXY, UPSTREAM):
                stack.enter_context(logs.watch(name, feed.on_log(name)))
                log_data.append(("logData", {"data": _history(services, name), "source": name}))
        else:
            # A key limited to some models: no proxy log (swapd's own, about every model);
            # as the upstream log, only its models' own output.
            shown = [m for m in logs.model_ids if view.shows(m)]
            for model_id in shown:
                stack.enter_context(logs.watch(model_id, feed.on_log(UPSTREAM)))
            text = "".join(_history(services, m) for m in shown)
            log_data.append(("logData", {"data": text, "source": UPSTREAM}))
        [status] = _status(services)
        inflight = services.telemetry.inflight.snapshot()
        snapshot: list[Message] = [
            *log_data,
            status,
            ("metrics", [r.as_json() for r in services.telemetry.store.records()]),
            ("inflight", {"operation": "snapshot", "requests": inflight}),
            *_memory_snapshot(services),
        ]
        if services.supervisor.closing:
            feed.queue.close()
        yield feed.shown(snapshot), feed


def _history(services: Services, name: str) -> str:
    return services.telemetry.logs.history(name).decode("utf-8", "replace")


def _memory_snapshot(services: Services) -> list[Message]:
    """The last ``memory`` report (each device's budget and use), if budgets are set."""
    report = services.supervisor.memory_report
    return [] if report is None else [("memory", MemoryReported(devices=report).as_json())]


async def _discard_incoming() -> None:
    """Read and drop whatever the client sends. Unread messages would fill the server's
    queues until it stops reading the socket, and then it never sees the client's close
    either: the connection and its subscriber would stay forever."""
    while True:
        await websocket.receive()


def _refuse_foreign_origin() -> Response | None:
    origin = websocket.headers.get("origin")
    if cors.origin_allowed(origin, cors.addressed_hosts(websocket.headers.items())):
        return None
    message = "forbidden: this origin may not open the event WebSocket"
    return json_response(403, problems.openai_error(403, message))


def register(app: Quart, services: Services) -> None:
    shared = _SharedStatus(services)

    async def events() -> Response:
        credentials = credentials_of(request.headers.items())
        view = view_of(services)  # here: the body may run outside the request's context

        async def body() -> AsyncIterator[bytes]:
            with _open_feed(services, shared, credentials, view) as (snapshot, feed):
                yield b"".join(_sse(kind, data) for kind, data in snapshot)
                while True:
                    with trio.move_on_after(KEEP_ALIVE) as idle:
                        try:
                            messages = await feed.next()
                        except trio.EndOfChannel:
                            return  # swapd is shutting down, or the key was revoked
                    if idle.cancelled_caught:
                        yield b": keep-alive\n\n"
                        continue
                    if feed.queue.dropped:
                        return  # fell behind: the client reconnects and gets a snapshot
                    if messages:
                        yield b"".join(_sse(kind, data) for kind, data in messages)

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

    async def events_ws() -> Response | None:
        refused = _refuse_foreign_origin()
        if refused is not None:
            return refused
        headers = list(websocket.headers.items())
        if "api_key" in websocket.args:
            headers.append(("x-api-key", websocket.args["api_key"]))
        credentials = credentials_of(headers)
        view = view_of(services)
        await websocket.accept()
        with _open_feed(services, shared, credentials, view) as (snapshot, feed):
            async with trio.open_nursery() as nursery:
                # The client's close, seen by the reader, cancels the whole connection.
                nursery.start_soon(_discard_incoming)
                await _send_feed(snapshot, feed)
                nursery.cancel_scope.cancel()
        return None

    app.add_url_rule("/api/events", "events", events, methods=["GET"])
    app.add_websocket("/api/events/ws", "events-ws", events_ws)


async def _send_feed(snapshot: list[Message], feed: _Feed) -> None:
    """The WebSocket's sending side: the snapshot, then the feed until it ends."""
    for kind, data in snapshot:
        await websocket.send(_envelope(kind, data))
    while True:
        try:
            messages = await feed.next()
        except trio.EndOfChannel:
            if feed.revoked:
                await websocket.close(1008, "the API key was revoked")
            else:
                await websocket.close(1001, "swapd is shutting down")
            return
        if feed.queue.dropped:
            await websocket.close(1013, "too slow: reconnect for a fresh snapshot")
            return
        for kind, data in messages:
            await websocket.send(_envelope(kind, data))
