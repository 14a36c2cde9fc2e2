"""Keeping models warm: loading a model again without a request (``models.<id>.warm``).

Owns the models waiting to be warmed and the task that loads them:

- ``warm.afterTtl``: when the model's TTL unloads it (the supervisor's stop reason for an
  expired TTL, seen on the bus), it is loaded again;
- ``warm.onUiOpen``: ``ui_opened()`` (the web UI's page was requested) asks for it.

A warm load waits until swapd is quiet: no model has requests in flight or waiting, and
none is starting, waking or stopping. Then nothing busy can be swapped out for it, and a
user's own request never queues behind it for long (it is one more waiter, like any
load). Only idle models that conflict with it are swapped out, by the supervisor's normal
rules. Loads go through the supervisor's public ``load()``, one at a time; a failed warm
load is logged and not retried until the next trigger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from swapd.config.model import Config
from swapd.core.events import ModelStateChanged
from swapd.core.states import ModelState
from swapd.errors import SwapdError
from swapd.observe.bus import EventBus
from swapd.supervise.supervisor import ModelStatistics, Supervisor

__all__ = ["TTL_STOP_REASON", "WarmKeeper", "quiet"]

log = logging.getLogger("swapd.warm")

#: How the supervisor's stop reason for an expired TTL begins ("idle for its ttl of 5s").
TTL_STOP_REASON = "idle for its ttl"

_BUSY_STATES = (ModelState.STARTING, ModelState.WAKING, ModelState.STOPPING)


def quiet(stats: Iterable[ModelStatistics]) -> bool:
    """Nothing is in flight or waiting anywhere, and no model is changing state."""
    return all(s.in_flight == 0 and s.waiting == 0 and s.state not in _BUSY_STATES for s in stats)


class WarmKeeper:
    """See the module docstring. ``config`` returns the config in force (it may reload)."""

    def __init__(
        self, config: Callable[[], Config], supervisor: Supervisor, bus: EventBus[object]
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self._bus = bus
        self._pending: dict[str, str] = {}  # model → why it is to be warmed, in order
        self._wake = trio.Event()
        self.warmed = 0  # warm loads that ended ready (for tests and logs)

    def ui_opened(self) -> None:
        """The web UI was opened: warm the models marked ``warm.onUiOpen``."""
        for model_id, spec in self._config().models.items():
            if spec.warm.on_ui_open:
                self._want(model_id, "the web UI was opened")

    def pending(self) -> list[str]:
        """Models waiting to be warmed, in order."""
        return list(self._pending)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the bus; warm pending models when swapd is quiet; until cancelled."""
        with self._bus.watch(self._on_event):
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self._warm_pending()

    async def _warm_pending(self) -> None:
        while self._pending:
            if not quiet(self._supervisor.statistics()):
                return  # the next state or request change wakes us again
            model_id, why = next(iter(self._pending.items()))
            del self._pending[model_id]
            if model_id not in self._config().models or self._running(model_id):
                continue
            log.info("warming %s: %s", model_id, why)
            try:
                await self._supervisor.load(model_id)
            except SwapdError as exc:  # a failed start is the supervisor's to report
                log.warning("warming %s failed: %s", model_id, exc)
            else:
                self.warmed += 1

    def _running(self, model_id: str) -> bool:
        return any(
            s.model == model_id and s.state is not ModelState.STOPPED
            for s in self._supervisor.statistics()
        )

    def _want(self, model_id: str, why: str) -> None:
        self._pending.setdefault(model_id, why)
        self._wake.set()

    def _on_event(self, event: object) -> None:
        # Any event may end a busy spell (a request done, a model stopped): look again.
        if self._pending:
            self._wake.set()
        if not isinstance(event, ModelStateChanged) or event.new is not ModelState.STOPPING:
            return
        spec = self._config().models.get(event.model)
        if spec is not None and spec.warm.after_ttl and event.reason.startswith(TTL_STOP_REASON):
            self._want(event.model, "its ttl unloaded it")
