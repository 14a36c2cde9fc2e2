"""Swap ordering, TTL, failures and sleep/wake, driven deterministically on a mock clock.

Each test states when requests arrive and how long the fake models take, and asserts
the launches and the order of answers. The models are in-process fakes
(``swapd.testing.harness``) so ``autojump_clock`` can skip idle time safely.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from swapd.core.states import OCCUPYING, ModelState
from swapd.errors import ModelUnavailable, QueueFull, StartFailed
from swapd.testing.harness import Script, open_swap_harness

THREE = """
models:
  A: {cmd: "fake --port ${PORT}"}
  B: {cmd: "fake --port ${PORT}"}
  C: {cmd: "fake --port ${PORT}"}
"""


async def test_one_model_at_a_time_in_the_default_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_swap_harness(THREE) as h:
        h.request("A", at=0)
        h.request("B", at=5)
        h.request("C", at=10)
    assert h.launches == ["A", "B", "C"]
    assert h.completion_order == ["A", "B", "C"]
    stops = [(r.model, r.at) for r in h.events("stop")]
    launches = [(r.model, r.at) for r in h.events("launch")]
    # every model is fully stopped before the next one launches
    assert stops[0][0] == "A" and stops[0][1] < launches[1][1]
    assert stops[1][0] == "B" and stops[1][1] < launches[2][1]


async def test_requests_are_batched_by_model(autojump_clock: trio.testing.MockClock) -> None:
    async with open_swap_harness(THREE) as h:
        h.request("A", at=0.0, duration=1.0)
        h.request("B", at=0.1)
        h.request("A", at=0.2, duration=1.0)
        h.request("A", at=0.5, duration=1.0)
        h.request("C", at=0.6)
    # A is loading when B and C arrive; the queued A requests are served together, then
    # B and C in arrival order: three launches, not five.
    assert h.launches == ["A", "B", "C"]
    assert h.completion_order == ["A", "A", "A", "B", "C"]


async def test_a_waiting_model_never_starves(autojump_clock: trio.testing.MockClock) -> None:
    async with open_swap_harness("maxSwapWait: 5\n" + THREE) as h:
        for i in range(60):  # A is asked for every 0.5 s for 30 s
            h.request("A", at=i * 0.5, duration=1.0)
        h.request("B", at=2.0, name="B")
    b = next(o for o in h.outcomes if o.name == "B")
    assert b.granted is not None
    # waited max_wait, then A drained (≤ 1 s), stopped (0.1 s) and B started (1 s)
    assert b.granted - b.arrived <= 5.0 + 1.0 + 0.1 + 1.0 + 0.01
    assert h.launches[:3] == ["A", "B", "A"]
    assert all(o.error is None for o in h.outcomes)


EXCLUSIVE = """
models:
  A: {cmd: "fake --port ${PORT}"}
  B: {cmd: "fake --port ${PORT}"}
  P: {cmd: "fake --port ${PORT}"}
  F1: {cmd: "fake --port ${PORT}"}
  F2: {cmd: "fake --port ${PORT}"}
groups:
  g1: {members: [A]}
  g2: {members: [B]}
  forever: {persistent: true, swap: false, exclusive: false, members: [P]}
  free: {swap: false, exclusive: false, members: [F1, F2]}
