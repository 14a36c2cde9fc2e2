"""How far a model's load has got: the server's own stages plus elapsed time against the
predicted load time, folded into one fraction that never goes back.

Pure. A :class:`LoadTracker` is an immutable fold: :meth:`~LoadTracker.observe` each
:class:`~swapd.core.load_stages.StageUpdate` a parser produced, ask
:meth:`~LoadTracker.progress` at any elapsed time, :meth:`~LoadTracker.finish` when
swapd's health check passed.

Two signals, and the fraction is the larger:

- **time**: ``elapsed / predicted`` on a curve that reaches :data:`AT_PREDICTION` (0.9)
  at the predicted time and then creeps towards 1 without reaching it
  (``1 - 0.1 / (1 + 9 * overrun)``, continuous in value and slope), so a slow load
  keeps moving but never shows 100 % before it is ready;
- **the server**: each stage it reports lifts the fraction to at least that stage's
  nominal floor (:data:`STAGE_FLOORS`); a stage the server measures itself (tensors
  loaded, CUDA graphs captured) moves through its band in proportion.

The floors are nominal (how the stages split a typical load), not measured; they only
ever pull the bar forward, and time carries it through stages that print nothing.
``is_estimate`` says which signal the fraction came from: ``True`` when it is time
against the prediction (a server that prints nothing is always an estimate). Both
signals only grow, so the fraction is monotonic as long as elapsed time is.

The ETA is ``predicted - elapsed``: the prediction from past loads is a better guide to
the total than nominal stage floors. Past the prediction it is ``None`` (unknown).
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from swapd.core.load_stages import Stage, StageUpdate

__all__ = [
    "AT_PREDICTION",
    "STAGE_FLOORS",
    "LoadProgress",
    "LoadTracker",
    "time_fraction",
]

#: The time-based fraction at the predicted load time.
AT_PREDICTION: Final = 0.9
#: The least the fraction is once the server reported a stage (in stage order).
STAGE_FLOORS: Final[dict[Stage, float]] = {
    Stage.STARTING: 0.0,
    Stage.OPENING: 0.02,
    Stage.LOADING_WEIGHTS: 0.05,
    Stage.ALLOCATING: 0.60,
    Stage.COMPILING: 0.65,
    Stage.WARMING_UP: 0.75,
    Stage.LISTENING: 0.95,
    Stage.READY: 1.0,
}
#: Where a measured stage's band ends: the next stage's floor (LISTENING: just below 1).
_BAND_END: Final[dict[Stage, float]] = {
    Stage.STARTING: STAGE_FLOORS[Stage.OPENING],
    Stage.OPENING: STAGE_FLOORS[Stage.LOADING_WEIGHTS],
    Stage.LOADING_WEIGHTS: STAGE_FLOORS[Stage.ALLOCATING],
    Stage.ALLOCATING: STAGE_FLOORS[Stage.COMPILING],
    Stage.COMPILING: STAGE_FLOORS[Stage.WARMING_UP],
    Stage.WARMING_UP: STAGE_FLOORS[Stage.LISTENING],
    Stage.LISTENING: 0.99,
    Stage.READY: 1.0,
}
_MIN_PREDICTION: Final = 1e-3
_BELOW_ONE: Final = math.nextafter(1.0, 0.0)


def time_fraction(elapsed: float, predicted: float) -> float:
    """The fraction a load at ``elapsed`` s of a ``predicted`` s load has by time alone.

    0 at 0, :data:`AT_PREDICTION` at ``predicted``, below 1 for ever after."""
    ratio = max(0.0, elapsed) / max(predicted, _MIN_PREDICTION)
    if ratio <= 1.0:
        return AT_PREDICTION * ratio
    tail = 1.0 - AT_PREDICTION
    # slope at ratio 1 matches the linear part: tail * k == AT_PREDICTION
    return 1.0 - tail / (1.0 + (AT_PREDICTION / tail) * (ratio - 1.0))


@attrs.frozen
class LoadProgress:
    """One reading: what the server does, how far (0 to 1), seconds left, how known."""

    stage: Stage
    fraction: float
    eta: float | None
    is_estimate: bool

    @property
    def percent(self) -> int:
        """Whole percent, never 100 before ready."""
        whole = int(self.fraction * 100)
        return whole if self.stage is Stage.READY else min(whole, 99)


def _server_fraction(update: StageUpdate) -> float:
    floor = STAGE_FLOORS[update.stage]
    if update.fraction is None:
        return floor
    return floor + update.fraction * (_BAND_END[update.stage] - floor)


@attrs.frozen
class LoadTracker:
    """One load in progress; ``predicted`` is its predicted duration in seconds."""

    predicted: float
    stage: Stage = Stage.STARTING
    #: The furthest the server's own output has brought the load.
    server_fraction: float = 0.0
    done: bool = False

    def observe(self, update: StageUpdate) -> LoadTracker:
        """The tracker after the server printed ``update`` (the stage shown is the latest)."""
        if self.done:
            return self
        return attrs.evolve(
            self,
            stage=update.stage,
            server_fraction=max(self.server_fraction, _server_fraction(update)),
        )

    def finish(self) -> LoadTracker:
        """The model is ready (swapd's health check passed)."""
        return attrs.evolve(self, stage=Stage.READY, server_fraction=1.0, done=True)

    def progress(self, elapsed: float) -> LoadProgress:
        """The reading ``elapsed`` seconds after the load started."""
        if self.done:
            return LoadProgress(Stage.READY, 1.0, 0.0, is_estimate=False)
        by_time = time_fraction(elapsed, self.predicted)
        # below 1 even where float rounding would make the time curve touch it
        fraction = min(max(by_time, self.server_fraction), _BELOW_ONE)
        left = self.predicted - elapsed
        return LoadProgress(
            stage=self.stage,
            fraction=fraction,
            eta=left if left > 0 else None,
            is_estimate=by_time >= self.server_fraction,
        )
