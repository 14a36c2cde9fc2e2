"""Each memory device's budget, use and free memory, as ``/running`` and the event
stream show them.

- ``device_report(budgets, held, devices)``: per device (budgeted or present), its
  ``budget``, what swapd's models ``held`` by their footprints, ``budgetFree``, and the
  device's own ``total``/``used``/``free`` (None where unknown);
- ``MemoryReported``: the bus event the supervisor publishes when that report changed
  (the event stream sends it as ``memory``), at most once per ``REPORT_EVERY`` seconds;
- ``changed(before, now)``: whether a new report is worth sending. Budgets and holdings
  count at any change; a device's own use only when it moved by at least 1% of its total
  (host RAM moves a little all the time with other programs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from swapd.observe.devices import DeviceMemory

__all__ = ["REPORT_EVERY", "MemoryReported", "changed", "device_report"]

#: How often the supervisor looks for a changed report (and so the most it sends).
REPORT_EVERY = 1.0

DeviceReport = dict[str, int | None]


def device_report(
    budgets: Mapping[str, int], held: Mapping[str, int], devices: Mapping[str, DeviceMemory]
) -> dict[str, DeviceReport]:
    report: dict[str, DeviceReport] = {}
    for name in sorted(set(budgets) | set(devices)):
        budget = budgets.get(name)
        device = devices.get(name)
        report[name] = {
            "budget": budget,
            "held": held.get(name, 0),
            "budgetFree": None if budget is None else max(budget - held.get(name, 0), 0),
            "total": None if device is None else device.total,
            "used": None if device is None else device.used,
            "free": None if device is None else device.free,
        }
    return report


def changed(before: Mapping[str, DeviceReport] | None, now: Mapping[str, DeviceReport]) -> bool:
    if before is None or set(before) != set(now):
        return True
    for name, entry in now.items():
        old = before[name]
        if any(old[key] != entry[key] for key in ("budget", "held", "total")):
            return True
        used, was = entry["used"], old["used"]
        if (used is None) != (was is None):
            return True
        total = entry["total"] or 0
        if used is not None and was is not None and abs(used - was) >= max(total // 100, 1):
            return True
    return False


@attrs.frozen
class MemoryReported:
    """Each device's budget and use changed (see the module docstring)."""

    kind = "memory"
    devices: Mapping[str, DeviceReport]

    def as_json(self) -> dict[str, Any]:
        return {"devices": {name: dict(entry) for name, entry in self.devices.items()}}
