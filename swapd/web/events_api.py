"""The live event feed: ``GET /api/events`` (SSE) and ``GET /api/events/ws`` (WebSocket).

Both carry the same messages in llama-swap's envelope, ``{"type": T, "data": "<JSON
text>"}`` (the inner data is JSON serialised to a string). SSE frames each as
``event:message`` / ``data:<envelope>``; the WebSocket sends each envelope as one text
message (a browser may pass the API key as ``?api_key=``, having no way to set headers).

Types: ``modelStatus`` (every model with its state, then peers' models; swapd adds
``group``, ``ttl``, ``idleDeadline``, ``pid``, ``port``, ``inFlight``, ``waiting``,
``lastError``, ``sleepable``, ``crashes``, ``gaveUp`` for the UI), ``logData`` (proxy
and upstream log text), ``metrics`` (token-metrics records), ``inflight``
(``{"total"}``); swapd's own: ``configReload`` (``{"state": "start", "trigger"}``, then
``{"state": "end", "ok", "error", "added", "removed", "changed", "updated",
"unchanged", ...}`` and a fresh ``modelStatus``), ``modelPreloaded`` (``{"model",
"success", "error"}``) and ``modelRestart`` (``{"model", "state": "scheduled"|"gaveUp",
"crashes", "delay", "error"}``).

On connect: the log histories, the model list, all stored metrics, the in-flight count;
then live changes: every state change at once; request counts change with every
request, so those refreshes are coalesced to at most four a second. SSE sends a
``: keep-alive`` comment after 15 s of silence. A client too slow to keep up (its
bounded queue overflows) is disconnected rather than fed a gap (WebSocket close code
1013); it reconnects and gets a fresh snapshot. Both streams end when swapd starts
shutting down.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from quart import Quart, Response, websocket

from swapd.core.events import (
    KvCacheDeleted,
    KvCacheFailed,
    KvCacheRestored,
    KvCacheSaved,
    ModelPreloaded,
    ModelRestart,
    ModelStateChanged,
    RequestQueued,
    RequestsChanged,
    ShuttingDown,
)
from swapd.observe.bus import Subscription
from swapd.observe.logs import PROXY, UPSTREAM
from swapd.observe.telemetry import MetricsRecorded
from swapd.reload import ConfigReloaded, ConfigReloadStarted
from swapd.supervise.supervisor import ModelStatistics
from swapd.web.app import Services

__all__ = ["model_status", "register"]

EVENT_QUEUE = 512  # events a client may fall behind by before it is disconnected
KEEP_ALIVE = 15.0
REFRESH_INTERVAL = 0.25  # at most this often a status refresh for request counts
_REFRESH = "refresh"  # queue marker: send modelStatus + inflight, computed when sent

Message = tuple[str, object]


def _envelope(kind: str, data: object) -> str:
    inner = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return json.dumps({"type": kind, "data": inner}, ensure_ascii=False, separators=(",", ":"))


def _sse(kind: str, data: object) -> bytes:
    return b"event:message\ndata:" + _envelope(kind, data).encode() + b"\n\n"


def _status(services: Services) -> list[Message]:
    """``modelStatus`` and ``inflight`` from one reading of the supervisor."""
    stats = services.supervisor.statistics()
    total = sum(s.in_flight for s in stats)
    return [("modelStatus", model_status(services, stats)), ("inflight", {"total": total})]


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


class _Feed:
    """One client's view: the snapshot it starts from and the queue of what follows."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.queue: Subscription[Message] = Subscription(EVENT_QUEUE)
        self._refresh_queued = False
        self._last_refresh = -math.inf

    def status(self) -> list[Message]:
        return _status(self._services)

    def on_bus(self, event: object) -> None:
        put = self.queue.put
        if isinstance(event, ModelStateChanged):
            # every state is shown, in order: computed now, not coalesced
            for message in self.status():
                put(message)
        elif isinstance(event, RequestQueued | RequestsChanged):
            self._refresh()
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
            | KvCacheSaved
            | KvCacheRestored
            | KvCacheFailed
            | KvCacheDeleted,
        ):
            put((event.kind, event.as_json()))
        elif isinstance(event, ShuttingDown):
            self.queue.close()

    def on_log(self, source: str) -> Callable[[bytes], None]:
        return lambda data: self.queue.put(
            ("logData", {"data": data.decode("utf-8", "replace"), "source": source})
        )

    def _refresh(self) -> None:
        if not self._refresh_queued:
            self._refresh_queued = True
            self.queue.put((_REFRESH, None))

    async def next(self) -> list[Message]:
        """The next messages; raises trio.EndOfChannel when the feed ends."""
        kind, data = await self.queue.receive()
        if kind != _REFRESH:
            return [(kind, data)]
        # A state change is sent at once; a burst of request-count changes waits a little
        # and goes out as one refresh (the marker stays queued, so later ones join it).
        await trio.sleep_until(self._last_refresh + REFRESH_INTERVAL)
        self._refresh_queued = False
        self._last_refresh = trio.current_time()
        return self.status()


@contextmanager
def _open_feed(services: Services) -> Iterator[tuple[list[Message], _Feed]]:
    feed = _Feed(services)
    logs = services.telemetry.logs
    with (
        services.bus.watch(feed.on_bus),
        logs.watch(PROXY, feed.on_log(PROXY)),
        logs.watch(UPSTREAM, feed.on_log(UPSTREAM)),
    ):
        # Taken with no checkpoint after the watchers are in place: the live events that
        # follow continue the snapshot without a gap.
        history = {
            name: logs.history(name).decode("utf-8", "replace") for name in (PROXY, UPSTREAM)
        }
        status, inflight = _status(services)
        snapshot: list[Message] = [
            ("logData", {"data": history[PROXY], "source": PROXY}),
            ("logData", {"data": history[UPSTREAM], "source": UPSTREAM}),
            status,
            ("metrics", [r.as_json() for r in services.telemetry.store.records()]),
            inflight,
        ]
        if services.supervisor.closing:
            feed.queue.close()
        yield snapshot, feed


def register(app: Quart, services: Services) -> None:
    async def events() -> Response:
        async def body() -> AsyncIterator[bytes]:
            with _open_feed(services) as (snapshot, feed):
                yield b"".join(_sse(kind, data) for kind, data in snapshot)
                while True:
                    with trio.move_on_after(KEEP_ALIVE) as idle:
                        try:
                            messages = await feed.next()
                        except trio.EndOfChannel:
                            return  # swapd is shutting down
                    if idle.cancelled_caught:
                        yield b": keep-alive\n\n"
                        continue
                    if feed.queue.dropped:
                        return  # fell behind: the client reconnects and gets a snapshot
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

    async def events_ws() -> None:
        await websocket.accept()
        with _open_feed(services) as (snapshot, feed):
            for kind, data in snapshot:
                await websocket.send(_envelope(kind, data))
            while True:
                try:
                    messages = await feed.next()
                except trio.EndOfChannel:
                    await websocket.close(1001, "swapd is shutting down")
                    return
                if feed.queue.dropped:
                    await websocket.close(1013, "too slow: reconnect for a fresh snapshot")
                    return
                for kind, data in messages:
                    await websocket.send(_envelope(kind, data))

    app.add_url_rule("/api/events", "events", events, methods=["GET"])
    app.add_websocket("/api/events/ws", "events-ws", events_ws)
