"""The pure swap policy, driven with hand-built snapshots (no trio, no clock)."""

from __future__ import annotations

from swapd.core.policy import GroupView, ModelView, Snapshot, conflicts_with, plan
from swapd.core.states import ModelState

S = ModelState
GROUPS = {
    "(default)": GroupView(),
    "free": GroupView(swap=False, exclusive=False),
    "keep": GroupView(swap=False, exclusive=False, persistent=True),
}


def snap(*views: ModelView, now: float = 100.0, max_wait: float = 10.0) -> Snapshot:
    return Snapshot(
        now=now, models={v.model_id: v for v in views}, groups=GROUPS, max_wait=max_wait
    )


def view(model_id: str, group: str = "(default)", **kw: object) -> ModelView:
    return ModelView(model_id=model_id, group=group, **kw)  # type: ignore[arg-type]


def waiting(model_id: str, *tickets: int, at: float = 99.0, **kw: object) -> ModelView:
    return view(model_id, waiting=len(tickets), tickets=tickets, oldest_wait=at, **kw)


def test_conflicts_are_llama_swaps_asymmetric_rule() -> None:
    s = snap(view("a"), view("b"), view("f", "free"), view("p", "keep"))
    assert conflicts_with(s, "a", "b")  # same swap group
    assert conflicts_with(s, "a", "f")  # a's group is exclusive, f's is not persistent
    assert not conflicts_with(s, "f", "a")  # f's group is not exclusive
    assert not conflicts_with(s, "a", "p")  # persistent groups are never pushed out
    assert not conflicts_with(s, "a", "a")


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
