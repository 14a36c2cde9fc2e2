"""Checks of the memory keys (``memory.budgets``, each model's ``footprint``), with lines.

Runs inside ``validate.check_and_derive`` on shaped data (YAML spellings), so each problem
points at the line of the offending key. The values stay strings in ``Config``; these
checks guarantee that ``swapd.config.sizes`` can read every one of them.
"""

from __future__ import annotations

from typing import Any

from swapd.config.shape import Path, Problems
from swapd.config.sizes import SizeError, is_device_name, parse_budget, parse_size

__all__ = ["check_kv_cache_budget", "check_memory"]

_DEVICE_HINT = "expected `ram` or `gpu<N>` (gpu0, gpu1, ...)"


def check_memory(data: dict[str, Any], problems: Problems) -> None:
    """Report unknown device names and unreadable sizes in budgets and footprints."""
    budgets: dict[str, Any] = data.get("memory", {}).get("budgets", {})
    for device, text in budgets.items():
        here: Path = ("memory", "budgets", device)
        if not is_device_name(device):
            problems.add(here, f"unknown device {device!r}; {_DEVICE_HINT}")
        try:
            parse_budget(text)
        except SizeError as exc:
            problems.add(here, f"{exc}, or a share of the device such as 80%")
    for model_id, model in data.get("models", {}).items():
        for device, text in model.get("footprint", {}).items():
            place: Path = ("models", model_id, "footprint", device)
            if not is_device_name(device):
                problems.add(place, f"unknown device {device!r}; {_DEVICE_HINT}")
            try:
                parse_size(text)
            except SizeError as exc:
                problems.add(place, str(exc))


def check_kv_cache_budget(data: dict[str, Any], problems: Problems) -> None:
    """``kvCache.budget`` must be a size (docs/kvcache.md); a share makes no sense on disk.
    A model with ``kvCache.enabled`` but no ``--slot-save-path`` gets a warning."""
    text = data.get("kvCache", {}).get("budget")
    if text is not None:
        try:
            parse_size(text)
        except SizeError as exc:
            problems.add(("kvCache", "budget"), str(exc))
    for model_id, model in data.get("models", {}).items():
        enabled = model.get("kvCache", {}).get("enabled", False)
        if enabled and not any(a.startswith("--slot-save-path") for a in model.get("argv", ())):
            problems.warn(
                ("models", model_id, "kvCache", "enabled"),
                "kvCache is enabled but cmd has no --slot-save-path ${KV_CACHE_DIR}: "
                "every save will fail",
            )
