"""Scheduler v2 (issue #15) on the swap-order harness: batching for any load time,
parallel loads, priorities.

The models are in-process fakes on pytest-trio's ``autojump_clock``, so loads of minutes
run in milliseconds and always the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio
import trio.testing

from swapd.config import parse_config
from swapd.config.diff import diff_configs
from swapd.config.model import Config
from swapd.core import eviction
from swapd.testing.harness import Script, SwapHarness, open_swap_harness

TWO = """
models:
  big: {cmd: "fake --port ${PORT}"}
  small: {cmd: "fake --port ${PORT}"}
"""


# The table of issue #15: two models in one swap group, 12 alternating requests 0.1 s
# apart, 1 s each, maxSwapWait 10 s. Before the fix, rows with a load over 10 s took one
# launch per request (12 launches, done at 97 / 223 / 493 s).
@pytest.mark.parametrize(
    ("big_load", "small_load", "done_by"),
    [(0.5, 0.5, 3.6), (3, 1, 6.1), (8, 2, 12.1), (12, 2, 16.1), (30, 5, 37.1), (60, 20, 82.1)],
)
async def test_the_issue_table_takes_two_launches_in_every_row(
    autojump_clock: trio.testing.MockClock, big_load: float, small_load: float, done_by: float
) -> None:
    scripts = {"big": Script(start_delay=big_load), "small": Script(start_delay=small_load)}
    async with open_swap_harness(TWO, scripts=scripts) as h:
        for i in range(12):
            h.request("big" if i % 2 == 0 else "small", at=i * 0.1, duration=1.0)
    assert h.launches == ["big", "small"]
    assert all(o.error is None for o in h.outcomes)
    assert h.completion_order == ["big"] * 6 + ["small"] * 6
    # big's load + its batch (1 s) + its stop (0.1 s) + small's load + its batch (1 s)
    assert max(o.finished or 0 for o in h.outcomes) == pytest.approx(done_by, abs=0.05)
    assert h.supervisor.bound_expirations == 0


async def test_steady_arrivals_behind_a_slow_load_swap_once_per_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Both models are asked for every second for 60 s; loads of 30 s and 5 s. Each launch
    # serves everything that queued during it, and a model that keeps getting requests
    # yields after maxSwapWait (10 s) of being ready: a launch per bound, not per request.
    scripts = {"big": Script(start_delay=30), "small": Script(start_delay=5)}
    async with open_swap_harness(TWO, scripts=scripts) as h:
        for i in range(60):
            h.request("big", at=float(i), duration=1.0)
            h.request("small", at=i + 0.5, duration=1.0)
    assert all(o.error is None for o in h.outcomes)
    assert len(h.launches) <= 2 + h.supervisor.bound_expirations
    assert len(h.launches) < 10  # one per request would be 120


def at_once(h: SwapHarness) -> list[str]:
    """Models whose launch happened before any model became healthy."""
    first_healthy = min(r.at for r in h.events("healthy"))
    return sorted(r.model for r in h.events("launch") if r.at < first_healthy)


async def test_loads_that_do_not_conflict_run_in_parallel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = """
models:
  A: {cmd: "fake --port ${PORT}"}
  B: {cmd: "fake --port ${PORT}"}
  C: {cmd: "fake --port ${PORT}"}
  D: {cmd: "fake --port ${PORT}"}
groups:
  together: {swap: false, exclusive: false, members: [A, B]}
  left: {swap: true, exclusive: false, members: [C]}
  right: {swap: true, exclusive: false, members: [D]}
"""
    scripts = {m: Script(start_delay=20) for m in "ABCD"}
    async with open_swap_harness(config, scripts=scripts) as h:
        for model in "ABCD":
            h.request(model, at=0.0, duration=1.0)
    assert at_once(h) == ["A", "B", "C", "D"]  # four 20 s loads at the same time
    assert max(o.finished or 0 for o in h.outcomes) == pytest.approx(21.0, abs=0.05)


async def test_conflicting_loads_still_take_turns(autojump_clock: trio.testing.MockClock) -> None:
    scripts = {"big": Script(start_delay=20), "small": Script(start_delay=20)}
    async with open_swap_harness(TWO, scripts=scripts) as h:
        h.request("big", at=0.0)
        h.request("small", at=0.0)
    assert len(at_once(h)) == 1  # trio picks which client asks first
    assert sorted(h.launches) == ["big", "small"]


THREE = """
models:
  A: {cmd: "fake --port ${PORT}"}
  low: {cmd: "fake --port ${PORT}"}
  high: {cmd: "fake --port ${PORT}"}
  high2: {cmd: "fake --port ${PORT}"}
