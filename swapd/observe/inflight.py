"""Requests in flight, as llama-swap v250 lists them, and the handle to cancel one.

The web layer's recorder opens an entry when a model-dispatched request arrives and closes
it when the request is over; in between, the inner layers fill in the model and the
response goes by (headers, bytes). Every change is published on the bus as an
:class:`InflightChanged` (``upsert`` or ``remove``); the live event feed turns them into
llama-swap's ``inflight`` operations, after a ``snapshot`` (:meth:`InflightTracker.snapshot`).
Progress upserts are throttled to one per :data:`UPSERT_INTERVAL` per request.

:meth:`InflightTracker.cancel` cancels the entry's ``cancel_scope``, which the recorder
runs the request in: a request waiting for its model leaves the queue, a running one
closes its upstream connection (the upstream sees the disconnect), and the recorder tells
the client.

IDs are decimal strings counting from ``"1"`` for the life of the process. Header values
of credentials are replaced by ``[REDACTED]``; each header keeps its first value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import attrs
import trio

__all__ = [
    "REDACTED",
    "UPSERT_INTERVAL",
    "InflightChanged",
    "InflightRequest",
    "InflightTracker",
    "RawHeaders",
    "redacted",
]

UPSERT_INTERVAL: Final = 0.25
REDACTED: Final = "[REDACTED]"
_SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)


RawHeaders = list[tuple[bytes, bytes]]
"""Headers as ASGI carries them; decoded (latin-1) only when an entry is rendered."""


def redacted(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """First value of each header, credentials replaced by ``[REDACTED]``."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        if name not in out:
            secret = name.lower() in _SECRET_HEADERS
            out[name] = REDACTED if secret else raw_value.decode("latin-1")
    return out


@attrs.frozen(kw_only=True)
class InflightChanged:
    """An in-flight entry appeared or changed (``upsert``) or ended (``remove``); published
    on the bus. The entry is rendered by :meth:`as_json`, only when someone listens."""

    kind = "inflight"
    operation: str
    id: str
    request: InflightRequest | None = None
    at: float = 0.0  # trio clock, for elapsed_ms

    def as_json(self) -> dict[str, Any]:
        if self.operation == "remove" or self.request is None:
            return {"operation": "remove", "id": self.id}
        return {"operation": self.operation, "request": self.request.as_json(self.at)}


@attrs.define(eq=False, kw_only=True)
class InflightRequest:
    """One request in flight (see the module docstring)."""

    id: str
    timestamp: float  # unix seconds, on arrival
    started: float  # trio clock, on arrival
    method: str
    req_path: str
    req_headers: RawHeaders  # as received; redacted when rendered
    remote_ip: str
    model: str = ""
    resp_headers: RawHeaders = attrs.field(factory=list)
    resp_bytes: int = 0
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cancelled: bool = False
    last_upsert: float = -math.inf

    def as_json(self, now: float) -> dict[str, Any]:
        when = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.timestamp))
        return {
            "id": self.id,
            "timestamp": when[:-2] + ":" + when[-2:],
            "model": self.model,
            "req_path": self.req_path,
            "method": self.method,
            "req_headers": redacted(self.req_headers),
            "remote_ip": self.remote_ip,
            "resp_headers": redacted(self.resp_headers),
            "resp_bytes": self.resp_bytes,
            "elapsed_ms": max(0, round((now - self.started) * 1000)),
        }


class InflightTracker:
    """The live entries; ``publish`` is the bus's (never blocks)."""

    def __init__(self, publish: Callable[[object], None]) -> None:
        self._publish = publish
        self._live: dict[str, InflightRequest] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._live)

    def open(
        self, *, method: str, path: str, headers: RawHeaders, remote_ip: str
    ) -> InflightRequest:
        request = InflightRequest(
            id=str(self._next),
            timestamp=time.time(),
            started=trio.current_time(),
            method=method,
            req_path=path,
            req_headers=headers,
            remote_ip=remote_ip,
        )
        self._next += 1
        self._live[request.id] = request
        self.changed(request, force=True)
        return request

    def changed(self, request: InflightRequest, *, force: bool = False) -> None:
        """Publish an upsert for ``request``: at once with ``force`` (a new model, the
        response's headers), else at most once per UPSERT_INTERVAL (body progress)."""
        if request.id not in self._live:
            return
        now = trio.current_time()
        if not force and now - request.last_upsert < UPSERT_INTERVAL:
            return
        request.last_upsert = now
        self._publish(InflightChanged(operation="upsert", id=request.id, request=request, at=now))

    def close(self, request: InflightRequest) -> None:
        if self._live.pop(request.id, None) is not None:
            self._publish(InflightChanged(operation="remove", id=request.id))

    def cancel(self, request_id: str) -> bool:
        """Cancel the request ``request_id``; False if no such request is in flight."""
        request = self._live.get(request_id)
        if request is None:
            return False
        request.cancelled = True
        request.cancel_scope.cancel(reason=f"in-flight request {request_id} cancelled over HTTP")
        return True

    def snapshot(self) -> list[dict[str, Any]]:
        now = trio.current_time()
        return [r.as_json(now) for r in self._live.values()]
