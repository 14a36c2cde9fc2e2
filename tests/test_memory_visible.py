"""The device memory report and when a new one is worth sending
(``swapd/supervise/memory_report.py``)."""

from __future__ import annotations

from swapd.observe.devices import DeviceKind, DeviceMemory
from swapd.supervise.memory_report import MemoryReported, changed, device_report

GiB = 1024**3


def ram(used: int, total: int = 64 * GiB) -> DeviceMemory:
    return DeviceMemory(name="ram", kind=DeviceKind.RAM, total=total, used=used)


def test_the_report_joins_budgets_holdings_and_devices() -> None:
    report = device_report(
        {"ram": 32 * GiB, "gpu0": 20 * GiB}, {"ram": 40 * GiB}, {"ram": ram(48 * GiB)}
    )
    assert report == {
        "gpu0": {
            "budget": 20 * GiB,
            "held": 0,
            "budgetFree": 20 * GiB,
            "total": None,
            "used": None,
            "free": None,
        },
        "ram": {
            "budget": 32 * GiB,
            "held": 40 * GiB,
            "budgetFree": 0,
            "total": 64 * GiB,
            "used": 48 * GiB,
            "free": 16 * GiB,
        },
    }
    assert MemoryReported(report).as_json() == {"devices": report}


def test_holdings_count_at_any_change_device_use_from_one_percent() -> None:
    budgets, held = {"ram": 32 * GiB}, {"ram": 8 * GiB}
    first = device_report(budgets, held, {"ram": ram(20 * GiB)})
    assert changed(None, first)
    assert not changed(first, device_report(budgets, held, {"ram": ram(20 * GiB + 100 * 2**20)}))
    assert changed(first, device_report(budgets, held, {"ram": ram(20 * GiB + GiB)}))
    assert changed(first, device_report(budgets, {"ram": 8 * GiB + 1}, {"ram": ram(20 * GiB)}))
    assert changed(first, device_report({"ram": 16 * GiB}, held, {"ram": ram(20 * GiB)}))
    assert changed(first, device_report(budgets, held, {}))  # the device went away
