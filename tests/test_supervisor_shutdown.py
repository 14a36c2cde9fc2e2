"""Shutdown in the same instant as a start, on trio's mock clock.

The supervisor and its runners used to be cancelled together. A persistent model that
crashed was started again by its restart in the very instant the harness (or the
daemon) cancelled the supervisor: the runner's task was cancelled before the start's
task first ran, its nursery closed, and the supervisor's shutdown then asked that
runner to stop, which raised "Nursery is closed to new arrivals" (found by the property
test in tests/test_supervisor_properties.py, about one run in ten of the full suite
under load). Now the supervisor stops every model first and cancels the runners after.
Trio shuffles the order of tasks that are ready together, so the scenario runs many
times to meet every order.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import trio
import trio.testing

from swapd.core.events import ModelRestart, ModelStateChanged
from swapd.core.states import ModelState
from swapd.testing.harness import Script, open_swap_harness

S = ModelState
TRIES = 40  # about half the orders failed before the fix: 40 miss them with p ~1e-12

CONFIG = """
models:
  kept: {cmd: "server --port ${PORT}"}
  other: {cmd: "server --port ${PORT}"}
groups:
  keep: {persistent: true, swap: false, exclusive: false, members: [kept]}
  rest: {swap: false, exclusive: false, members: [other]}
"""


async def test_a_restart_started_in_the_instant_of_shutdown_is_stopped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for _ in range(TRIES):
        # A whole-numbered start keeps every sum below exact in floating point: the two
        # instants at +8 must be one instant.
        base = float(math.ceil(trio.current_time()) + 1)
        await trio.sleep_until(base)
        scripts = {
            # healthy at +3, crashes at +7, restarted after the first back-off (1 s): +8
            "kept": Script(start_delay=3.0, crash_after=4.0, stop_delay=2.0),
            "other": Script(start_delay=1.0),
        }
        seen: list[object] = []
        with contextlib.ExitStack() as watching:  # past the harness's exit: shutdown too
            async with open_swap_harness(CONFIG, scripts=scripts) as h:
                watching.enter_context(h.supervisor.bus.watch(seen.append))
                h.request("kept", at=base, duration=0.1)
                # the last request ends at +8, the instant the restart starts "kept"
                h.request("other", at=base, duration=7.0)
        restarts = [e for e in seen if isinstance(e, ModelRestart)]
        assert [(e.model, e.state, e.delay) for e in restarts] == [("kept", "scheduled", 1.0)]
        starts = [
            e.at - base
            for e in seen
            if isinstance(e, ModelStateChanged) and e.model == "kept" and e.new is S.STARTING
        ]
        assert starts == [0.0, 8.0]  # the restart did begin in the shutdown's instant
        assert [o.finished for o in h.outcomes] == pytest.approx([base + 3.1, base + 8.0])
        assert h.supervisor.running() == []
        assert {s.state for s in h.supervisor.statistics()} == {S.SHUTDOWN}
        launched = h.launches.count("kept")
        exited = sum(r.what.startswith("exit") for r in h.events() if r.model == "kept")
        assert launched == exited  # every process the restart launched is gone
