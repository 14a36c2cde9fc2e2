"""Admission decisions (swapd.core.memory): each branch, sizes and budgets, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swapd.core.memory import (
    RAM,
    Budget,
    Evict,
    Fits,
    Footprint,
    FootprintSource,
    NeverFits,
    Occupancy,
    Occupant,
    SizeError,
    Wait,
    admit,
    held_by,
    is_device_name,
    parse_budget,
    parse_size,
)

GiB = 1024**3


def fp(**sizes: int) -> Footprint:
    return Footprint(
        bytes_on={k: v * GiB for k, v in sizes.items()}, source=FootprintSource.DECLARED
    )


def occ(
    name: str, state: Occupancy, used: float, cost: int | None = None, **sizes: int
) -> Occupant:
    return Occupant(
        model_id=name, footprint=fp(**sizes), state=state, last_used=used, evict_cost=cost
    )


BUDGET = {"gpu0": 24 * GiB, RAM: 32 * GiB}


# -- sizes and budgets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("9GiB", 9 * GiB),
        ("512MiB", 512 * 1024**2),
        ("4GB", 4 * 1000**3),
        ("1.5 gib", int(1.5 * GiB)),
        ("1024", 1024),
        ("2kib", 2048),
        (" 3 TB ", 3 * 1000**4),
    ],
)
def test_parse_size_reads_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "9 parsecs", "-1GiB", "9GiB extra", "80%"])
def test_parse_size_rejects_garbage(text: str) -> None:
    with pytest.raises(SizeError, match="not a size"):
        parse_size(text)


def test_parse_budget_fraction_and_size() -> None:
    assert parse_budget("80%").resolve(100 * GiB) == 80 * GiB
    assert parse_budget("80%").resolve(None) is None
    assert parse_budget("22GiB").resolve(None) == 22 * GiB
    assert str(parse_budget("12.5%")) == "12.5%"
    assert str(parse_budget("22GiB")) == "22.0 GiB"
    for bad in ("0%", "101%", "x%"):
        with pytest.raises(SizeError):
            parse_budget(bad)
    with pytest.raises(ValueError, match="either"):
        Budget(size=1, fraction=0.5)


def test_device_names() -> None:
    assert all(is_device_name(n) for n in ("ram", "gpu0", "gpu12"))
    assert not any(is_device_name(n) for n in ("gpu", "gpu01", "vram", "GPU0", "ram0"))


# -- one test per branch -------------------------------------------------------------


def test_fits_next_to_what_is_loaded() -> None:
    loaded = [occ("a", Occupancy.BUSY, 1, gpu0=10), occ("b", Occupancy.IDLE, 2, gpu0=4)]
    assert admit(fp(gpu0=10), loaded, BUDGET) == Fits()


def test_evicts_least_recently_used_idle_first() -> None:
    loaded = [
        occ("old", Occupancy.IDLE, 1, gpu0=8),
        occ("new", Occupancy.IDLE, 5, gpu0=8),
        occ("busy", Occupancy.BUSY, 0, gpu0=8),
    ]
    assert admit(fp(gpu0=8), loaded, BUDGET) == Evict(models=("old",))


def test_evict_costs_order_before_recency() -> None:
    loaded = [
        occ("old-expensive", Occupancy.IDLE, 1, cost=10, gpu0=8),
        occ("new-cheap", Occupancy.IDLE, 5, cost=1, gpu0=8),
        occ("busy", Occupancy.BUSY, 0, gpu0=8),
    ]
    assert admit(fp(gpu0=8), loaded, BUDGET) == Evict(models=("new-cheap",))


def test_skips_candidates_that_free_nothing_on_the_full_device() -> None:
    loaded = [
        occ("ram-only", Occupancy.IDLE, 1, ram=4),
        occ("gpu", Occupancy.IDLE, 2, gpu0=20),
    ]
    assert admit(fp(gpu0=8), loaded, BUDGET) == Evict(models=("gpu",))


def test_prunes_evictions_a_later_one_made_unnecessary() -> None:
    loaded = [
        occ("small", Occupancy.IDLE, 1, gpu0=2),
        occ("big", Occupancy.IDLE, 2, gpu0=20),
    ]
    # Evicting "small" (LRU) is not enough; "big" is, and alone it suffices.
    assert admit(fp(gpu0=6), loaded, BUDGET) == Evict(models=("big",))


def test_asleep_holds_ram_only_so_it_leaves_gpu_room() -> None:
    sleeper = occ("sleeper", Occupancy.ASLEEP, 1, gpu0=20, ram=30)
    assert held_by(sleeper, "gpu0") == 0
    assert held_by(sleeper, RAM) == 30 * GiB
    assert admit(fp(gpu0=20), [sleeper], BUDGET) == Fits()
    # It still holds RAM, so a RAM-heavy target needs it stopped.
    assert admit(fp(ram=8), [sleeper], BUDGET) == Evict(models=("sleeper",))


def test_asleep_holds_what_is_declared_when_known() -> None:
    sleeper = Occupant(
        model_id="s",
        footprint=fp(gpu0=20),
        state=Occupancy.ASLEEP,
        asleep_holds={"gpu0": 3 * GiB},
    )
    assert held_by(sleeper, "gpu0") == 3 * GiB
    assert admit(fp(gpu0=22), [sleeper], BUDGET) == Evict(models=("s",))


def test_waits_when_only_busy_or_loading_models_could_make_room() -> None:
    loaded = [
        occ("busy", Occupancy.BUSY, 1, gpu0=10),
        occ("loading", Occupancy.LOADING, 2, gpu0=10),
        occ("idle", Occupancy.IDLE, 3, gpu0=2),
    ]
    assert admit(fp(gpu0=8), loaded, BUDGET) == Wait(blocked_on=("gpu0",))


def test_never_fits_names_device_budget_and_footprint() -> None:
    decision = admit(fp(gpu0=30), [], BUDGET)
    assert decision == NeverFits(device="gpu0", budget=24 * GiB, footprint=30 * GiB)
    assert isinstance(decision, NeverFits)
    assert decision.message == "needs 30.0 GiB on gpu0, more than its whole budget of 24.0 GiB"


def test_unbudgeted_devices_are_not_checked() -> None:
    assert admit(fp(gpu1=1000), [occ("x", Occupancy.BUSY, 1, gpu1=1000)], BUDGET) == Fits()


# -- properties ----------------------------------------------------------------------

DEVICES = ("ram", "gpu0", "gpu1")
sizes = st.dictionaries(st.sampled_from(DEVICES), st.integers(0, 64), max_size=3)
footprints = sizes.map(lambda d: Footprint(bytes_on=d))
occupants = st.lists(
    st.builds(
        Occupant,
        model_id=st.text("abcdefgh", min_size=1, max_size=4),
        footprint=footprints,
        state=st.sampled_from(list(Occupancy)),
        last_used=st.floats(0, 100, allow_nan=False),
        evict_cost=st.none() | st.integers(0, 5),
    ),
    max_size=8,
    unique_by=lambda o: o.model_id,
)
budgets = st.dictionaries(st.sampled_from(DEVICES), st.integers(0, 128), max_size=3)


@settings(max_examples=400, deadline=None)
@given(target=footprints, present=occupants, limits=budgets)
def test_admission_properties(
    target: Footprint, present: list[Occupant], limits: dict[str, int]
) -> None:
    decision = admit(target, present, limits)
    fits_alone = all(target.on(d) <= b for d, b in limits.items())
    assert isinstance(decision, NeverFits) == (not fits_alone)
    if isinstance(decision, Fits | Evict):
        evicted = set(decision.models) if isinstance(decision, Evict) else set()
        by_id = {o.model_id: o for o in present}
        assert evicted <= set(by_id)
        assert all(by_id[m].state in (Occupancy.IDLE, Occupancy.ASLEEP) for m in evicted)
        staying = [o for o in present if o.model_id not in evicted]
        for device, budget in limits.items():
            assert sum(held_by(o, device) for o in staying) + target.on(device) <= budget
        # Minimal: putting any one evicted model back would break a budget.
        for name in evicted:
            back = [*staying, by_id[name]]
            assert any(
                sum(held_by(o, d) for o in back) + target.on(d) > b for d, b in limits.items()
            )
    if isinstance(decision, Wait):
        # Even evicting every idle and asleep model leaves a device over budget.
        staying = [o for o in present if o.state in (Occupancy.BUSY, Occupancy.LOADING)]
        assert any(
            sum(held_by(o, d) for o in staying) + target.on(d) > b for d, b in limits.items()
        )
