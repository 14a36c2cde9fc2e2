"""Model loads as records: turns the runners' state changes into :class:`LoadRecord`\\ s.

A load begins when a model enters ``starting`` (a cold start) or ``waking`` (a wake from
sleep) and ends when it leaves that state: ``ready`` is a success; ``stopping`` after a
failed start or wake is a failure whose error (and the exit code, if the process ended)
arrives with the ``stopping -> stopped`` change that follows; any other way out (a stop or
an unload while loading, an exit) is ``cancelled`` or ``failed``. Durations come from the
events' own clock (``ModelStateChanged.at``), the start time from the wall clock.

Pure bookkeeping, called synchronously from the bus watcher: no I/O, never raises.
"""

from __future__ import annotations

import hashlib
import re
import signal
import time
from collections.abc import Callable

import attrs

from swapd.config.model import Config
from swapd.core.events import ModelStateChanged
from swapd.core.states import ModelState
from swapd.observe.store import LoadRecord

__all__ = ["LoadTracker", "command_hash", "exit_code_of"]

_EXIT_CODE = re.compile(r"exit code (-?\d+)")
_SIGNAL = re.compile(r"signal (SIG[A-Z0-9]+)")
_LOADING = {ModelState.STARTING: "start", ModelState.WAKING: "wake"}
_FAILED = ("start failed", "wake failed")  # the runner's reasons for a load that failed


def command_hash(cmd: str) -> str:
    """A short, stable digest of a model's command line (as swapd runs it, port included):
    loads are comparable only between runs of the same command. The one digest the
    store's ``loads`` and ``footprints`` rows and load-time prediction key on."""
    return hashlib.sha256(cmd.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def exit_code_of(text: str) -> int | None:
    """The exit code in a runner's error text (``exit code 1``; ``signal SIGKILL`` → -9)."""
    if found := _EXIT_CODE.search(text):
        return int(found.group(1))
    if found := _SIGNAL.search(text):
        try:
            return -int(signal.Signals[found.group(1)])
        except KeyError:
            return None
    return None


@attrs.define
class _Loading:
    kind: str
    cmd_hash: str
    at: float  # the event clock
    wall: float  # unix seconds


class LoadTracker:
    """Feed it every :class:`ModelStateChanged` (:meth:`on_state`); it returns a record
    when a load has ended and hands it to ``emit``."""

    def __init__(self, config: Config, emit: Callable[[LoadRecord], object]) -> None:
        self._config = config
        self._emit = emit
        self._loading: dict[str, _Loading] = {}
        self._failing: dict[str, LoadRecord] = {}  # failed, waiting for the final error

    def reconfigure(self, config: Config) -> None:
        self._config = config

    def _cmd_hash(self, model: str) -> str:
        spec = self._config.models.get(model)
        return command_hash(spec.cmd) if spec is not None else ""

    def on_state(self, event: ModelStateChanged) -> None:
        model = event.model
        failing = self._failing.pop(model, None)
        if failing is not None:
            # The change after a failed load carries the error and how the process ended.
            text = " ".join(filter(None, (event.error, event.reason)))
            self._emit(
                attrs.evolve(
                    failing,
                    error=event.error or failing.error,
                    exit_code=exit_code_of(text),
                )
            )
        kind = _LOADING.get(event.new)
        if kind is not None:
            self._loading[model] = _Loading(kind, self._cmd_hash(model), event.at, time.time())
            return
        loading = self._loading.pop(model, None)
        if loading is None or event.old not in _LOADING:
            return
        record = LoadRecord(
            model=model,
            cmd_hash=loading.cmd_hash,
            kind=loading.kind,
            started_ms=int(loading.wall * 1000),
            duration_ms=max(0, round((event.at - loading.at) * 1000)),
            outcome="ready",
        )
        if event.new is ModelState.READY:
            self._emit(record)
        elif event.new is ModelState.STOPPING and event.reason.startswith(_FAILED):
            self._failing[model] = attrs.evolve(record, outcome="failed", error=event.reason)
        elif event.new is ModelState.STOPPING:
            self._emit(attrs.evolve(record, outcome="cancelled", error=event.reason))
        else:  # the process exited while loading (or swapd shut down)
            text = " ".join(filter(None, (event.error, event.reason)))
            self._emit(
                attrs.evolve(
                    record,
                    outcome="failed",
                    error=event.error or event.reason,
                    exit_code=exit_code_of(text),
                )
            )
