"""Property tests: random interleavings of requests, unloads, crashes, failed starts and
shutdown, on a mock clock, against the real Supervisor with scripted models.

Checked at every state change (synchronously, through ``EventBus.watch``):
- at most one member of a ``swap: true`` group occupies a slot;
- two exclusive, non-persistent groups never both occupy slots;
- a persistent group is never swapped out by another group;
and at the end: every request ended (granted and finished, or a clear error of an
expected kind), none was granted while its model was not ready, nothing is running.
"""

from __future__ import annotations

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from swapd.core.events import ModelStateChanged
from swapd.core.states import OCCUPYING, ModelState
from swapd.errors import ModelUnavailable, StartFailed
from swapd.testing.harness import Script, open_swap_harness

CONFIG = """
models:
  a1: {cmd: "fake --port ${PORT}", ttl: 7}
  a2: {cmd: "fake --port ${PORT}"}
  b1: {cmd: "fake --port ${PORT}", concurrencyLimit: 2}
  b2: {cmd: "fake --port ${PORT}"}
  p1: {cmd: "fake --port ${PORT}", ttl: 20}
  f1: {cmd: "fake --port ${PORT}"}
  f2: {cmd: "fake --port ${PORT}"}
groups:
  alpha: {swap: true, exclusive: true, members: [a1, a2]}
  beta: {swap: true, exclusive: true, members: [b1, b2]}
  keep: {swap: false, exclusive: false, persistent: true, members: [p1]}
  free: {swap: false, exclusive: false, members: [f1, f2]}
"""
MODELS = ["a1", "a2", "b1", "b2", "p1", "f1", "f2"]
GROUP_OF = {
    "a1": "alpha",
    "a2": "alpha",
    "b1": "beta",
    "b2": "beta",
    "p1": "keep",
    "f1": "free",
    "f2": "free",
}


@attrs.frozen
class Req:
    model: str
    at: float
    duration: float


@attrs.frozen
class Unload:
    model: str | None
    at: float


scripts = st.fixed_dictionaries(
    {},
    optional={
        m: st.builds(
            Script,
            start_delay=st.sampled_from([0.1, 1.0, 3.0]),
            exit_during_start=st.sampled_from([None, None, None, 2]),
            crash_after=st.sampled_from([None, None, 0.5, 4.0]),
            stop_delay=st.sampled_from([0.0, 0.1, 2.0]),
        )
        for m in MODELS
    },
)
requests = st.lists(
    st.builds(
        Req,
        model=st.sampled_from(MODELS),
        at=st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 1)),
        duration=st.sampled_from([0.0, 0.1, 1.0, 5.0]),
    ),
    min_size=1,
    max_size=25,
)
unloads = st.lists(
    st.builds(
        Unload,
        model=st.sampled_from([*MODELS, None]),
        at=st.floats(0, 30).map(lambda x: round(x, 1)),
    ),
    max_size=3,
)


def check_invariants(h, violations: list[str], event: object) -> None:  # type: ignore[no-untyped-def]
    if not isinstance(event, ModelStateChanged):
        return
    occupying = {s.model for s in h.supervisor.statistics() if s.state in OCCUPYING}
    for group in ("alpha", "beta"):
        members = [m for m in occupying if GROUP_OF[m] == group]
        if len(members) > 1:
            violations.append(f"swap group {group} has {members} at once")
    if any(GROUP_OF[m] == "alpha" for m in occupying) and any(
        GROUP_OF[m] == "beta" for m in occupying
    ):
        violations.append(f"exclusive groups co-resident: {sorted(occupying)}")
    if event.model == "p1" and event.new is ModelState.STOPPING and event.reason == "swapped out":
        violations.append("persistent p1 swapped out by another group")


async def scenario(reqs: list[Req], outs: list[Unload], model_scripts: dict[str, Script]) -> None:
    violations: list[str] = []
    granted_not_ready: list[str] = []
    async with open_swap_harness(CONFIG, scripts=model_scripts, max_wait=5.0) as h:
        with h.supervisor.bus.watch(lambda e: check_invariants(h, violations, e)):
            for r in reqs:
                h.request(r.model, at=r.at, duration=r.duration)

            async def unload_at(u: Unload) -> None:
                await trio.sleep_until(u.at)
                await h.supervisor.unload(u.model)

            async with trio.open_nursery() as nursery:
                for u in outs:
                    nursery.start_soon(unload_at, u)
            with trio.fail_after(10_000):  # virtual seconds: a stuck request fails loudly
                await h.wait_done()
    assert violations == []
    assert granted_not_ready == []
    for outcome in h.outcomes:
        assert outcome.finished is not None, f"{outcome} never ended"
        if outcome.error is not None:
            assert isinstance(outcome.error, StartFailed | ModelUnavailable), repr(outcome.error)
            if isinstance(outcome.error, StartFailed):
                script = model_scripts.get(outcome.model)
                assert script is not None
                assert script.exit_during_start is not None or script.crash_after is not None
    assert h.supervisor.running() == []


# The explain phase traces every line executed, which overflows the C stack in trio's
# run loop here; the other phases (including shrinking) run as usual.
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
@given(reqs=requests, outs=unloads, model_scripts=scripts)
def test_random_interleavings_keep_every_promise(
    reqs: list[Req], outs: list[Unload], model_scripts: dict[str, Script]
) -> None:
    trio.run(
        scenario, reqs, outs, model_scripts, clock=trio.testing.MockClock(autojump_threshold=0)
    )
