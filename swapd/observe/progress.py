"""Live load progress per model: follows each loading model's output and publishes
:class:`~swapd.core.events.LoadProgressed` on the bus.

Owns, per model: the load in progress (its :class:`~swapd.core.load_progress.LoadTracker`,
start time and output parser) and a cache of its past cold starts per command line, read
from the activity store's ``loads`` table (which :mod:`swapd.observe.loads` fills), from
which the next load's time is predicted (:mod:`swapd.core.load_prediction`). The store
keeps them across restarts when it is a file. The cache is read at start for every
configured model, and again for a command line whenever one of its loads ends (after the
store has committed it) or a new command line (a reload) is first predicted; predictions
are made from the cache, so the bus callbacks never wait on the database.

It needs nothing from the supervisor but its events: a ``starting`` state change
begins a load, ``ready`` ends it well, any other change from ``starting`` ends it badly.
The model's output comes from its log in the :class:`~swapd.observe.logs.LogHub`,
watched synchronously so no line is missed. Both callbacks only record and wake the
publishing task, which sends at most one event per model per change and one a second
while a model loads (time-based progress moves even when the server prints nothing);
publishing from the task, not inside a bus callback, keeps event order simple.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Final

import attrs
import trio

from swapd.config.cmdline import split_command
from swapd.config.model import Config
from swapd.core.events import LoadProgressed, ModelStateChanged
from swapd.core.load_prediction import LoadPrediction, PastLoad, predict_load
from swapd.core.load_progress import LoadProgress, LoadTracker
from swapd.core.load_stages import Parser, parse_any, parser_for_command
from swapd.core.states import ModelState
from swapd.observe.bus import EventBus
from swapd.observe.loads import command_hash
from swapd.observe.logs import LogHub
from swapd.observe.store import ActivityStore

__all__ = ["KEPT_LOADS", "TICK_SECONDS", "LoadProgressObserver"]

log = logging.getLogger(__name__)

#: Seconds between readings of a load that prints nothing new.
TICK_SECONDS: Final = 1.0
#: Past loads read per model and command line (the prediction uses the newest few).
KEPT_LOADS: Final = 20


def _parser(cmd: str) -> Parser:
    try:
        return parser_for_command(split_command(cmd))
    except ValueError:
        return parse_any


@attrs.define(eq=False)
class _Load:
    cmd: str
    started: float
    prediction: LoadPrediction
    parse: Parser
    tracker: LoadTracker
    last_sent: tuple[object, ...] | None = None


class LoadProgressObserver:
    """See the module docstring. ``config`` returns the config in force (it may reload);
    ``store`` is the activity store whose ``loads`` table holds the past loads (its writer
    must be running)."""

    def __init__(
        self,
        config: Callable[[], Config],
        logs: LogHub,
        bus: EventBus[object],
        store: ActivityStore,
        *,
        tick: float = TICK_SECONDS,
    ) -> None:
        self._config = config
        self._logs = logs
        self._bus = bus
        self._store = store
        self._tick = tick
        self._loads: dict[str, _Load] = {}
        self._finished: dict[str, LoadProgressed] = {}
        self._history: dict[tuple[str, str], tuple[PastLoad, ...]] = {}
        self._stale: set[tuple[str, str]] = set()  # to be read (again) from the store
        self._fetching = False
        self._refresh = trio.Event()
        self._refreshed = trio.lowlevel.ParkingLot()
        self._watched: set[str] = set()
        self._watches = contextlib.ExitStack()
        self._wake = trio.Event()

    # -- reading ---------------------------------------------------------------------------

    def current(self, model_id: str) -> LoadProgressed | None:
        """The latest reading of ``model_id``'s load in progress, else ``None``."""
        load = self._loads.get(model_id)
        return None if load is None else self._reading(model_id, load, trio.current_time())

    def remaining(self, model_id: str) -> float | None:
        """Predicted seconds ``model_id``'s load still needs; ``None`` when it is not
        loading or has overrun its prediction (nothing is known then)."""
        reading = self.current(model_id)
        return None if reading is None else reading.eta

    def prediction(self, model_id: str) -> LoadPrediction:
        """The predicted duration of ``model_id``'s next load with its current command."""
        config = self._config()
        spec = config.models[model_id]
        key = (model_id, command_hash(spec.cmd))
        history = self._history.get(key)
        if history is None:  # a command line not read yet (a reload): read it soon
            self._want(key)
        return predict_load(history or (), health_check_timeout=config.health_check_timeout)

    async def up_to_date(self) -> None:
        """Wait until every load that has ended is in the predictions (read back from the
        store)."""
        while self._stale or self._fetching:
            await self._refreshed.park()

    def _want(self, key: tuple[str, str]) -> None:
        self._stale.add(key)
        self._refresh.set()

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the configured models' past loads, then watch the bus and the logs and
        publish readings; until cancelled."""
        for model_id, spec in self._config().models.items():
            self._stale.add((model_id, command_hash(spec.cmd)))
        await self._read_stale()
        async with trio.open_nursery() as nursery:
            with self._watches, self._bus.watch(self._on_event, (ModelStateChanged,)):
                nursery.start_soon(self._keep_history)
                task_status.started()
                while True:
                    with trio.move_on_after(self._tick):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    self._publish()

    async def _keep_history(self) -> None:
        while True:
            await self._refresh.wait()
            self._refresh = trio.Event()
            await self._read_stale()

    async def _read_stale(self) -> None:
        self._fetching = True
        try:
            while self._stale:
                # Taken before the wait: a load that ends meanwhile stales its key again,
                # and the loop reads it once more. A load that just ended is queued in the
                # store, so wait for its commit first. (Reading before a commit that was
                # still running, on a busy machine, replaced the history without it.)
                key = self._stale.pop()
                await self._store.wait_written()
                self._history[key] = await self._read(*key)
        finally:
            self._fetching = False
            self._refreshed.unpark_all()

    async def _read(self, model_id: str, cmd_hash: str) -> tuple[PastLoad, ...]:
        try:
            records = await self._store.load_history(model_id, cmd_hash, KEPT_LOADS, kind="start")
        except sqlite3.Error:
            # The prediction is a hint: without history it falls back to the default.
            log.warning("reading %s's past loads failed", model_id, exc_info=True)
            return self._history.get((model_id, cmd_hash), ())
        return tuple(
            PastLoad(r.duration_ms / 1000, r.outcome == "ready", r.started_ms / 1000)
            for r in records
        )

    def _publish(self) -> None:
        now = trio.current_time()
        for model_id, load in list(self._loads.items()):
            reading = self._reading(model_id, load, now)
            key = (reading.stage, reading.percent, reading.eta is None, int(reading.eta or 0))
            if key != load.last_sent:
                load.last_sent = key
                self._bus.publish(reading)
        for reading in self._finished.values():
            self._bus.publish(reading)
        self._finished.clear()

    def _reading(self, model_id: str, load: _Load, now: float) -> LoadProgressed:
        elapsed = max(0.0, now - load.started)
        return _event(model_id, load.tracker.progress(elapsed), load.prediction, elapsed)

    # -- callbacks (synchronous, in the publisher's task: record and wake only) -------------

    def _on_event(self, event: object) -> None:
        if not isinstance(event, ModelStateChanged):
            return
        if event.new is ModelState.STARTING and event.old is not ModelState.STARTING:
            self._begin(event.model, event.at)
        elif event.old is ModelState.STARTING and event.new is not ModelState.STARTING:
            self._end(event.model, event.at, ready=event.new is ModelState.READY)

    def _begin(self, model_id: str, at: float) -> None:
        spec = self._config().models.get(model_id)
        if spec is None:
            return
        prediction = self.prediction(model_id)
        self._loads[model_id] = _Load(
            cmd=spec.cmd,
            started=at,
            prediction=prediction,
            parse=_parser(spec.cmd),
            tracker=LoadTracker(predicted=prediction.seconds),
        )
        self._follow(model_id)
        self._wake.set()

    def _end(self, model_id: str, at: float, *, ready: bool) -> None:
        load = self._loads.pop(model_id, None)
        if load is None:
            return
        elapsed = max(0.0, at - load.started)
        key = (model_id, command_hash(load.cmd))
        # Counted at once, so a load that starts before the store has the row (an unload
        # and a new request within its commit interval) is predicted from it too; the
        # store records this load (observe.loads) and the re-read below replaces this.
        past = PastLoad(elapsed, ready, time.time() - elapsed)
        self._history[key] = (*self._history.get(key, ()), past)[-KEPT_LOADS:]
        self._want(key)
        if ready:
            final = load.tracker.finish().progress(elapsed)
            self._finished[model_id] = _event(model_id, final, load.prediction, elapsed)
        self._wake.set()

    def _follow(self, model_id: str) -> None:
        if model_id in self._watched:
            return
        with contextlib.suppress(KeyError):  # a model the hub does not know: time only
            self._watches.enter_context(self._logs.watch(model_id, self._line_of(model_id)))
            self._watched.add(model_id)

    def _line_of(self, model_id: str) -> Callable[[bytes], None]:
        def on_line(data: bytes) -> None:
            load = self._loads.get(model_id)
            if load is None:
                return
            for line in _lines(data):
                if (update := load.parse(line)) is not None:
                    load.tracker = load.tracker.observe(update)
                    self._wake.set()

        return on_line


def _lines(data: bytes) -> Iterator[str]:
    for raw in data.split(b"\n"):
        if raw:
            yield raw.decode("utf-8", "replace")


def _event(
    model_id: str, progress: LoadProgress, prediction: LoadPrediction, elapsed: float
) -> LoadProgressed:
    return LoadProgressed(
        model=model_id,
        stage=progress.stage.value,
        label=progress.stage.label,
        fraction=progress.fraction,
        percent=progress.percent,
        eta=progress.eta,
        is_estimate=progress.is_estimate,
        elapsed=elapsed,
        predicted=prediction.seconds,
        prediction_basis=prediction.basis,
    )
