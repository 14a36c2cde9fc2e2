"""A runner's commands issued in the same instant, on trio's mock clock.

A stop that came in the same scheduling step as a start (an unload racing the request
that started the model), before the start's task had first run, found no operation to
cancel: the start ran on beside the next one, two scripted processes lived at once, the
runner lost track of one, and the model stayed in ``stopping`` forever with every request
for it waiting (found by the 1,000-request race test in tests/reliability/test_races.py,
about one run in two for one of its seeds). Trio shuffles which of two ready tasks runs
first, so each scenario runs many times to meet both orders.
"""

from __future__ import annotations

import trio
import trio.testing
from runner_moves import Moves

from swapd.config import parse_config
from swapd.core.events import ModelStateChanged
from swapd.core.states import ModelState
from swapd.supervise.runner import Runner
from swapd.testing.harness import FakeLauncher, Script

S = ModelState
TRIES = 40  # each run meets one of trio's two orders at random; 40 miss one with p ~1e-12


def launches_and_exits(launcher: FakeLauncher) -> tuple[int, int]:
    whats = [r.what for r in launcher.timeline]
    return whats.count("launch"), sum(w.startswith("exit") for w in whats)


async def open_runner(nursery: trio.Nursery, script: Script) -> tuple[Runner, FakeLauncher, Moves]:
    config = parse_config("models:\n  m:\n    cmd: server --port ${PORT}\n", file="<test>")
    launcher = FakeLauncher({"m": script})
    moves = Moves([])
    runner = Runner("m", config.models["m"], launcher, health_timeout=60, on_change=moves.on_change)
    await nursery.start(runner.run)
    return runner, launcher, moves


async def test_a_stop_in_the_same_instant_as_a_start_cancels_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for _ in range(TRIES):
        async with trio.open_nursery() as nursery:
            runner, launcher, moves = await open_runner(nursery, Script(start_delay=1.0))
            with trio.fail_after(60):
                runner.start("requested")
                runner.stop("unloaded")  # before the start's task ran
                await runner.stopped.wait()
                runner.start("requested")  # the next request, at once
                await moves.reach(runner, S.READY)
                launched, exited = launches_and_exits(launcher)
                assert launched - exited == 1  # one live process, the runner's own
                assert runner.pid == 1000 + launched
                runner.stop("swapped out")
                await runner.stopped.wait()
            assert runner.state is S.STOPPED
            assert launches_and_exits(launcher)[0] == launches_and_exits(launcher)[1]
            runner.close()


async def test_a_stop_in_the_same_instant_as_a_sleep_or_wake_wins(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for _ in range(TRIES):
        for command in ("sleep", "wake"):
            async with trio.open_nursery() as nursery:
                runner, launcher, moves = await open_runner(nursery, Script(start_delay=0.5))
                with trio.fail_after(60):
                    runner.start("requested")
                    await moves.reach(runner, S.READY)
                    if command == "wake":
                        runner.sleep("idle")
                        await moves.reach(runner, S.ASLEEP)
                        runner.wake("requested")
                    else:
                        runner.sleep("idle")
                    runner.stop("unloaded")  # before the sleep's or wake's task ran
                    await runner.stopped.wait()
                    await trio.sleep(1)  # the cancelled operation never moves it again
                assert runner.state is S.STOPPED
                assert [c.new for c in moves.seen if isinstance(c, ModelStateChanged)][-2:] == [
                    S.STOPPING,
                    S.STOPPED,
                ]
                launched, exited = launches_and_exits(launcher)
                assert launched == exited == 1
                runner.close()
