"""Memory-aware admission: may a model start next to what is loaded, and what must leave first.

This module owns the vocabulary and the one decision:

- sizes and budgets: ``parse_size`` ("9GiB", "512MiB", "4GB", plain bytes) and
  ``parse_budget`` (a size or a fraction of the device's capacity, "80%");
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
import re
from collections.abc import Iterable, Mapping

import attrs

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
    "format_size",
    "held_by",
    "is_device_name",
    "parse_budget",
    "parse_size",
]

#: The host-RAM device's name; GPUs are ``gpu0``, ``gpu1``, ...
RAM = "ram"

_DEVICE = re.compile(r"ram|gpu(0|[1-9][0-9]*)")
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]*)")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


class SizeError(ValueError):
    """A size or budget that cannot be read; the message says what is expected."""


def is_device_name(name: str) -> bool:
    """Whether ``name`` names a memory device: ``ram`` or ``gpu<N>``."""
    return _DEVICE.fullmatch(name) is not None


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional unit (B, KB/MB/GB/TB are powers of
    1000, KiB/MiB/GiB/TiB powers of 1024; case-insensitive). Raises ``SizeError``."""
    match = _SIZE.fullmatch(text.strip())
    unit = match["unit"].lower() if match else ""
    if match is None or unit not in _UNITS:
        raise SizeError(f"{text!r} is not a size; expected e.g. 512MiB, 9GiB or 4GB")
    return int(float(match["number"]) * _UNITS[unit])


def format_size(size: int) -> str:
    """``size`` bytes for people: the largest binary unit that keeps a number >= 1."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(size) >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"


@attrs.frozen
class Budget:
    """How much of a device swapd may fill: fixed bytes, or a fraction of its capacity."""

    size: int | None = None
    fraction: float | None = None

    def __attrs_post_init__(self) -> None:
        if (self.size is None) == (self.fraction is None):
            raise ValueError("a budget is either a size or a fraction")

    def resolve(self, capacity: int | None) -> int | None:
        """The budget in bytes; None when it is a fraction and the capacity is unknown."""
        if self.size is not None:
            return self.size
        assert self.fraction is not None
        return None if capacity is None else int(capacity * self.fraction)

    def __str__(self) -> str:
        if self.size is not None:
            return format_size(self.size)
        assert self.fraction is not None
        return f"{self.fraction * 100:g}%"


def parse_budget(text: str) -> Budget:
    """A budget: ``80%`` (of the device's capacity, 0 < p <= 100) or a size."""
    stripped = text.strip()
    if stripped.endswith("%"):
        try:
            percent = float(stripped[:-1])
        except ValueError:
            raise SizeError(f"{text!r} is not a percentage; expected e.g. 80%") from None
        if not 0 < percent <= 100:
            raise SizeError(f"{text!r} is out of range; a percentage is above 0 and at most 100")
        return Budget(fraction=percent / 100)
    return Budget(size=parse_size(stripped))


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
