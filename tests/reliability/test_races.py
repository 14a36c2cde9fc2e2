"""Race suite: timing races of the swap logic, on pytest-trio's mock clock.

The real ``Supervisor`` drives scripted in-process models (``swapd.testing.harness``), so
"the same instant" really is the same instant and minutes of virtual time pass in
milliseconds. Which of two same-instant events trio runs first is up to its scheduler
(it shuffles), so the tests accept each order and check the outcome of whichever
happened. Nothing here awaits real I/O, which is what makes ``autojump_clock`` safe (see
stack-notes section 6).

Each scenario checks what the client saw (granted, a clear error, or its own
cancellation; never a hang: every wait is bounded by ``fail_after`` in virtual time),
what is left running (the harness exits only with every fake process stopped), and the
event stream, watched synchronously so every transition is seen:

- a model never starts or wakes while a model that conflicts with it occupies a slot;
- a request is granted only while its model is ready, within its concurrency limit.

Existing races covered elsewhere: random interleavings of requests, unloads, crashes and
failed starts (tests/test_supervisor_properties.py); two exclusive groups at once and
an unload racing a restart (tests/test_swap_order.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import pytest
import trio
import trio.testing
from reliability_support import EventLog, recording

from swapd.core.events import ModelStateChanged
from swapd.core.states import OCCUPYING, ModelState
from swapd.errors import ModelUnavailable, QueueFull, StartFailed, SwapdError
from swapd.supervise.supervisor import Supervisor
from swapd.testing.harness import Script, SwapHarness, open_swap_harness

S = ModelState
NEVER = 1_000_000.0  # virtual seconds: a stuck wait fails loudly instead of hanging


@attrs.define
class Request:
    """One client of the supervisor and what it saw."""

    model: str
    at: float
    hold: float = 0.1
    give_up_after: float | None = None  # cancel the wait after this long (client left)
    leave_while_served_after: float | None = None  # cancel while holding the lease
    granted: float | None = None
    ended: float | None = None
    error: BaseException | None = None
    cancelled: bool = False
    granted_in: ModelState | None = None
    in_flight_at_grant: int = 0

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return "error"
        if self.cancelled:
            return "cancelled"
        return "served" if self.ended is not None else "hung"


async def run_client(supervisor: Supervisor, req: Request) -> None:
    """Ask for ``req.model`` at ``req.at``; hold the lease ``req.hold`` seconds."""
    await trio.sleep_until(req.at)
    with trio.CancelScope() as scope:
        if req.give_up_after is not None:
            scope.deadline = trio.current_time() + req.give_up_after
        try:
            lease = await supervisor.acquire(req.model)
        except SwapdError as exc:
            req.error = exc
            req.ended = trio.current_time()
            return
        req.granted = trio.current_time()
        req.granted_in = supervisor.runner(req.model).state
        stat = next(s for s in supervisor.statistics() if s.model == req.model)
        req.in_flight_at_grant = stat.in_flight
        scope.deadline = (
            trio.current_time() + req.leave_while_served_after
            if req.leave_while_served_after is not None
            else trio.current_time() + req.hold + 1.0  # the hold below always ends first
        )
        try:
            await trio.sleep(req.hold)
        finally:
            lease.release()
        req.ended = trio.current_time()
    if scope.cancelled_caught:
        req.cancelled = True
        req.ended = trio.current_time()


def conflict_checker(
    h: SwapHarness, groups: dict[str, dict[str, bool]], group_of: dict[str, str]
) -> tuple[Callable[[object], None], list[str]]:
    """A bus watcher checking, at every state change, that nothing started or woke while a
    conflicting model occupied a slot (the README's rule), and that swap groups never
    hold two members at once."""
    violations: list[str] = []

    def conflicts(model: str, other: str) -> bool:
        mine, theirs = group_of[model], group_of[other]
        if model == other:
            return False
        if mine == theirs:
            return groups[mine]["swap"]
        return groups[mine]["exclusive"] and not groups[theirs].get("persistent", False)

    def check(event: object) -> None:
        if not isinstance(event, ModelStateChanged):
            return
        occupying = {s.model for s in h.supervisor.statistics() if s.state in OCCUPYING}
        if event.new in (S.STARTING, S.WAKING):
            blockers = sorted(o for o in occupying if conflicts(event.model, o))
            if blockers:
                violations.append(f"{event.model} started while {blockers} occupied a slot")
        for group, rules in groups.items():
            members = sorted(m for m in occupying if group_of[m] == group)
            if rules["swap"] and len(members) > 1:
                violations.append(f"swap group {group} holds {members} at once")

    return check, violations


async def test_a_request_arriving_as_the_ttl_expires_is_served_the_946_race(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """llama-swap #946: a TTL unload and a new request at the same moment deadlocked the
    group. Here the TTL timer and the request land in the same instant (and just before
    and after it), with stops that take no time, some time, and longer than a start."""
    config = 'models:\n  A: {cmd: "fake --port ${PORT}", ttl: 5}\n'
    for stop_delay in (0.0, 0.5, 3.0):
        for offset in (-0.001, 0.0, 0.001):
            script = Script(start_delay=1.0, stop_delay=stop_delay)
            async with open_swap_harness(config, scripts={"A": script}) as h:
                base = trio.current_time()
                with recording(h.supervisor.bus) as log, trio.fail_after(NEVER):
                    first = Request("A", at=base, hold=1.0)  # ready at +1, idle from +2
                    late = Request("A", at=base + 2.0 + 5.0 + offset, hold=1.0)  # TTL at +7
                    again = Request("A", at=base + 60.0)  # later still: nothing wedged
                    async with trio.open_nursery() as nursery:
                        for req in (first, late, again):
                            nursery.start_soon(run_client, h.supervisor, req)
            where = f"stop_delay={stop_delay} offset={offset}"
            assert [r.outcome for r in (first, late, again)] == ["served"] * 3, where
            assert all(r.granted_in is S.READY for r in (first, late, again)), where
            assert late.granted is not None
            # served at once, or after the TTL stop finished and a fresh start
            assert late.granted - late.at <= stop_delay + 1.0 + 1e-6, where
            expired = [
                e
                for e in log.changes("A")
                if e.reason.startswith("idle for its ttl") and e.new is S.STOPPING
            ]
            assert 1 <= len(expired) <= 3, where  # never mid-request: see the outcomes
            assert all(e.old is S.READY for e in expired), where
            assert h.supervisor.running() == []


@pytest.mark.parametrize("unload_at", [0.5, 1.0])
async def test_an_unload_during_a_start_stops_it_and_the_waiting_request_restarts_it(
    autojump_clock: trio.testing.MockClock, unload_at: float
) -> None:
    """``unload`` while the model is starting, and in the very instant it becomes healthy
    (1.0): the unload returns once the process is gone, and the request either was served
    already or is served by a fresh start; it never hangs and never gets an error."""
    config = 'models:\n  A: {cmd: "fake --port ${PORT}"}\n  B: {cmd: "fake --port ${PORT}"}\n'
    scripts = {"A": Script(start_delay=1.0, stop_delay=0.25)}
    async with open_swap_harness(config, scripts=scripts) as h:
        with recording(h.supervisor.bus) as log, trio.fail_after(NEVER):
            req = Request("A", at=0.0, hold=0.5)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_client, h.supervisor, req)
                await trio.sleep(unload_at)
                await h.supervisor.unload("A")
                unloaded_at = trio.current_time()
    assert unloaded_at == pytest.approx(unload_at + 0.25)
    assert req.outcome == "served"
    assert req.granted_in is S.READY
    first_stop = next(e for e in log.changes("A") if e.new is S.STOPPING)
    assert first_stop.reason == "unloaded"
    if h.launches == ["A", "A"]:  # the unload came first: the waiting request restarts A
        assert req.granted == pytest.approx(unload_at + 0.25 + 1.0)
    else:  # A became healthy and the request was granted in the same instant, then cut
        assert h.launches == ["A"]
        assert unload_at == 1.0
        assert first_stop.old is S.READY
        assert req.granted == pytest.approx(1.0)
    if first_stop.old is S.STARTING:
        assert h.launches == ["A", "A"]
    assert h.supervisor.running() == []


async def test_an_unload_of_everything_in_the_middle_of_a_swap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``POST /api/models/unload`` while A is being stopped for B and B is waiting: the
    unload returns, B's waiting request is still served, nothing is left running."""
    config = 'models:\n  A: {cmd: "fake --port ${PORT}"}\n  B: {cmd: "fake --port ${PORT}"}\n'
    scripts = {"A": Script(stop_delay=2.0), "B": Script(start_delay=2.0)}
    async with open_swap_harness(config, scripts=scripts) as h:
        with trio.fail_after(NEVER):
            a, b = Request("A", at=0.0, hold=1.0), Request("B", at=0.5)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_client, h.supervisor, a)
                nursery.start_soon(run_client, h.supervisor, b)
                await trio.sleep(2.5)  # A is stopping (since 2.0), B waits for its slot
                assert h.supervisor.runner("A").state is S.STOPPING
                await h.supervisor.unload()
    assert [a.outcome, b.outcome] == ["served", "served"]
    assert b.granted == pytest.approx(4.0 + 2.0)  # after A's 2 s stop and B's 2 s start
    assert h.supervisor.running() == []


