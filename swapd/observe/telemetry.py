"""Telemetry: one place that turns what happens into logs, token metrics and Prometheus.

It listens to the event bus (state changes, queueing) synchronously through
``EventBus.watch`` and is told about each finished request by the relay. Everything here
is cheap bookkeeping: no I/O, never blocks a publisher.
"""

from __future__ import annotations

from collections.abc import Callable

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
from swapd.observe.logs import LogHub
from swapd.observe.metrics import MetricsStore, SwapdMetrics, TokenMetrics, UsageTap

__all__ = ["MetricsRecorded", "Telemetry"]


@attrs.frozen
class MetricsRecorded:
    """A token-metrics record was stored (published on the bus)."""

    kind = "metrics"
    record: TokenMetrics


class Telemetry:
    def __init__(
        self,
        config: Config,
        bus: EventBus[object],
        *,
        stdout: Callable[[bytes], None] | None = None,
    ) -> None:
        self.bus = bus
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

    def on_event(self, event: object) -> None:
        """Bus watcher: keep the gauges and the per-model logs in step with the models."""
        if isinstance(event, ModelStateChanged):
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
            record = tap.finish(
                model=model,
                status=status,
                started=started,
                first_byte_at=first_byte_at,
                ended=ended,
            )
        if record is not None:
            captured = capture.build() if capture is not None else None
            if captured is not None:
                record = attrs.evolve(record, has_capture=True)
            record = self.store.add(record)
            if captured is not None:
                self.captures.add(attrs.evolve(captured, id=record.id))
            self.bus.publish(MetricsRecorded(record))
        self.prometheus.observe_request(model, status, record, ended - started)
        return record
