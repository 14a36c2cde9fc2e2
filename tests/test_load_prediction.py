"""The predicted load time: median of recent successful loads, capped by the timeout."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.core.load_prediction import (
    DEFAULT_LOAD_SECONDS,
    RECENT_LOADS,
    PastLoad,
    predict_load,
)


def loads(*durations: float, succeeded: bool = True, start: float = 0.0) -> list[PastLoad]:
    return [PastLoad(d, succeeded, start + i) for i, d in enumerate(durations)]


def test_no_history_gives_the_default_marked_as_such() -> None:
    prediction = predict_load([], health_check_timeout=120)
    assert prediction.seconds == DEFAULT_LOAD_SECONDS
    assert prediction.samples == 0
    assert prediction.basis == "default"


def test_the_default_is_capped_by_the_health_check_timeout() -> None:
    assert predict_load([], health_check_timeout=4).seconds == 4
    # 0 means "no timeout" in the config: no cap.
    assert predict_load([], health_check_timeout=0).seconds == DEFAULT_LOAD_SECONDS


def test_median_of_recent_successful_loads() -> None:
    prediction = predict_load(loads(10.0, 12.0, 11.0), health_check_timeout=120)
    assert prediction == prediction.__class__(seconds=11.0, samples=3, basis="history")


def test_one_cold_start_outlier_does_not_move_the_prediction() -> None:
    # The first load read the file from disk; later ones hit the page cache.
    prediction = predict_load(loads(95.0, 6.1, 5.9, 6.0), health_check_timeout=120)
    assert prediction.seconds == pytest.approx(6.05)


def test_failed_and_nonsense_loads_are_ignored() -> None:
    history = [
        *loads(120.0, 120.0, succeeded=False),  # health-check timeouts
        PastLoad(math.nan, True, 3),
        PastLoad(-1.0, True, 4),
        PastLoad(0.0, True, 5),
        PastLoad(7.0, True, 6),
    ]
    prediction = predict_load(history, health_check_timeout=120)
    assert (prediction.seconds, prediction.samples) == (7.0, 1)


def test_only_the_latest_loads_count_in_time_order_not_input_order() -> None:
    old = loads(30.0, 30.0, 30.0, 30.0, 30.0, start=0)
    new = loads(8.0, 8.0, 8.0, start=100)  # the model moved to a faster disk
    prediction = predict_load([*new, *old], health_check_timeout=120)
    assert prediction.samples == RECENT_LOADS
    assert prediction.seconds == 8.0


def test_history_predictions_are_capped_too() -> None:
    assert predict_load(loads(50.0), health_check_timeout=20).seconds == 20


def test_recent_must_be_positive() -> None:
    with pytest.raises(ValueError, match="recent"):
        predict_load([], health_check_timeout=1, recent=0)


durations = st.floats(min_value=0.01, max_value=1e4, allow_nan=False)


@given(
    st.lists(st.tuples(durations, st.booleans(), st.floats(0, 1e6)), max_size=30),
    st.floats(min_value=0.5, max_value=1e4),
)
def test_prediction_is_positive_capped_and_within_the_recent_range(
    raw: list[tuple[float, bool, float]], timeout: float
) -> None:
    history = [PastLoad(*row) for row in raw]
    prediction = predict_load(history, health_check_timeout=timeout)
    assert 0 < prediction.seconds <= timeout
    good = sorted((h for h in history if h.succeeded), key=lambda h: h.when)[-RECENT_LOADS:]
    assert prediction.samples == len(good)
    if good:
        low = min(h.duration for h in good)
        high = max(h.duration for h in good)
        assert min(low, timeout) <= prediction.seconds <= min(high, timeout)


@given(st.lists(durations, min_size=1, max_size=RECENT_LOADS), st.floats(0.1, 10.0))
def test_prediction_scales_with_the_durations(values: list[float], factor: float) -> None:
    # No hidden constants in the history path: scaling every load scales the prediction.
    base = predict_load(loads(*values), health_check_timeout=0).seconds
    scaled = predict_load(loads(*(v * factor for v in values)), health_check_timeout=0).seconds
    assert scaled == pytest.approx(base * factor, rel=1e-9)
