"""Property tests for the scheduler (issue #15): realistic load times, on a mock clock.

Random configs of 2-5 models (one swap group; two exclusive groups; a swap group and a
non-exclusive one), load times from 0.1 s to 300 s, bursts and steady arrivals, clients
that leave, TTLs, and (in the chaos test) crashes and failed starts, run against the real
Supervisor with scripted models (``swapd.testing.harness``). Checked:

- no request is lost or stuck: each one is served, or ends with an expected error, or
  its client left;
- launches <= demand episodes + bound expirations (+ crashes and failed starts), where an
  episode is a request that finds its model not loaded with nothing of it queued or in
  flight. A burst that arrives before any load ends launches each model exactly once;
- without crashes, no waiter exceeds the worst case stated in ``core/policy.py``: the
  sum over the models asked for up to its arrival of (load + maxSwapWait + longest
  request + stop), plus its own model's load; with priorities, plus maxSwapWait and the
  turns of higher-priority models asked for within maxSwapWait after it.
"""

from __future__ import annotations

from unittest import mock

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from swapd.config.model import Config
from swapd.core import eviction
from swapd.core.states import ModelState
from swapd.errors import ModelUnavailable, StartFailed
from swapd.testing.harness import Script, SwapHarness, open_swap_harness

S = ModelState
MAX_WAIT = 10.0
LAYOUTS = ("one swap group", "two exclusive groups", "swap group and free group")


@attrs.frozen
class Req:
    model: int  # index into the scenario's models
    at: float
    duration: float
    patience: float | None


