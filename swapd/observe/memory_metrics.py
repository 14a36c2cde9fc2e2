"""Prometheus gauges for memory-aware admission (docs/memory.md), next to the daemon's own.

``memory_families(footprints, budgets, held)`` turns what the supervisor knows into gauge
families for ``render_prometheus``:

- ``swapd_model_footprint_bytes{model,device,source}``: the footprint admission uses;
- ``swapd_memory_budget_bytes{device}``: each budgeted device's budget;
- ``swapd_memory_held_bytes{device}``: what swapd's models hold there by their footprints.

Empty without budgets. Pure: the caller passes the numbers in.
"""

from __future__ import annotations

from collections.abc import Mapping

from swapd.core.memory import Footprint
from swapd.observe.metrics import GaugeFamily, Labels

__all__ = ["memory_families"]


def memory_families(
    footprints: Mapping[str, Footprint | None],
    budgets: Mapping[str, int],
    held: Mapping[str, int],
) -> list[GaugeFamily]:
    if not budgets:
        return []
    sizes: list[tuple[Labels, float]] = []
    for model, footprint in sorted(footprints.items()):
        if footprint is None:
            continue
        for device, size in sorted(footprint.bytes_on.items()):
            labels = (("model", model), ("device", device), ("source", footprint.source.value))
            sizes.append((labels, float(size)))
    return [
        GaugeFamily(
            "swapd_model_footprint_bytes",
            "Memory a model holds per device when loaded, as admission counts it.",
            tuple(sizes),
        ),
        GaugeFamily(
            "swapd_memory_budget_bytes",
            "The memory budget of each budgeted device.",
            tuple(((("device", d),), float(b)) for d, b in sorted(budgets.items())),
        ),
        GaugeFamily(
            "swapd_memory_held_bytes",
            "Memory swapd's models hold per budgeted device, by their footprints.",
            tuple(((("device", d),), float(n)) for d, n in sorted(held.items())),
        ),
    ]
