"""The pure swap policy, driven with hand-built snapshots (no trio, no clock)."""

from __future__ import annotations

from swapd.config.model import GroupConfig
from swapd.core.eviction import GroupRule
from swapd.core.policy import ModelView, Snapshot, plan
from swapd.core.states import ModelState

S = ModelState
GROUPS = {
    "(default)": GroupConfig(),
    "free": GroupConfig(swap=False, exclusive=False),
    "keep": GroupConfig(swap=False, exclusive=False, persistent=True),
}
GROUP_OF: dict[str, str] = {}  # model -> group, filled by ``view``


def snap(*views: ModelView, now: float = 100.0, max_wait: float = 10.0) -> Snapshot:
    rule = GroupRule(group_of=dict(GROUP_OF), groups=GROUPS)
    return Snapshot(now=now, models={v.model_id: v for v in views}, rule=rule, max_wait=max_wait)


def view(model_id: str, group: str = "(default)", **kw: object) -> ModelView:
    GROUP_OF[model_id] = group
    return ModelView(model_id=model_id, **kw)  # type: ignore[arg-type]


def waiting(model_id: str, *tickets: int, at: float = 99.0, **kw: object) -> ModelView:
    return view(model_id, waiting=len(tickets), tickets=tickets, oldest_wait=at, **kw)


def test_conflicts_are_llama_swaps_asymmetric_rule() -> None:
    s = snap(view("a"), view("b"), view("f", "free"), view("p", "keep"))
    assert isinstance(s.rule, GroupRule)
    assert s.rule.conflicts("a", "b")  # same swap group
    assert s.rule.conflicts("a", "f")  # a's group is exclusive, f's is not persistent
    assert not s.rule.conflicts("f", "a")  # f's group is not exclusive
    assert not s.rule.conflicts("a", "p")  # persistent groups are never pushed out
    assert not s.rule.conflicts("a", "a")


def test_a_free_slot_starts_the_model() -> None:
    p = plan(snap(waiting("a", 1)))
    assert p.start == ("a",)
    assert not p.stop


def test_ready_model_admits_up_to_its_limit() -> None:
    p = plan(snap(waiting("a", 1, 2, 3, state=S.READY, in_flight=1, limit=3)))
    assert p.admit == {"a": 2}


def test_idle_conflicting_model_is_swapped_out_not_started_over() -> None:
    p = plan(snap(waiting("b", 1), view("a", state=S.READY)))
    assert p.stop == ("a",)
    assert p.start == ()  # b starts once a is gone


def test_busy_or_loading_models_are_never_evicted() -> None:
    busy = plan(snap(waiting("b", 1), view("a", state=S.READY, in_flight=1)))
    loading = plan(snap(waiting("b", 1), waiting("a", 2, state=S.STARTING)))
    assert busy.stop == () and busy.start == ()
    assert loading.stop == () and loading.cancel == ()
    assert busy.wake_at == 99.0 + 10.0  # re-plan when b has waited max_wait


def test_after_max_wait_the_loaded_model_only_takes_older_requests() -> None:
    a = waiting("a", 1, 5, state=S.READY, in_flight=1, at=80.0)
    p = plan(snap(a, waiting("b", 3, at=85.0), now=96.0))
    assert p.admit == {"a": 1}  # ticket 1 is older than b's 3; ticket 5 waits
    assert p.draining == frozenset({"a"})


def test_sleep_capable_models_are_put_to_sleep() -> None:
    p = plan(snap(waiting("b", 1), view("a", state=S.READY, sleep_enabled=True)))
    assert p.sleep == ("a",)
    assert p.stop == ()


def test_asleep_models_occupy_nothing_and_are_woken() -> None:
    p = plan(snap(waiting("a", 1, state=S.ASLEEP), view("b", state=S.READY, in_flight=1)))
    assert p.wake == ()  # b is busy in a's swap group
    q = plan(snap(waiting("a", 1, state=S.ASLEEP), view("f", "free", state=S.ASLEEP)))
    assert q.wake == ("a",)