@attrs.frozen
class Scenario:
    layout: str
    loads: tuple[float, ...]
    stops: tuple[float, ...]
    ttls: tuple[int, ...]
    reqs: tuple[Req, ...]
    crash_after: tuple[float | None, ...]
    fail_start: tuple[bool, ...]
    priorities: tuple[int, ...]

    @property
    def models(self) -> list[str]:
        return [f"m{i}" for i in range(len(self.loads))]

    def config(self) -> str:
        lines = [f"maxSwapWait: {MAX_WAIT:g}", "healthCheckTimeout: 600", "models:"]
        for name, ttl in zip(self.models, self.ttls, strict=True):
            extra = f", ttl: {ttl}" if ttl else ""
            lines.append(
                f'  {name}: {{cmd: "fake --port ${{PORT}}", concurrencyLimit: 100{extra}}}'
            )
        half = max(1, len(self.models) // 2)
        first, rest = self.models[:half], self.models[half:]
        lines.append("groups:")
        if self.layout == "one swap group" or not rest:
            lines.append(
                f"  g1: {{swap: true, exclusive: true, members: [{', '.join(self.models)}]}}"
            )
        else:
            second = (
                "exclusive: true"
                if self.layout == "two exclusive groups"
                else "swap: false, exclusive: false"
            )
            lines.append(f"  g1: {{swap: true, exclusive: true, members: [{', '.join(first)}]}}")
            lines.append(f"  g2: {{{second}, members: [{', '.join(rest)}]}}")
        return "\n".join(lines) + "\n"

    def scripts(self) -> dict[str, Script]:
        return {
            name: Script(
                start_delay=self.loads[i],
                stop_delay=self.stops[i],
                crash_after=self.crash_after[i],
                exit_during_start=2 if self.fail_start[i] else None,
            )
            for i, name in enumerate(self.models)
        }


DURATIONS = (0.1, 1.0, 5.0)
load_times = st.floats(0.1, 300).map(lambda x: round(x, 1))


def bursts(n: int, *, within: float) -> st.SearchStrategy[list[Req]]:
    """Groups of requests arriving 10 ms apart, interleaved over the models."""

    def burst(
        start: float, models: list[int], duration: float, patience: float | None
    ) -> list[Req]:
        return [
            Req(m, round(start + i * 0.01, 2), duration, patience) for i, m in enumerate(models)
        ]

    return st.builds(
        burst,
        st.floats(0, within).map(lambda x: round(x, 1)),
        st.lists(st.integers(0, n - 1), min_size=1, max_size=12),
        st.sampled_from(DURATIONS),
        st.none(),
    )


def steady(n: int, *, leaving: bool) -> st.SearchStrategy[list[Req]]:
    """One model, or two alternating, asked for every ``period`` seconds."""

    def series(
        start: float,
        models: list[int],
        period: float,
        count: int,
        duration: float,
        patience: float | None,
    ) -> list[Req]:
        return [
            Req(models[i % len(models)], round(start + i * period, 2), duration, patience)
            for i in range(count)
        ]

    return st.builds(
        series,
        st.floats(0, 400).map(lambda x: round(x, 1)),
        st.lists(st.integers(0, n - 1), min_size=1, max_size=2),
        st.sampled_from([0.5, 2.0, 7.0, 30.0]),
        st.integers(1, 15),
        st.sampled_from(DURATIONS),
        st.sampled_from([None, None, 1.0, 20.0, 120.0]) if leaving else st.none(),
    )


@st.composite
def scenarios(
    draw: st.DrawFn, *, chaos: bool = False, burst_only: bool = False, with_priorities: bool = False
) -> Scenario:
    n = draw(st.integers(2, 5))
    loads = draw(
        st.lists(
            st.floats(1.1, 300).map(lambda x: round(x, 1)) if burst_only else load_times,
            min_size=n,
            max_size=n,
        )
    )
    stops = draw(st.lists(st.sampled_from([0.0, 0.1, 2.0]), min_size=n, max_size=n))
    ttls = (
        [0] * n
        if burst_only
        else draw(st.lists(st.sampled_from([0, 0, 5, 60]), min_size=n, max_size=n))
    )
    pattern = (
        bursts(n, within=1.0)
        if burst_only
        else st.one_of(bursts(n, within=400), steady(n, leaving=True))
    )
    groups = draw(st.lists(pattern, min_size=1, max_size=4))
    reqs = tuple(r for g in groups for r in g)
    crash = (
        draw(st.lists(st.sampled_from([None, None, 3.0, 60.0]), min_size=n, max_size=n))
        if chaos
        else [None] * n
    )
    fail = (
        draw(st.lists(st.sampled_from([False, False, False, True]), min_size=n, max_size=n))
        if chaos
        else [False] * n
    )
    prio = (
        draw(st.lists(st.sampled_from([0, 0, 1, 5]), min_size=n, max_size=n))
        if chaos or with_priorities
        else [0] * n
    )
    return Scenario(
        layout=draw(st.sampled_from(LAYOUTS)),
        loads=tuple(loads),
        stops=tuple(stops),
        ttls=tuple(ttls),
        reqs=reqs,
        crash_after=tuple(crash),
        fail_start=tuple(fail),
        priorities=tuple(prio),
    )


async def run(scenario: Scenario) -> SwapHarness:
    priorities = dict(zip(scenario.models, scenario.priorities, strict=True))

    def priority_of(config: Config, model_id: str) -> int:
        del config
        return priorities.get(model_id, 0)

    with mock.patch.object(eviction, "priority_of", priority_of):
        async with open_swap_harness(scenario.config(), scripts=scenario.scripts()) as h:
            for r in scenario.reqs:
                h.request(
                    scenario.models[r.model], at=r.at, duration=r.duration, patience=r.patience
                )
            with trio.fail_after(100_000):  # virtual seconds: a stuck request fails loudly
                await h.wait_done()
    return h


def episodes(h: SwapHarness) -> int:
    """Requests that found their model not loaded, with nothing of it queued or in flight."""
    loaded = (S.STARTING, S.READY, S.WAKING)
    return sum(
        1
        for o in h.outcomes
        if o.found is not None and o.found[0] not in loaded and o.found[1] == 0 and o.found[2] == 0
    )


def unplanned_exits(h: SwapHarness) -> int:
    """Crashes and failed starts (a stop records exit 0; shutdown kills record exit -9)."""
    return sum(
        1 for r in h.events() if r.what.startswith("exit") and r.what not in ("exit 0", "exit -9")
    )


def check_common(scenario: Scenario, h: SwapHarness) -> None:
    for o in h.outcomes:
        assert o.finished is not None, f"{o} never ended"
        if o.error is not None:
            assert isinstance(o.error, StartFailed | ModelUnavailable), repr(o.error)
            i = scenario.models.index(o.model)
            assert scenario.fail_start[i] or scenario.crash_after[i] is not None, repr(o)
        elif not o.left:
            assert o.granted is not None
    assert h.supervisor.running() == []
    budget = episodes(h) + h.supervisor.bound_expirations + unplanned_exits(h)
    assert len(h.launches) <= budget, (h.launches, budget)


def check_worst_case(scenario: Scenario, h: SwapHarness) -> None:
    longest = max(r.duration for r in scenario.reqs)
    index = {m: i for i, m in enumerate(scenario.models)}
    for o in h.outcomes:
        if o.granted is None:
            continue
        asked = {p.model for p in h.outcomes if p.arrived <= o.arrived}
        mine = scenario.priorities[index[o.model]]
        higher = {
            p.model
            for p in h.outcomes
            if p.arrived < o.arrived + MAX_WAIT and scenario.priorities[index[p.model]] > mine
        }
        turns = sum(
            scenario.loads[index[k]] + MAX_WAIT + longest + scenario.stops[index[k]] + 0.01
            for k in asked | higher
        )
        worst = turns + scenario.loads[index[o.model]] + (MAX_WAIT if higher else 0.0)
        assert o.granted - o.arrived <= worst, (o, worst)


COMMON = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # The explain phase traces every line, which overflows the C stack in trio's run loop.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)


def mock_run(scenario: Scenario) -> SwapHarness:
    return trio.run(run, scenario, clock=trio.testing.MockClock(autojump_threshold=0))


@COMMON
@given(scenario=scenarios())
def test_realistic_loads_keep_every_promise_and_the_worst_case(scenario: Scenario) -> None:
    h = mock_run(scenario)
    check_common(scenario, h)
    check_worst_case(scenario, h)


@COMMON
@given(scenario=scenarios(with_priorities=True))
def test_priorities_overtake_for_at_most_the_bound(scenario: Scenario) -> None:
    h = mock_run(scenario)
    check_common(scenario, h)
    check_worst_case(scenario, h)


@COMMON
@given(scenario=scenarios(burst_only=True))
def test_a_burst_during_the_loads_launches_each_model_once(scenario: Scenario) -> None:
    h = mock_run(scenario)
    check_common(scenario, h)
    check_worst_case(scenario, h)
    asked = {scenario.models[r.model] for r in scenario.reqs}
    assert sorted(h.launches) == sorted(asked)
    assert all(o.granted is not None for o in h.outcomes)


@COMMON
@given(scenario=scenarios(chaos=True))
def test_crashes_failed_starts_and_priorities_lose_nothing(scenario: Scenario) -> None:
    h = mock_run(scenario)
    check_common(scenario, h)
