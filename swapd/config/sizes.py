"""Memory sizes, budgets and device names as the config file spells them.

``parse_size`` reads "9GiB", "512MiB", "4GB" or plain bytes (KB/MB/GB/TB are powers of 1000,
KiB/MiB/GiB/TiB powers of 1024, case-insensitive); ``parse_budget`` reads a size or a
fraction of the device's capacity ("80%"); ``is_device_name`` accepts ``ram`` and ``gpu<N>``.
The config loader validates with these, and ``swapd.core.memory`` decides with them.

Pure: no I/O.
"""

from __future__ import annotations

import re

import attrs

__all__ = [
    "RAM",
    "Budget",
    "SizeError",
    "format_size",
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
