"""Event records published on the bus. Frozen, with a stable JSON shape (``as_json``)."""

from __future__ import annotations

from typing import Any

import attrs

from swapd.core.states import ModelState

__all__ = [
    "BusEvent",
    "KvCacheDeleted",
    "KvCacheFailed",
    "KvCacheRestored",
    "KvCacheSaved",
    "LoadProgressed",
    "ModelPreloaded",
    "ModelRestart",
    "ModelStateChanged",
    "RequestQueued",
    "RequestsChanged",
    "ShuttingDown",
]


@attrs.frozen(kw_only=True)
class ModelStateChanged:
    """A model moved from ``old`` to ``new``; ``reason`` says why, ``error`` what failed."""

    kind = "modelStatus"
    model: str
    old: ModelState
    new: ModelState
    reason: str
    error: str | None = None
    pid: int | None = None
    at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "processName": self.model,
            "oldState": self.old.value,
            "newState": self.new.value,
            "reason": self.reason,
        }
        if self.error:
            data["error"] = self.error
        if self.pid is not None:
            data["pid"] = self.pid
        return data


@attrs.frozen(kw_only=True)
class RequestQueued:
    """A request is waiting for ``model`` (queue depth after it joined)."""

    kind = "queue"
    model: str
    depth: int

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "depth": self.depth}


@attrs.frozen(kw_only=True)
class ModelPreloaded:
    """A model listed in ``hooks.on_startup.preload`` was started, or failed to start."""

    kind = "modelPreloaded"
    model: str
    success: bool
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "success": self.success, "error": self.error}


@attrs.frozen(kw_only=True)
class ModelRestart:
    """A kept model crashed: a restart is ``scheduled`` in ``delay`` s, or swapd ``gaveUp``."""

    kind = "modelRestart"
    model: str
    state: str  # "scheduled" | "gaveUp"
    crashes: int  # within the restart window
    delay: float | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "state": self.state,
            "crashes": self.crashes,
            "delay": self.delay,
            "error": self.error,
        }


@attrs.frozen(kw_only=True)
class RequestsChanged:
    """A request to ``model`` was admitted, finished, or gave up waiting."""

    kind = "requests"
    model: str
    in_flight: int
    waiting: int

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "inFlight": self.in_flight, "waiting": self.waiting}


@attrs.frozen(kw_only=True)
class LoadProgressed:
    """How far ``model``'s load has got (see :mod:`swapd.core.load_progress`).

    ``stage`` is a :class:`~swapd.core.load_stages.Stage` value (``ready`` ends the load),
    ``label`` its words; ``fraction`` 0 to 1 never goes back; ``eta`` seconds left (``None``
    past the prediction); ``is_estimate``: the fraction comes from time against the
    prediction, not from the server's output; ``predicted`` seconds and its ``basis``
    (``history`` of past loads or the ``default``)."""

    kind = "loadProgress"
    model: str
    stage: str
    label: str
    fraction: float
    percent: int
    eta: float | None
    is_estimate: bool
    elapsed: float
    predicted: float
    prediction_basis: str

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "stage": self.stage,
            "label": self.label,
            "fraction": round(self.fraction, 4),
            "percent": self.percent,
            "eta": None if self.eta is None else round(self.eta, 1),
            "isEstimate": self.is_estimate,
            "elapsed": round(self.elapsed, 2),
            "predicted": round(self.predicted, 2),
            "predictionBasis": self.prediction_basis,
        }


@attrs.frozen
class ShuttingDown:
    """swapd stopped taking requests; live streams end now."""

    kind = "shutdown"


@attrs.frozen(kw_only=True)
class KvCacheSaved:
    """A slot of ``model`` was saved to disk before it stopped (docs/kvcache.md)."""

    kind = "kvCacheSaved"
    model: str
    slot: int
    tokens: int
    size: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)  # the fields are the JSON keys, all plain values


@attrs.frozen(kw_only=True)
class KvCacheRestored:
    """A saved slot was loaded back into ``model`` before its first request."""

    kind = "kvCacheRestored"
    model: str
    slot: int
    tokens: int
    size: int
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return attrs.asdict(self)  # the fields are the JSON keys, all plain values


@attrs.frozen(kw_only=True)
class KvCacheFailed:
    """A save or restore did not happen; the stop or the request went on without it."""

    kind = "kvCacheFailed"
    model: str
    action: str  # "save" | "restore"
    error: str
    slot: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "action": self.action, "slot": self.slot, "error": self.error}


@attrs.frozen(kw_only=True)
class KvCacheDeleted:
    """A saved slot file was deleted: ``budget`` (least recently used), ``corrupt``
    (size mismatch or refused by the server) or ``orphan`` (not in the index)."""

    kind = "kvCacheDeleted"
    file: str
    reason: str
    size: int
    model: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "reason": self.reason, "size": self.size, "model": self.model}


BusEvent = (
    ModelStateChanged
    | RequestQueued
    | RequestsChanged
    | ModelPreloaded
    | ModelRestart
    | LoadProgressed
    | ShuttingDown
    | KvCacheSaved
    | KvCacheRestored
    | KvCacheFailed
    | KvCacheDeleted
)
