"""Telemetry: one place that turns what happens into logs, token metrics and Prometheus.

It listens to the event bus (state changes, queueing) synchronously through
``EventBus.watch`` and is told about each finished request by the relay. Everything here
is cheap bookkeeping: no I/O, never blocks a publisher. The durable activity history
(``store.ActivityStore``: a row per request from the web layer's recorder, a record per
model load from the state changes) is fed from here too; its own task does the I/O.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import attrs

from swapd.config.model import Config
from swapd.core.events import (
    KvCacheFailed,
    KvCacheRestored,
    KvCacheSaved,
    ModelStateChanged,
    RequestQueued,
    ShuttingDown,
)
from swapd.core.states import ModelState
from swapd.observe.bus import EventBus
from swapd.observe.captures import CaptureRecorder, CaptureStore
from swapd.observe.inflight import InflightTracker
from swapd.observe.loads import LoadTracker
from swapd.observe.logs import LogHub
from swapd.observe.metrics import MetricsStore, SwapdMetrics, TokenMetrics, UsageTap
from swapd.observe.performance import PerformanceMonitor
from swapd.observe.store import ActivityRow, ActivityStore, StoreSettings, default_path

__all__ = ["ActivityRecorded", "MetricsRecorded", "Telemetry", "store_settings"]


@attrs.frozen
class MetricsRecorded:
    """A token-metrics record was stored (published on the bus)."""

    kind = "metrics"
    record: TokenMetrics


@attrs.frozen
class ActivityRecorded:
    """A request's activity row is in the store and can be read (published on the bus
    once its batch is committed; the event feed sends it as llama-swap's ``activity``)."""

    kind = "activity"
    id: int
    model: str = ""  # the row's model (not sent: the feed filters by it for scoped keys)


def store_settings(config: Config, environ: Mapping[str, str]) -> StoreSettings:
    """The activity store's settings: ``store.*``, with the default path from ``environ``."""
    path = config.store.path or str(default_path(environ))
    return StoreSettings(
        path=path,
        max_rows=config.store.max_rows,
        max_age_days=config.store.max_age_days,
        memory_rows=config.metrics_max_in_memory,
    )


class Telemetry:
    #: The events ``on_event`` acts on (its bus watch is limited to them).
    WATCHED: tuple[type, ...] = (
        ModelStateChanged,
        RequestQueued,
        KvCacheSaved,
        KvCacheRestored,
        KvCacheFailed,
        ShuttingDown,
    )

    def __init__(
        self,
        config: Config,
        bus: EventBus[object],
        *,
        stdout: Callable[[bytes], None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.bus = bus
        self._environ = os.environ if environ is None else environ
        # The durable history; its writer task is started by the daemon (ActivityStore.run).
        self.activity = ActivityStore(
            store_settings(config, self._environ), on_committed=self._activity_committed
        )
        self._loads = LoadTracker(config, self.activity.add_load)
        self.inflight = InflightTracker(bus.publish)
        # System/GPU sampling for /api/performance; its task is started by the daemon.
        # Kept across reloads: llama-swap reads performance settings once, at start.
        self.performance = PerformanceMonitor.from_config(config.performance)
        self.logs = (
            LogHub.from_config(config)
            if stdout is None
            else LogHub.from_config(config, stdout=stdout)
        )
        self.store = MetricsStore(config.metrics_max_in_memory)
        self.captures = CaptureStore(config.capture_buffer * 1024 * 1024)
        self.prometheus = SwapdMetrics(known_states=[s.value for s in ModelState])
        self._known = set(config.models)
        for model_id in config.models:
            self.prometheus.set_state(model_id, ModelState.STOPPED.value)
        self._starting: dict[str, float] = {}

    def reconfigure(self, config: Config) -> None:
        """Follow a reload: new models get their logs and gauges, log settings apply."""
        for model_id in config.models:
            self.logs.add_model(model_id)
            if model_id not in self._known:
                self._known.add(model_id)
                self.prometheus.set_state(model_id, ModelState.STOPPED.value)
        self.logs.log_level = config.log_level
        self.logs.log_time_format = config.log_time_format
        self.logs.log_to_stdout = config.log_to_stdout
        self.activity.reconfigure(store_settings(config, self._environ))
        self._loads.reconfigure(config)

    def on_event(self, event: object) -> None:
        """Bus watcher: keep the gauges and the per-model logs in step with the models."""
        if isinstance(event, ModelStateChanged):
            self._loads.on_state(event)
            self.prometheus.set_state(event.model, event.new.value)
            if event.new is ModelState.STARTING:
                self._starting[event.model] = event.at
                self.logs.clear_model(event.model)  # a model's log shows its current run
            elif event.new is ModelState.READY and event.old is ModelState.STARTING:
                began = self._starting.pop(event.model, event.at)
                self.prometheus.observe_start(event.model, event.at - began)
            elif event.reason.startswith("exited unexpectedly"):
                self.prometheus.observe_crash(event.model)
        elif isinstance(event, RequestQueued):
            self.prometheus.set_queue_depth(event.model, event.depth)
        elif isinstance(event, KvCacheSaved | KvCacheRestored):
            action = "save" if isinstance(event, KvCacheSaved) else "restore"
            self.prometheus.observe_kv_cache(event.model, action, True, event.size)
        elif isinstance(event, KvCacheFailed):
            self.prometheus.observe_kv_cache(event.model, event.action, False)
        elif isinstance(event, ShuttingDown):
            self.logs.close()  # live log streams end now, not when the drain times out

    def request_finished(
        self,
        model: str,
        status: int,
        tap: UsageTap | None,
        *,
        started: float,
        first_byte_at: float | None,
        ended: float,
        capture: CaptureRecorder | None = None,
    ) -> TokenMetrics | None:
        """Record one forwarded request; returns its token metrics when it had any.

        A capture is kept only with a metrics record (its ID is the record's)."""
        record = None
        if tap is not None:
            # The capture is built first, under the ID the record gets next, so neither
            # needs a copy made afterwards to link the two (a request's worth of CPU).
            captured = None
            if capture is not None and status == 200:
                captured = capture.build(self.store.next_id)
            record = tap.finish(
                model=model,
                status=status,
                started=started,
                first_byte_at=first_byte_at,
                ended=ended,
                has_capture=captured is not None,
            )
            if record is not None:
                record = self.store.add(record)
                if captured is not None:
                    self.captures.add(captured)
                self.bus.publish(MetricsRecorded(record))
        self.prometheus.observe_request(model, status, record, ended - started)
        return record

    def record_activity(self, row: ActivityRow) -> None:
        """Queue one request's row for the activity store."""
        self.activity.add(row)

    def _activity_committed(self, ids: Sequence[int], models: Sequence[str]) -> None:
        for row_id, model in zip(ids, models, strict=True):
            self.bus.publish(ActivityRecorded(row_id, model))