"""


def with_priorities(monkeypatch: pytest.MonkeyPatch, priorities: dict[str, int]) -> None:
    """What ``routing.scheduler.settings.fifo.priority`` sets (the config side is the
    routing block's): ``eviction.priority_of`` answers for the supervisor."""

    def priority_of(config: Config, model_id: str) -> int:
        del config
        return priorities.get(model_id, 0)

    monkeypatch.setattr(eviction, "priority_of", priority_of)


async def test_a_higher_priority_loads_before_an_older_lower_one(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_priorities(monkeypatch, {"high": 5})
    async with open_swap_harness(THREE) as h:
        h.request("A", at=0.0, duration=4.0)  # ready at 1, busy until 5
        h.request("low", at=1.5)
        h.request("high", at=2.0)
    assert h.launches == ["A", "high", "low"]
    assert h.completion_order == ["A", "high", "low"]


async def test_equal_priorities_load_in_arrival_order(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_priorities(monkeypatch, {"low": 3, "high": 3})
    async with open_swap_harness(THREE) as h:
        h.request("A", at=0.0, duration=4.0)
        h.request("low", at=1.5)
        h.request("high", at=2.0)
    assert h.launches == ["A", "low", "high"]


async def test_the_bound_still_protects_a_low_priority(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two high-priority models are asked for every 0.5 s for 120 s; a low-priority request
    # arrives at 3 s. High priority may overtake it only until it has waited maxSwapWait
    # (5 s); then it goes in arrival order, behind at most the high models ahead of it.
    with_priorities(monkeypatch, {"high": 5, "high2": 5})
    load, stop, wait, longest = 2.0, 0.1, 5.0, 1.0
    scripts = {m: Script(start_delay=load, stop_delay=stop) for m in ("high", "high2", "low")}
    async with open_swap_harness("maxSwapWait: 5\n" + THREE, scripts=scripts) as h:
        for i in range(240):
            h.request("high" if i % 2 else "high2", at=i * 0.5, duration=longest)
        h.request("low", at=3.0, name="low")
    low = next(o for o in h.outcomes if o.name == "low")
    assert low.error is None and low.granted is not None
    # the priority window, then each of the two high models once (load + bound + drain +
    # stop), then low's own load (see core/policy.py, "Worst case for one waiter")
    worst = wait + 2 * (load + wait + longest + stop) + load
    assert low.granted - low.arrived <= worst + 0.05
    assert all(o.error is None for o in h.outcomes)


def test_the_readme_slow_load_scenario_runs_as_written() -> None:
    # README.md, "Test your own config's swap order": the snippet itself, run as a test.
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    [snippet] = [b for b in blocks if "def test_readme_slow_loads" in b]
    namespace: dict[str, object] = {"Script": Script, "open_swap_harness": open_swap_harness}
    exec(snippet, namespace)  # our own README
    scenario = namespace["test_readme_slow_loads"]
    assert callable(scenario)
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(scenario, clock, clock=clock)


FREE = """
models:
  A: {cmd: "fake --port ${PORT}"}
  B: {cmd: "fake --port ${PORT}"}
groups:
  free: {swap: false, exclusive: false, members: [A, B]}
"""


async def reload(h: SwapHarness, text: str) -> None:
    new = parse_config(text, file="<reload>")
    await h.supervisor.reconfigure(new, diff_configs(h.supervisor.config, new))


async def test_a_removed_model_keeps_its_old_conflicts_while_it_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A and B could run together under the old config; removing A mid-request does not
    # make B wait for it.
    async with open_swap_harness(FREE) as h:
        h.request("A", at=0.0, duration=30.0)  # ready at 1, busy until 31
        await trio.sleep(5)
        await reload(h, FREE.replace('  A: {cmd: "fake --port ${PORT}"}\n', "").replace("A, ", ""))
        h.request("B", at=6.0, duration=1.0)
    b = h.outcomes[1]
    assert b.granted == pytest.approx(7.0, abs=0.05)
    first_stop = h.events("stop")[0]
    assert (first_stop.model, first_stop.at) == ("A", pytest.approx(31.0, abs=0.05))


async def test_a_model_the_old_config_did_not_know_waits_for_a_removed_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_swap_harness(FREE) as h:
        h.request("A", at=0.0, duration=30.0)
        await trio.sleep(5)
        await reload(h, FREE.replace("A:", "N:").replace("A,", "N,"))
        h.request("N", at=6.0, duration=1.0)
    n = h.outcomes[1]
    assert n.error is None and n.granted is not None
    assert n.granted >= 31.0  # after A's request ended and A stopped