EXCLUSIVE = """
models:
  A1: {cmd: "fake --port ${PORT}"}
  A2: {cmd: "fake --port ${PORT}"}
  B: {cmd: "fake --port ${PORT}"}
  C: {cmd: "fake --port ${PORT}"}
groups:
  ga: {swap: true, exclusive: true, members: [A1, A2]}
  gb: {swap: true, exclusive: true, members: [B]}
  gc: {swap: true, exclusive: true, members: [C]}
"""
EXCLUSIVE_GROUPS = {
    "ga": {"swap": True, "exclusive": True},
    "gb": {"swap": True, "exclusive": True},
    "gc": {"swap": True, "exclusive": True},
}
EXCLUSIVE_OF = {"A1": "ga", "A2": "ga", "B": "gb", "C": "gc"}


async def test_exclusive_groups_requested_in_the_same_instant_never_coexist(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Sharp edge 1 (no global swap lock in llama-swap): four models in three exclusive
    groups, all asked for in the same instant, repeatedly. Checked at every state change,
    synchronously (tests/test_swap_order.py checks two groups from a subscriber task)."""
    scripts = {
        "A1": Script(start_delay=0.5),
        "A2": Script(start_delay=1.5, stop_delay=0.5),
        "B": Script(start_delay=1.0),
        "C": Script(start_delay=0.0, stop_delay=0.0),
    }
    async with open_swap_harness(EXCLUSIVE, scripts=scripts) as h:
        check, violations = conflict_checker(h, EXCLUSIVE_GROUPS, EXCLUSIVE_OF)
        with h.supervisor.bus.watch(check), trio.fail_after(NEVER):
            reqs = [Request(m, at=float(t)) for t in (0, 0, 3, 3, 3) for m in EXCLUSIVE_OF]
            async with trio.open_nursery() as nursery:
                for req in reqs:
                    nursery.start_soon(run_client, h.supervisor, req)
    assert violations == []
    assert [r.outcome for r in reqs] == ["served"] * len(reqs)
    assert all(r.granted_in is S.READY for r in reqs)
    assert sorted(set(h.launches)) == ["A1", "A2", "B", "C"]
    assert h.supervisor.running() == []


MIXED = """
maxQueuedRequests: 400
maxSwapWait: 5
models:
  a1: {cmd: "fake --port ${PORT}", ttl: 4}
  a2: {cmd: "fake --port ${PORT}", concurrencyLimit: 3}
  b1: {cmd: "fake --port ${PORT}"}
  b2: {cmd: "fake --port ${PORT}", ttl: 2, concurrencyLimit: 2}
  c1: {cmd: "fake --port ${PORT}", concurrencyLimit: 2}
groups:
  alpha: {swap: true, exclusive: true, members: [a1, a2]}
  beta: {swap: true, exclusive: true, members: [b1, b2]}
  gamma: {swap: false, exclusive: false, members: [c1]}
"""
MIXED_GROUPS = {
    "alpha": {"swap": True, "exclusive": True},
    "beta": {"swap": True, "exclusive": True},
    "gamma": {"swap": False, "exclusive": False},
}
MIXED_OF = {"a1": "alpha", "a2": "alpha", "b1": "beta", "b2": "beta", "c1": "gamma"}
MIXED_LIMIT = {"a1": 10, "a2": 3, "b1": 10, "b2": 2, "c1": 2}
MIXED_SCRIPTS = {
    "a1": Script(start_delay=1.0),
    "a2": Script(start_delay=2.0, stop_delay=0.5),
    "b1": Script(start_delay=0.5, crash_after=3.0),  # crashes when kept up 3 s
    "b2": Script(start_delay=1.5, stop_delay=1.0),
    "c1": Script(start_delay=0.2, stop_delay=0.0),
}


def mixed_requests(seed: int, count: int) -> list[Request]:
    rng = random.Random(seed)
    reqs = []
    for _ in range(count):
        req = Request(
            rng.choice(list(MIXED_OF)),
            at=round(rng.uniform(0, 400), 2),
            hold=rng.choice([0.0, 0.05, 0.5, 2.0, 6.0]),
        )
        roll = rng.random()
        if roll < 0.15:
            req.give_up_after = rng.choice([0.0, 0.01, 0.3, 1.0, 4.0, 12.0])
        elif roll < 0.25:
            req.leave_while_served_after = rng.choice([0.0, 0.01, 0.2, 1.0])
        reqs.append(req)
    return reqs


@pytest.mark.parametrize("seed", [1, 2])
async def test_a_thousand_mixed_requests_with_cancellations_all_end(
    autojump_clock: trio.testing.MockClock, seed: int
) -> None:
    """1,000 requests over 5 models in 3 groups (two exclusive swap groups, one shared),
    with TTLs, concurrency limits, a model that crashes now and then, explicit unloads and
    a quarter of the clients cancelling (while waiting, or while being served). Every
    request ends — served, cancelled by its client, or a clear error — none hangs, and
    the group rules hold at every state change."""
    reqs = mixed_requests(seed, 1000)
    unload_times = sorted(random.Random(seed).uniform(0, 400) for _ in range(8))
    async with open_swap_harness(MIXED, scripts=MIXED_SCRIPTS) as h:
        check, violations = conflict_checker(h, MIXED_GROUPS, MIXED_OF)
        log = EventLog()
        with h.supervisor.bus.watch(check), h.supervisor.bus.watch(log), trio.fail_after(NEVER):
            async with trio.open_nursery() as nursery:
                for req in reqs:
                    nursery.start_soon(run_client, h.supervisor, req)

                async def unloads() -> None:
                    for i, at in enumerate(unload_times):
                        await trio.sleep_until(at)
                        await h.supervisor.unload(list(MIXED_OF)[i % 5] if i % 3 else None)

                nursery.start_soon(unloads)
            stats = h.supervisor.statistics()
    assert violations == []
    outcomes = [r.outcome for r in reqs]
    assert "hung" not in outcomes
    assert outcomes.count("served") > 600, outcomes.count("served")
    for req in reqs:
        if req.error is not None:
            # b1 crashes; a request granted nothing gets StartFailed/ModelUnavailable only
            # through a failed start, which these scripts never have; a full queue is 429
            assert isinstance(req.error, QueueFull | StartFailed | ModelUnavailable), req.error
        if req.granted is not None:
            assert req.granted_in is S.READY, req
            assert req.in_flight_at_grant <= MIXED_LIMIT[req.model], req
    assert all(s.in_flight == 0 and s.waiting == 0 for s in stats), stats
    assert h.supervisor.running() == []
    # the event stream saw every crash of b1 and nothing else exit on its own
    crashes = [e for e in log.changes() if e.reason.startswith("exited unexpectedly")]
    assert crashes and {e.model for e in crashes} == {"b1"}
