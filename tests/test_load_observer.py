"""The load-progress observer between a real event bus and a real log hub, on trio's
mock clock: it starts on ``starting``, reads the model's lines, learns from good loads
only, and keeps a history per command line (in an activity store in memory, fed by the
same load records swapd writes)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from swapd.config import Config, parse_config
from swapd.core.events import LoadProgressed, ModelStateChanged
from swapd.core.states import ModelState
from swapd.observe.bus import EventBus
from swapd.observe.loads import LoadTracker
from swapd.observe.logs import LogHub
from swapd.observe.progress import LoadProgressObserver
from swapd.observe.store import MEMORY, ActivityStore, StoreSettings

S = ModelState


def make_config(cmd: str = "llama-server -m a.gguf --port ${PORT}") -> Config:
    return parse_config(f"healthCheckTimeout: 60\nmodels:\n  m:\n    cmd: {cmd}\n", file="<test>")


@contextlib.asynccontextmanager
async def recording_store(config: Config, bus: EventBus[object]) -> AsyncIterator[ActivityStore]:
    """A store in memory recording the bus's loads, as the daemon's telemetry does."""
    store = ActivityStore(StoreSettings(path=MEMORY))
    tracker = LoadTracker(config, store.add_load)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        with bus.watch(lambda e: tracker.on_state(e) if isinstance(e, ModelStateChanged) else None):
            yield store
        await store.aclose()


def change(old: ModelState, new: ModelState) -> ModelStateChanged:
    return ModelStateChanged(model="m", old=old, new=new, reason="test", at=trio.current_time())


async def test_a_load_is_followed_from_starting_to_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config()
    bus: EventBus[object] = EventBus()
    hub = LogHub(config.models, stdout=lambda _: None)
    seen: list[LoadProgressed] = []
    async with recording_store(config, bus) as store:
        observer = LoadProgressObserver(lambda: config, hub, bus, store)
        watch = bus.watch(lambda e: seen.append(e) if isinstance(e, LoadProgressed) else None)
        with watch:
            async with trio.open_nursery() as nursery:
                await nursery.start(observer.run)
                bus.publish(change(S.STOPPED, S.STARTING))
                await trio.sleep(0.5)
                hub.write_model_line("m", "stderr", "srv    load_model: loading model 'a.gguf'")
                await trio.sleep(2)
                current = observer.current("m")
                assert current is not None and current.stage == "opening"
                hub.write_model_line("m", "stderr", "main: server is listening on http://x:1")
                await trio.sleep(1)
                bus.publish(change(S.STARTING, S.READY))
                await trio.sleep(0.1)
                assert observer.current("m") is None
                await observer.up_to_date()
                nursery.cancel_scope.cancel()
    stages = [r.stage for r in seen]
    assert stages[0] == "starting"
    assert stages[-1] == "ready"
    assert "opening" in stages and "listening" in stages
    assert [r.fraction for r in seen] == sorted(r.fraction for r in seen)
    assert seen[-1].elapsed == pytest.approx(3.5)  # mock clock: 0.5 + 2 + 1 s
    assert seen[0].prediction_basis == "default"
    assert observer.prediction("m").seconds == pytest.approx(3.5)


async def test_failed_loads_do_not_teach_and_a_new_command_starts_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = make_config()
    bus: EventBus[object] = EventBus()
    hub = LogHub(config.models, stdout=lambda _: None)
    async with recording_store(config, bus) as store, trio.open_nursery() as nursery:
        observer = LoadProgressObserver(lambda: config, hub, bus, store)
        await nursery.start(observer.run)
        for took, ends in ((2.0, S.READY), (30.0, S.STOPPING), (4.0, S.READY)):
            bus.publish(change(S.STOPPED, S.STARTING))
            await trio.sleep(took)
            bus.publish(change(S.STARTING, ends))
        await observer.up_to_date()
        prediction = observer.prediction("m")
        assert (prediction.basis, prediction.samples, prediction.seconds) == ("history", 2, 3.0)
        config = make_config("llama-server -m a.gguf -c 8192 --port ${PORT}")
        assert observer.prediction("m").basis == "default"
        nursery.cancel_scope.cancel()