def test_an_abandoned_start_is_cancelled_for_a_waiting_model() -> None:
    p = plan(snap(waiting("b", 1), view("a", state=S.STARTING)))
    assert p.cancel == ("a",)


def test_younger_loads_never_overtake_an_older_conflicting_one() -> None:
    a = view("a", state=S.READY, in_flight=1)
    p = plan(snap(a, waiting("b", 1), waiting("f", 2, group="free")))
    # f does not conflict with anything that occupies a slot, but b (older, exclusive)
    # would have to push f out again: f waits its turn.
    assert p.start == ()


def test_ttl_expires_idle_models_only() -> None:
    idle = view("a", state=S.READY, ttl=5.0, last_used=90.0)
    busy = view("b", "free", state=S.READY, ttl=5.0, last_used=90.0, in_flight=1)
    p = plan(snap(idle, busy))
    assert p.expire == ("a",)
    later = plan(snap(view("a", state=S.READY, ttl=50.0, last_used=90.0)))
    assert later.expire == () and later.wake_at == 140.0


def test_back_off_delays_a_new_start() -> None:
    p = plan(snap(waiting("a", 1, retry_at=103.0)))
    assert p.start == ()
    assert p.wake_at == 103.0


def test_requests_that_joined_a_load_are_served_by_it_past_the_bound() -> None:
    # a became ready at 90 with tickets up to 6 handed out; b has waited since 50 (behind
    # a's load), 20 s past max_wait counted from arrival, but only 10 s behind ready a.
    a = waiting("a", 1, 3, 5, 7, state=S.READY, ready_since=90.0, ready_ticket=6, limit=2)
    p = plan(snap(a, waiting("b", 2, 4, 6, at=50.0)))
    assert p.admit == {"a": 2}  # 1 and 3 now; 5 (joined) later; 7 (newer than b) never
    assert p.draining == frozenset({"a"})
    a_later = waiting("a", 5, 7, state=S.READY, ready_since=90.0, ready_ticket=6, in_flight=1)
    q = plan(snap(a_later, waiting("b", 2, 4, 6, at=50.0)))
    assert q.admit == {"a": 1}  # 5 joined a's load


def test_the_bound_counts_from_when_the_blocker_became_ready() -> None:
    a = waiting("a", 3, state=S.READY, ready_since=95.0, ready_ticket=2, in_flight=1)
    p = plan(snap(a, waiting("b", 2, at=50.0)))
    assert p.admit == {"a": 1}  # b's clock against a started at 95, not at 50
    assert p.draining == frozenset()
    assert p.wake_at == 105.0


def test_no_bound_while_the_blocker_is_still_loading() -> None:
    a = waiting("a", 1, state=S.STARTING)
    p = plan(snap(a, waiting("b", 2, at=10.0)))
    assert p.draining == frozenset() and p.cancel == () and p.stop == ()
    assert p.wake_at == float("inf")  # a becoming ready re-plans


def test_higher_priority_loads_first_then_fifo_among_equals() -> None:
    a = view("a", state=S.READY)
    low = waiting("low", 1, at=95.0, priority=0)
    high = waiting("high", 2, at=96.0, priority=5)
    p = plan(snap(a, low, high))
    assert p.stop == ("a",)
    gone = plan(snap(view("a"), low, high))
    assert gone.start == ("high",)
    assert gone.wake_at == 95.0 + 10.0  # low is promoted when overdue
    equal = plan(snap(view("a"), waiting("x", 1, at=95.0), waiting("y", 2, at=96.0)))
    assert equal.start == ("x",)


def test_an_overdue_low_priority_waiter_is_not_overtaken_any_more() -> None:
    low = waiting("low", 1, at=80.0, priority=0)  # waited 20 s > max_wait
    high = waiting("high", 2, at=96.0, priority=5)
    p = plan(snap(low, high))
    assert p.start == ("low",)
