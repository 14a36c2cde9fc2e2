"""The lifecycle table, checked for every (state, event) pair."""

from __future__ import annotations

import itertools

import pytest

from swapd.core.states import (
    OCCUPYING,
    RUNNING,
    TRANSITIONS,
    Event,
    InvalidTransition,
    ModelState,
    apply,
)

S = ModelState
E = Event

EXPECTED = {
    (S.STOPPED, E.START): S.STARTING,
    (S.STOPPED, E.SHUTDOWN): S.SHUTDOWN,
    (S.STARTING, E.HEALTHY): S.READY,
    (S.STARTING, E.FAILED): S.STOPPING,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.STARTING, E.EXITED): S.STOPPED,
    (S.READY, E.STOP): S.STOPPING,
    (S.READY, E.SLEEP): S.SLEEP_PENDING,
    (S.READY, E.EXITED): S.STOPPED,
    (S.STOPPING, E.REAPED): S.STOPPED,
    (S.STOPPING, E.EXITED): S.STOPPED,
    (S.SLEEP_PENDING, E.SLEPT): S.ASLEEP,
    (S.SLEEP_PENDING, E.SLEEP_FAILED): S.STOPPING,
    (S.SLEEP_PENDING, E.STOP): S.STOPPING,
    (S.SLEEP_PENDING, E.EXITED): S.STOPPED,
    (S.ASLEEP, E.WAKE): S.WAKING,
    (S.ASLEEP, E.STOP): S.STOPPING,
    (S.ASLEEP, E.EXITED): S.STOPPED,
    (S.WAKING, E.WOKE): S.READY,
    (S.WAKING, E.WAKE_FAILED): S.STOPPING,
    (S.WAKING, E.STOP): S.STOPPING,
    (S.WAKING, E.EXITED): S.STOPPED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, E)))
def test_every_state_event_pair(state: ModelState, event: Event) -> None:
    expected = EXPECTED.get((state, event))
    if expected is None:
        with pytest.raises(InvalidTransition) as info:
            apply(state, event)
        assert info.value.state is state
        assert info.value.event is event
        assert str(info.value) == f"cannot {event.value} a model that is {state.value}"
    else:
        assert apply(state, event) is expected


def test_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


def test_shutdown_is_terminal_and_reachable_only_from_stopped() -> None:
    assert not [k for k in TRANSITIONS if k[0] is S.SHUTDOWN]
    assert [k for k, v in TRANSITIONS.items() if v is S.SHUTDOWN] == [(S.STOPPED, E.SHUTDOWN)]


def test_every_running_state_can_be_stopped_or_is_stopping() -> None:
    for state in RUNNING:
        assert (state, E.STOP) in TRANSITIONS or state is S.STOPPING
        assert (state, E.EXITED) in TRANSITIONS


def test_asleep_does_not_occupy_a_slot() -> None:
    assert S.ASLEEP in RUNNING
    assert S.ASLEEP not in OCCUPYING
    assert RUNNING - {S.ASLEEP} == OCCUPYING


def test_wire_names_are_llama_swaps() -> None:
    assert [s.value for s in S] == [
        "stopped",
        "starting",
        "ready",
        "stopping",
        "sleepPending",
        "asleep",
        "waking",
        "shutdown",
    ]