"""


async def _watch_invariants(h, violations: list[str]) -> None:  # type: ignore[no-untyped-def]
    with h.supervisor.bus.subscribe(maxlen=10_000) as sub:
        async for _ in sub:
            occupying = {s.model for s in h.supervisor.statistics() if s.state in OCCUPYING}
            if {"A", "B"} <= occupying:
                violations.append(f"exclusive groups co-resident: {sorted(occupying)}")


async def test_two_exclusive_groups_requested_at_once_never_coexist(
    autojump_clock: trio.testing.MockClock,
) -> None:
    violations: list[str] = []
    async with trio.open_nursery() as watchers:
        async with open_swap_harness(EXCLUSIVE) as h:
            watchers.start_soon(_watch_invariants, h, violations)
            for i in range(5):
                h.request("A", at=i * 0.01)
                h.request("B", at=i * 0.01)
        watchers.cancel_scope.cancel()
    assert violations == []
    assert sorted(h.launches) == ["A", "B"]
    assert all(o.error is None for o in h.outcomes)


async def test_persistent_and_non_exclusive_groups_stay_loaded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_swap_harness(EXCLUSIVE) as h:
        h.request("P", at=0)
        h.request("F1", at=0)
        h.request("F2", at=0)
        h.request("A", at=5)
        h.request("P", at=10)
        h.request("F1", at=10)
    # A (exclusive) stopped F1/F2 but not the persistent P; F1 came back afterwards
    assert h.launches.count("P") == 1
    assert h.launches.count("F1") == 2
    assert sorted(r.model for r in h.events("stop") if r.at < 9) == ["F1", "F2"]


async def test_abandoned_start_is_cancelled_for_a_waiting_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_swap_harness(THREE, scripts={"A": Script(start_delay=30)}) as h:

        async def impatient() -> None:
            with trio.move_on_after(1):
                await h.supervisor.acquire("A")

        h._nursery.start_soon(impatient)
        h.request("B", at=2)
    b = h.outcomes[0]
    assert b.error is None
    assert b.granted is not None and b.granted < 5  # did not wait out A's 30 s start
    assert [r.model for r in h.events("stop")][:1] == ["A"]


async def test_ttl_unloads_after_the_last_request_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = 'models:\n  A: {cmd: "fake --port ${PORT}", ttl: 5}\n'
    async with open_swap_harness(config) as h:
        h.request("A", at=0, duration=10)  # ready at 1, busy until 11
        h.request("A", at=3, duration=1)
        await trio.sleep(30)
    stops = h.events("stop")
    assert len(stops) == 1
    assert stops[0].at == pytest.approx(11 + 5, abs=0.01)


async def test_request_during_ttl_stop_starts_the_model_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = 'models:\n  A: {cmd: "fake --port ${PORT}", ttl: 2}\n'
    async with open_swap_harness(config, scripts={"A": Script(stop_delay=1.0)}) as h:
        h.request("A", at=0, duration=0.1)  # finishes at 1.1, TTL stop begins at 3.1
        h.request("A", at=3.5, duration=0.1)  # arrives while A is stopping
        await trio.sleep(4)
        assert [r.at for r in h.events("stop")] == pytest.approx([3.1], abs=0.01)
    assert h.launches == ["A", "A"]
    assert all(o.error is None for o in h.outcomes)


async def test_failed_start_fails_its_waiters_then_backs_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = 'models:\n  A: {cmd: "fake --port ${PORT}"}\n'
    async with open_swap_harness(config, scripts={"A": Script(exit_during_start=3)}) as h:
        h.request("A", at=0)
        h.request("A", at=0.5)
        h.request("A", at=1.5)  # inside the 1 s backoff after the failure at 1.0
        h.request("A", at=3.0)  # after it: a new attempt
    errors = [type(o.error) for o in h.outcomes]
    assert errors == [StartFailed, StartFailed, ModelUnavailable, StartFailed]
    first = h.outcomes[0].error
    assert isinstance(first, StartFailed)
    assert first.exit == "exit code 3"
    assert "fake: failing on purpose" in str(first)
    assert h.launches == ["A", "A"]


async def test_crash_is_reported_and_the_next_request_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = 'models:\n  A: {cmd: "fake --port ${PORT}"}\n'
    async with open_swap_harness(config, scripts={"A": Script(crash_after=2)}) as h:
        with h.supervisor.bus.subscribe() as sub:
            h.request("A", at=0)
            h.request("A", at=10)
            await h.wait_done()
            events = []
            while (item := sub.receive_nowait()) is not None:
                events.append(item)
    crash = [e for e in events if getattr(e, "reason", "").startswith("exited unexpectedly")]
    assert crash and crash[0].old is ModelState.READY and crash[0].new is ModelState.STOPPED
    assert "exit code 1" in (crash[0].error or "")
    assert h.launches == ["A", "A"]


SLEEPY = """
models:
  A:
    cmd: "fake --port ${PORT}"
    sleepEndpoints: [{endpoint: /sleep}]
    wakeEndpoints: [{endpoint: /wake_up}]
  B:
    cmd: "fake --port ${PORT}"
    sleepEndpoints: [{endpoint: /sleep}]
    wakeEndpoints: [{endpoint: /wake_up}]
