"""Load progress: server stages and elapsed time against the prediction, never going back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.core.load_progress import (
    AT_PREDICTION,
    STAGE_FLOORS,
    LoadTracker,
    time_fraction,
)
from swapd.core.load_stages import Stage, StageUpdate, parse_llama_cpp

SAMPLES = Path(__file__).parent / "data" / "load_output"


def test_a_silent_server_gets_time_based_progress_marked_as_estimate() -> None:
    tracker = LoadTracker(predicted=10.0)
    half = tracker.progress(5.0)
    assert half.stage is Stage.STARTING
    assert half.fraction == pytest.approx(AT_PREDICTION / 2)
    assert half.eta == pytest.approx(5.0)
    assert half.is_estimate
    at = tracker.progress(10.0)
    assert at.fraction == pytest.approx(AT_PREDICTION)
    assert at.eta is None  # due now: how much longer is unknown


def test_past_the_prediction_it_keeps_moving_but_never_reaches_one() -> None:
    tracker = LoadTracker(predicted=10.0)
    readings = [tracker.progress(t).fraction for t in (10.0, 12.0, 20.0, 100.0, 1e6, 1e300)]
    assert readings == sorted(readings)
    assert len(set(readings[:4])) == 4  # still visibly moving after the prediction
    assert all(r < 1.0 for r in readings)
    assert tracker.progress(1e300).percent == 99


def test_a_reported_stage_lifts_the_fraction_to_its_floor() -> None:
    tracker = LoadTracker(predicted=10.0).observe(StageUpdate(Stage.WARMING_UP))
    reading = tracker.progress(1.0)
    assert reading.stage is Stage.WARMING_UP
    assert reading.fraction == STAGE_FLOORS[Stage.WARMING_UP]
    assert not reading.is_estimate
    assert reading.eta == pytest.approx(9.0)  # the ETA follows the prediction
    # time carries on once it passes the floor
    assert tracker.progress(9.5).is_estimate


def test_a_measured_stage_moves_through_its_band() -> None:
    tracker = LoadTracker(predicted=100.0)
    low = STAGE_FLOORS[Stage.LOADING_WEIGHTS]
    high = STAGE_FLOORS[Stage.ALLOCATING]
    for seen in (0.0, 0.25, 0.84, 1.0):
        tracker = tracker.observe(StageUpdate(Stage.LOADING_WEIGHTS, seen))
        assert tracker.progress(0.0).fraction == pytest.approx(low + seen * (high - low))


def test_the_latest_stage_is_shown_but_the_fraction_never_drops() -> None:
    # vLLM sizes the KV cache (allocating) after torch.compile (compiling).
    tracker = LoadTracker(predicted=60.0).observe(StageUpdate(Stage.COMPILING))
    before = tracker.progress(1.0).fraction
    tracker = tracker.observe(StageUpdate(Stage.ALLOCATING))
    after = tracker.progress(1.0)
    assert after.stage is Stage.ALLOCATING
    assert after.fraction == before


def test_ready_is_one_and_final() -> None:
    tracker = LoadTracker(predicted=5.0).observe(StageUpdate(Stage.LISTENING)).finish()
    reading = tracker.progress(3.0)
    assert (reading.stage, reading.fraction, reading.eta, reading.percent) == (
        Stage.READY,
        1.0,
        0.0,
        100,
    )
    assert tracker.observe(StageUpdate(Stage.OPENING)) == tracker


def test_listening_is_not_yet_ready() -> None:
    reading = LoadTracker(predicted=5.0).observe(StageUpdate(Stage.LISTENING)).progress(1e9)
    assert reading.fraction < 1.0
    assert reading.percent == 99


_STAMP = re.compile(r"^(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) ")


def test_replaying_a_real_llama_server_load() -> None:
    """The captured -lv 4 load of SmolLM2, at the times llama-server stamped its lines."""
    tracker = LoadTracker(predicted=5.0)
    readings = []
    for line in (SAMPLES / "llama-server-smollm2-lv4.txt").read_text().splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue
        minutes, seconds, millis, micros = (int(part) for part in stamp.groups())
        elapsed = minutes * 60 + seconds + millis / 1e3 + micros / 1e6
        if (update := parse_llama_cpp(line)) is not None:
            tracker = tracker.observe(update)
        readings.append(tracker.progress(elapsed))
        if update is not None and update.stage is Stage.LISTENING:
            break
    fractions = [r.fraction for r in readings]
    assert fractions == sorted(fractions)
    assert readings[-1].stage is Stage.LISTENING
    assert STAGE_FLOORS[Stage.LISTENING] <= readings[-1].fraction < 1.0
    assert {r.stage for r in readings} >= {
        Stage.OPENING,
        Stage.LOADING_WEIGHTS,
        Stage.ALLOCATING,
        Stage.WARMING_UP,
    }


@given(st.floats(0, 1e6), st.floats(0, 1e6), st.floats(1e-6, 1e5))
def test_time_fraction_is_monotonic_and_below_one(a: float, b: float, predicted: float) -> None:
    early, late = sorted((a, b))
    assert 0.0 <= time_fraction(early, predicted) <= time_fraction(late, predicted) < 1.0


stage_updates = st.builds(
    StageUpdate,
    st.sampled_from([s for s in Stage if s is not Stage.READY]),
    st.none() | st.floats(0.0, 1.0),
)


@given(
    st.floats(0.01, 1000.0),
    st.lists(st.tuples(st.floats(0.0, 50.0), st.none() | stage_updates), max_size=40),
)
def test_progress_never_goes_back_and_stays_below_one_until_ready(
    predicted: float, steps: list[tuple[float, StageUpdate | None]]
) -> None:
    tracker = LoadTracker(predicted=predicted)
    elapsed = 0.0
    last = tracker.progress(elapsed).fraction
    for gap, update in steps:
        elapsed += gap
        if update is not None:
            tracker = tracker.observe(update)
        reading = tracker.progress(elapsed)
        assert last <= reading.fraction < 1.0
        assert reading.percent <= 99
        assert reading.eta is None or reading.eta > 0
        last = reading.fraction
    assert tracker.finish().progress(elapsed).fraction == 1.0 >= last
