"""Memory-aware admission: may a model start next to what is loaded, and what must leave first.

This module owns the vocabulary and the one decision:

- sizes and budgets (from ``swapd.config.sizes``, re-exported): ``parse_size`` ("9GiB",
  "512MiB", "4GB", plain bytes) and ``parse_budget`` (a size or "80%" of the capacity);
- ``Footprint``: bytes per device (``ram``, ``gpu0``, ...) for one model, marked with
  where the numbers come from (declared in the config, learned by measuring, estimated);
- ``Occupant``: a model that holds memory now, with its state and when it was last used;
- ``admit(target, occupants, budgets)``: ``Fits``, ``Evict`` (these idle models first),
  ``Wait`` (only busy or loading models could make room) or ``NeverFits`` (the footprint
  alone exceeds a budget).

Accounting rules, kept deliberately simple:

- every budgeted device is checked, not only the target's: after the proposed evictions
  the sum of what the occupants hold plus the target's footprint is within every budget;
- a device without a budget is never checked; a footprint entry for it is ignored;
- an *asleep* model holds its RAM but not its GPU memory (sleep frees the accelerator);
  ``Occupant.asleep_holds`` overrides that when the real figure is known;
- only idle and asleep models may be evicted (evicting means stopping them: all they hold
  is freed); busy and loading models are never proposed;
- candidates go least recently used first, or cheapest first when evict costs are given
  (ties by recency); a candidate is taken only if it frees memory on a device that is still
  over budget, and the set is then pruned of evictions that turned out unnecessary.

Pure: no trio, no I/O, no clock (times are numbers the caller passes in).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

from swapd.config.model import Config, ModelConfig
from swapd.config.sizes import (
    RAM,
    Budget,
    SizeError,
    format_size,
    is_device_name,
    parse_budget,
    parse_size,
)

__all__ = [
    "RAM",
    "Budget",
    "Decision",
    "Evict",
    "Fits",
    "Footprint",
    "FootprintSource",
    "NeverFits",
    "Occupancy",
    "Occupant",
    "SizeError",
    "Wait",
    "admit",
    "budgets_of",
    "choose_footprint",
    "declared_footprint",
    "format_size",
    "held_by",
    "is_device_name",
    "parse_budget",
    "parse_size",
]


class FootprintSource(enum.StrEnum):
    """Where a footprint's numbers come from, best first."""

    DECLARED = "declared"  # written in the config
    LEARNED = "learned"  # the peak measured while the model ran
    ESTIMATE = "estimate"  # computed before any measurement (e.g. GGUF size + KV cache)


@attrs.frozen
class Footprint:
    """The memory one model holds per device while it is loaded."""

    bytes_on: Mapping[str, int] = attrs.field(factory=dict)
    source: FootprintSource = FootprintSource.ESTIMATE

    def on(self, device: str) -> int:
        return self.bytes_on.get(device, 0)

    def peak_with(self, sample: Footprint) -> Footprint:
        """The per-device maximum of this footprint and ``sample``, as a learned footprint
        (a model's learned footprint is the peak of its measurements)."""
        devices = set(self.bytes_on) | set(sample.bytes_on)
        peak = {d: max(self.on(d), sample.on(d)) for d in sorted(devices)}
        return Footprint(bytes_on=peak, source=FootprintSource.LEARNED)


class Occupancy(enum.StrEnum):
    """What an occupying model is doing, as far as admission cares."""

    BUSY = "busy"  # serving requests: never evicted
    LOADING = "loading"  # starting or waking: never evicted
    IDLE = "idle"  # loaded, no requests: may be evicted
    ASLEEP = "asleep"  # sleeping: holds RAM only; may be evicted


@attrs.frozen
class Occupant:
    """A model that holds memory now."""

    model_id: str
    footprint: Footprint
    state: Occupancy
    last_used: float = 0.0  # any monotonic number; larger is more recent
    evict_cost: int | None = None  # the matrix's evict cost, when it defines one
    asleep_holds: Mapping[str, int] | None = None  # what it holds asleep, when known

    @property
    def evictable(self) -> bool:
        return self.state in (Occupancy.IDLE, Occupancy.ASLEEP)