"""


async def test_swapping_sleeps_and_wakes_instead_of_restarting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_swap_harness(SLEEPY) as h:
        h.request("A", at=0)
        h.request("B", at=5)
        h.request("A", at=10)
        h.request("B", at=15)
    assert h.launches == ["A", "B"]
    assert [(r.model, r.what) for r in h.launcher.timeline if r.what in ("sleep", "wake")] == [
        ("A", "sleep"),
        ("B", "sleep"),
        ("A", "wake"),
        ("A", "sleep"),
        ("B", "wake"),
    ]
    assert h.completion_order == ["A", "B", "A", "B"]


async def test_failed_wake_falls_back_to_a_restart(autojump_clock: trio.testing.MockClock) -> None:
    async with open_swap_harness(SLEEPY, scripts={"A": Script(fail_wake=True)}) as h:
        h.request("A", at=0)
        h.request("B", at=5)
        h.request("A", at=10)
    assert h.launches == ["A", "B", "A"]
    assert all(o.error is None for o in h.outcomes)


async def test_failed_sleep_stops_the_process(autojump_clock: trio.testing.MockClock) -> None:
    async with open_swap_harness(SLEEPY, scripts={"A": Script(fail_sleep=True)}) as h:
        h.request("A", at=0)
        h.request("B", at=5)
        h.request("A", at=10)
    assert h.launches == ["A", "B", "A"]
    assert ("A", "stop") in [(r.model, r.what) for r in h.launcher.timeline]


async def test_concurrency_limit_queues_the_rest(autojump_clock: trio.testing.MockClock) -> None:
    config = 'models:\n  A: {cmd: "fake --port ${PORT}", concurrencyLimit: 2}\n'
    async with open_swap_harness(config) as h:
        for _ in range(6):
            h.request("A", at=0, duration=1.0)
    granted = sorted(o.granted for o in h.outcomes if o.granted is not None)
    assert granted == pytest.approx([1, 1, 2, 2, 3, 3], abs=0.01)


async def test_full_queue_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    config = 'maxQueuedRequests: 3\nmodels:\n  A: {cmd: "fake --port ${PORT}"}\n'
    async with open_swap_harness(config) as h:
        for _ in range(5):
            h.request("A", at=0)
    errors = [o.error for o in h.outcomes]
    assert sum(isinstance(e, QueueFull) for e in errors) == 2
    assert sum(e is None for e in errors) == 3


async def test_shutdown_fails_waiters_and_stops_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = 'models:\n  A: {cmd: "fake --port ${PORT}"}\n'
    outcome: list[BaseException] = []
    async with (
        trio.open_nursery() as nursery,
        open_swap_harness(config, scripts={"A": Script(start_delay=100)}) as h,
    ):

        async def waiter() -> None:
            try:
                await h.supervisor.acquire("A")
            except ModelUnavailable as exc:
                outcome.append(exc)

        nursery.start_soon(waiter)
        await trio.sleep(5)
        assert h.supervisor.running() == ["A"]
    assert [str(e) for e in outcome] == ["swapd is shutting down"]
    assert h.supervisor.running() == []
    assert h.supervisor.runner("A").state is ModelState.SHUTDOWN


async def test_explicit_unload_stops_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with open_swap_harness(THREE) as h:
        h.request("A", at=0, duration=100)
        await trio.sleep(2)
        await h.supervisor.unload("A")
        assert h.supervisor.runner("A").state is ModelState.STOPPED
        assert trio.current_time() == pytest.approx(2.1)


async def test_unload_returns_even_if_a_request_restarts_the_model(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Found by the property tests: unload used to wait for "stopped" again after a new
    # request had already restarted the model, and so waited forever.
    async with open_swap_harness(THREE, scripts={"A": Script(stop_delay=1.0)}) as h:
        h.request("A", at=0, duration=0.1)
        await trio.sleep(2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.supervisor.unload, None)
            await trio.sleep(0.5)  # A is still stopping
            h.request("A", at=2.6, duration=0.1)
        assert trio.current_time() == pytest.approx(3.0)
    assert h.launches == ["A", "A"]


async def test_the_readme_example(autojump_clock: trio.testing.MockClock) -> None:
    config = 'models:\n  small: {cmd: "s --port ${PORT}"}\n  big: {cmd: "b --port ${PORT}"}\n'
    async with open_swap_harness(config, scripts={"big": Script(start_delay=30)}) as h:
        h.request("small", at=0.0, duration=2.0)
        h.request("big", at=0.5)
        h.request("small", at=1.0)
    assert h.launches == ["small", "big"]
    assert h.completion_order == ["small", "small", "big"]
