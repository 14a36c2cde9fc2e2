"""Memory admission inside the pure swap policy, with hand-built snapshots.

All models are in a group that neither swaps nor is exclusive, so only the budget decides
(except where a test says otherwise).
"""

from __future__ import annotations

from swapd.config.model import GroupConfig
from swapd.core.eviction import GroupRule
from swapd.core.memory import Footprint, FootprintSource
from swapd.core.policy import ModelView, Snapshot, plan
from swapd.core.states import ModelState

S = ModelState
MiB = 1024**2
GROUPS = {"free": GroupConfig(swap=False, exclusive=False), "pair": GroupConfig(swap=True)}


def fp(ram: int = 0, gpu0: int = 0) -> Footprint:
    sizes = {d: n * MiB for d, n in (("ram", ram), ("gpu0", gpu0)) if n}
    return Footprint(bytes_on=sizes, source=FootprintSource.DECLARED)


def snap(*views: ModelView, budgets: dict[str, int] | None = None, **groups: str) -> Snapshot:
    group_of = {v.model_id: groups.get(v.model_id, "free") for v in views}
    sized = {d: n * MiB for d, n in (budgets or {}).items()}
    return Snapshot(
        now=100.0,
        models={v.model_id: v for v in views},
        rule=GroupRule(group_of=group_of, groups=GROUPS),
        budgets=sized,
    )


def m(model_id: str, footprint: Footprint | None, *tickets: int, **kw: object) -> ModelView:
    if tickets:
        kw.update(waiting=len(tickets), tickets=tickets, oldest_wait=99.0)
    return ModelView(model_id=model_id, footprint=footprint, **kw)  # type: ignore[arg-type]


def test_without_budgets_footprints_change_nothing() -> None:
    views = (
        m("a", fp(ram=900), state=S.READY, last_used=1.0),
        m("b", fp(ram=900), 1),
    )
    with_budget = plan(snap(*views, budgets={"ram": 1000}))
    assert with_budget.stop == ("a",) and with_budget.start == ()
    without = plan(snap(*views))
    assert without.start == ("b",) and without.stop == ()
    bare = plan(snap(m("a", None, state=S.READY, last_used=1.0), m("b", None, 1)))
    assert bare == without


def test_the_least_recently_used_idle_model_is_stopped_for_room() -> None:
    p = plan(
        snap(
            m("old", fp(ram=400), state=S.READY, last_used=1.0),
            m("new", fp(ram=400), state=S.READY, last_used=50.0),
            m("c", fp(ram=400), 1),
            budgets={"ram": 1000},
        )
    )
    assert p.stop == ("old",)
    assert p.start == ()  # c starts once old is gone


def test_the_matrix_evict_costs_order_memory_evictions() -> None:
    # "old" is the least recently used, but stopping it costs more (a slow load): the
    # cheaper "new" goes instead.
    p = plan(
        snap(
            m("old", fp(ram=400), state=S.READY, last_used=1.0, evict_cost=50),
            m("new", fp(ram=400), state=S.READY, last_used=50.0, evict_cost=1),
            m("c", fp(ram=400), 1),
            budgets={"ram": 1000},
        )
    )
    assert p.stop == ("new",)


def test_a_fitting_model_starts_next_to_the_others() -> None:
    p = plan(
        snap(m("a", fp(ram=400), state=S.READY), m("b", fp(ram=400), 1), budgets={"ram": 1000})
    )
    assert p.start == ("b",) and p.stop == ()


def test_sleep_is_used_when_freeing_the_gpu_is_enough() -> None:
    idle: dict[str, object] = {"state": S.READY, "sleep_enabled": True, "last_used": 1.0}
    on_gpu = snap(
        m("a", fp(ram=100, gpu0=800), **idle),
        m("b", fp(ram=100, gpu0=800), 1),
        budgets={"ram": 1000, "gpu0": 1000},
    )
    p = plan(on_gpu)
    assert p.sleep == ("a",) and p.stop == ()
    in_ram = snap(m("a", fp(ram=800), **idle), m("b", fp(ram=800), 1), budgets={"ram": 1000})
    p = plan(in_ram)
    assert p.stop == ("a",) and p.sleep == ()  # asleep, a would still hold its RAM


def test_busy_and_loading_models_are_never_evicted_the_load_waits() -> None:
    for state, in_flight in ((S.READY, 1), (S.STARTING, 0), (S.WAKING, 0)):
        p = plan(
            snap(
                m("x", fp(ram=800), state=state, in_flight=in_flight),
                m("y", fp(ram=800), 1),
                budgets={"ram": 1000},
            )
        )
        assert (p.start, p.stop, p.sleep, p.refuse) == ((), (), (), {}), state


def test_a_ready_model_holding_an_older_request_is_not_evicted() -> None:
    p = plan(
        snap(
            m("x", fp(ram=800), 1, state=S.READY, in_flight=1, limit=1),
            m("y", fp(ram=800), 2),
            budgets={"ram": 1000},
        )
    )
    assert p.stop == () and p.start == ()


def test_a_model_larger_than_its_budget_is_refused_with_the_reason() -> None:
    p = plan(snap(m("huge", fp(gpu0=2000), 1), budgets={"ram": 1000, "gpu0": 1000}))
    assert p.refuse == {
        "huge": "model 'huge' does not fit: needs 2.0 GiB on gpu0, more than its whole "
        "budget of 1000.0 MiB"
    }
    assert p.start == ()
    assert plan(snap(m("huge", fp(gpu0=2000)), budgets={"gpu0": 1000})).refuse == {}


def test_a_later_smaller_load_never_takes_the_memory_an_earlier_one_waits_for() -> None:
    views = (
        m("busy", fp(ram=300), state=S.READY, in_flight=1),
        m("big", fp(ram=800), 1),  # waits for busy to finish
        m("large", fp(ram=600), 2),  # fits now, but not next to big
        m("small", fp(ram=150), 3),  # fits now, and next to big
    )
    p = plan(snap(*views, budgets={"ram": 1000}))
    assert p.start == ("small",)  # it can never be what keeps big out
    assert p.stop == ()


def test_memory_being_released_is_waited_for_not_evicted_for_again() -> None:
    stopping = snap(
        m("gone", fp(ram=600), state=S.STOPPING),
        m("other", fp(ram=300), state=S.READY, last_used=1.0),
        m("c", fp(ram=600), 1),
        budgets={"ram": 1000},
    )
    p = plan(stopping)
    assert p.stop == () and p.start == ()  # other stays: gone's memory is about to be free
    releasing = snap(
        m("gone", fp(ram=600), releasing=True),
        m("c", fp(ram=600), 1),
        budgets={"ram": 1000},
    )
    assert plan(releasing).start == ()
    released = snap(m("gone", fp(ram=600)), m("c", fp(ram=600), 1), budgets={"ram": 1000})
    assert plan(released).start == ("c",)


def test_groups_stay_hard_constraints_on_top() -> None:
    p = plan(
        snap(
            m("a", fp(ram=10), state=S.READY),
            m("b", fp(ram=10), 1),
            budgets={"ram": 1000},
            a="pair",
            b="pair",
        )
    )
    assert p.stop == ("a",) and p.start == ()


def test_group_blockers_and_memory_evictions_leave_together() -> None:
    p = plan(
        snap(
            m("a", fp(ram=100), state=S.READY, last_used=5.0),
            m("x", fp(ram=800), state=S.READY, last_used=1.0),
            m("b", fp(ram=500), 1),
            budgets={"ram": 1000},
            a="pair",
            b="pair",
        )
    )
    assert set(p.stop) == {"a", "x"} and p.start == ()