def held_by(occupant: Occupant, device: str) -> int:
    """Bytes ``occupant`` holds on ``device`` in its current state."""
    if occupant.state is not Occupancy.ASLEEP:
        return occupant.footprint.on(device)
    if occupant.asleep_holds is not None:
        return occupant.asleep_holds.get(device, 0)
    return occupant.footprint.on(device) if device == RAM else 0


@attrs.frozen
class Fits:
    """The target may start now."""


@attrs.frozen
class Evict:
    """The target may start once these models are stopped, in this order."""

    models: tuple[str, ...]


@attrs.frozen
class Wait:
    """Only busy or loading models could make room: wait for one of them to go idle."""

    blocked_on: tuple[str, ...]  # devices still over budget after every possible eviction


@attrs.frozen
class NeverFits:
    """The target alone exceeds a device's budget: it can never start."""

    device: str
    budget: int
    footprint: int

    @property
    def message(self) -> str:
        return (
            f"needs {format_size(self.footprint)} on {self.device}, "
            f"more than its whole budget of {format_size(self.budget)}"
        )


Decision = Fits | Evict | Wait | NeverFits


def admit(
    target: Footprint,
    occupants: Iterable[Occupant],
    budgets: Mapping[str, int],
) -> Decision:
    """Decide whether a model with footprint ``target`` may start next to ``occupants``
    within ``budgets`` (bytes per device; devices without a budget are not checked).

    ``occupants`` must not include the target itself."""
    for device, budget in sorted(budgets.items()):
        if target.on(device) > budget:
            return NeverFits(device=device, budget=budget, footprint=target.on(device))
    present = list(occupants)
    if not _over_budget(target, present, budgets):
        return Fits()
    candidates = sorted(
        (o for o in present if o.evictable),
        key=lambda o: (o.evict_cost if o.evict_cost is not None else 0, o.last_used, o.model_id),
    )
    chosen: list[Occupant] = []
    remaining = list(present)
    for candidate in candidates:
        over = _over_budget(target, remaining, budgets)
        if not over:
            break
        if any(held_by(candidate, device) > 0 for device in over):
            chosen.append(candidate)
            remaining.remove(candidate)
    still_over = _over_budget(target, remaining, budgets)
    if still_over:
        return Wait(blocked_on=tuple(sorted(still_over)))
    # A later, larger eviction may have made an earlier one unnecessary: keep the earliest
    # preferred ones only if they are still needed, trying the least preferred first.
    for candidate in reversed(list(chosen)):
        if not _over_budget(target, [*remaining, candidate], budgets):
            chosen.remove(candidate)
            remaining.append(candidate)
    return Evict(models=tuple(o.model_id for o in chosen))


def _over_budget(
    target: Footprint, occupants: list[Occupant], budgets: Mapping[str, int]
) -> set[str]:
    """The budgeted devices where ``occupants`` plus ``target`` exceed the budget."""
    return {
        device
        for device, budget in budgets.items()
        if sum(held_by(o, device) for o in occupants) + target.on(device) > budget
    }


def budgets_of(config: Config, capacities: Mapping[str, int]) -> dict[str, int]:
    """``memory.budgets`` in bytes per device. A share (``80%``) of a device that
    ``capacities`` does not know (no such GPU here) is left out: it limits nothing."""
    resolved = {}
    for device, text in config.memory.budgets.items():
        size = parse_budget(text).resolve(capacities.get(device))
        if size is not None:
            resolved[device] = size
    return resolved


def declared_footprint(model: ModelConfig) -> Footprint | None:
    """The model's ``footprint`` from the config, None when it declares none."""
    if not model.footprint:
        return None
    sizes = {device: parse_size(text) for device, text in model.footprint.items()}
    return Footprint(bytes_on=sizes, source=FootprintSource.DECLARED)


def choose_footprint(
    model: ModelConfig, learned: Footprint | None, estimate: Footprint | None
) -> Footprint | None:
    """The footprint admission uses for ``model``, best source first: with
    ``footprintLearn: false`` the declared one; otherwise the learned peak, else the
    declared values, else the estimate. None when nothing is known (admission then counts
    the model as holding nothing until its first measurement)."""
    declared = declared_footprint(model)
    if not model.footprint_learn and declared is not None:
        return declared
    return learned or declared or estimate
