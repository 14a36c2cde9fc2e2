"""How long the next load of a model will take, from how long its past loads took.

Pure: the input is a plain sequence of :class:`PastLoad` records (one model, one command
line; the caller selects them), so this module does not depend on where they are stored.

The statistic is the **median of the last** :data:`RECENT_LOADS` **successful loads**:

- the median ignores one or two outliers on either side: the first load after a boot
  reads the file from disk while later ones hit the page cache, and a load that raced
  another model for the GPU is slow once. A mean (or an EWMA, which is a weighted mean)
  would carry such a spike into every later prediction until it decays;
- only the recent loads count, so a change that lasts (a driver update, the file moved
  to another disk, a new ``-c``) takes over after three loads instead of being outvoted
  by a long past;
- failed loads say nothing about how long a good one takes (they end at the crash or at
  the health-check timeout), so they are left out.

Before any successful load, the prediction is :data:`DEFAULT_LOAD_SECONDS`, capped by
the model's ``healthCheckTimeout``: swapd gives up on a load at that timeout, so no load
it waits for can take longer. Every prediction is capped the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from typing import Final, Literal

import attrs

__all__ = [
    "DEFAULT_LOAD_SECONDS",
    "RECENT_LOADS",
    "LoadPrediction",
    "PastLoad",
    "predict_load",
]

#: How many of the latest successful loads the median is taken over.
RECENT_LOADS: Final = 5
#: The guess before a model has loaded once: a small GGUF on a CPU takes a few seconds,
#: a large one from a cold disk tens of seconds; 15 s keeps an early bar moving visibly.
DEFAULT_LOAD_SECONDS: Final = 15.0


@attrs.frozen
class PastLoad:
    """One past load: how long it took (s), whether it became ready, when it ended."""

    duration: float
    succeeded: bool
    when: float


@attrs.frozen
class LoadPrediction:
    """The predicted duration (s); ``samples`` loads back it, ``basis`` says from what."""

    seconds: float
    samples: int
    basis: Literal["history", "default"]


def _usable(load: PastLoad) -> bool:
    return load.succeeded and math.isfinite(load.duration) and load.duration > 0


def predict_load(
    history: Iterable[PastLoad],
    *,
    health_check_timeout: float,
    recent: int = RECENT_LOADS,
    default: float = DEFAULT_LOAD_SECONDS,
) -> LoadPrediction:
    """The predicted load time for the model whose past loads are ``history`` (any order).

    ``health_check_timeout`` (s) caps the prediction; a value ``<= 0`` means no cap."""
    if recent < 1:
        raise ValueError(f"recent must be at least 1, got {recent}")
    cap = health_check_timeout if health_check_timeout > 0 else math.inf
    good = sorted((load for load in history if _usable(load)), key=lambda load: load.when)
    latest = good[-recent:]
    if not latest:
        return LoadPrediction(seconds=min(default, cap), samples=0, basis="default")
    median = statistics.median(load.duration for load in latest)
    return LoadPrediction(seconds=min(median, cap), samples=len(latest), basis="history")
