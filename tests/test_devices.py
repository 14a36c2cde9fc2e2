"""Memory devices (swapd.observe.devices): host RAM for real, NVML and sysfs on recorded answers.

This machine has no GPU. The NVML path is exercised with a stand-in module object that
answers the same calls ``pynvml`` answers (``nvmlDeviceGetCount``, ``...GetHandleByIndex``,
``...GetMemoryInfo``, ``...GetName``, ``...GetComputeRunningProcesses``,
``...GetGraphicsRunningProcesses``) with the shapes NVML documents: a memory-info object
with ``total``/``free``/``used`` in bytes and process objects with ``pid`` and
``usedGpuMemory`` (None when the driver cannot attribute it). The values below were written
to look like a two-GPU box, not captured from one. The AMD path reads a temporary sysfs tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from swapd.observe.devices import (
    AmdSysfs,
    DeviceKind,
    DeviceMemory,
    HostRam,
    Nvidia,
    load_nvml,
    probe,
)

MiB = 1024**2

RECORDED_NVML: dict[str, Any] = {
    "devices": [
        {
            "name": b"NVIDIA GeForce RTX 4090",
            "memory": {"total": 25757220864, "free": 14302576640, "used": 11454644224},
            "compute": [
                {"pid": 4242, "usedGpuMemory": 9663676416},
                {"pid": 77, "usedGpuMemory": None},
            ],
            "graphics": [{"pid": 1500, "usedGpuMemory": 402653184}],
        },
        {
            "name": "NVIDIA RTX A4000",
            "memory": {"total": 17171480576, "free": 17036869632, "used": 134610944},
            "compute": [{"pid": 4242, "usedGpuMemory": 2147483648}],
            "graphics": [{"pid": 4242, "usedGpuMemory": 2147483648}],  # same allocation
        },
    ]
}


def recorded_nvml(recording: dict[str, Any]) -> Any:
    """A module-like object answering pynvml's calls from ``recording``."""
    devices = recording["devices"]
    calls: list[str] = []

    def handle(index: int) -> dict[str, Any]:
        calls.append(f"handle {index}")
        return devices[index]  # type: ignore[no-any-return]

    def processes(kind: str) -> Any:
        return lambda h: [SimpleNamespace(**p) for p in h[kind]]

    return SimpleNamespace(
        calls=calls,
        nvmlInit=lambda: calls.append("init"),
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(**h["memory"]),
        nvmlDeviceGetName=lambda h: h["name"],
        nvmlDeviceGetComputeRunningProcesses=processes("compute"),
        nvmlDeviceGetGraphicsRunningProcesses=processes("graphics"),
    )


def test_host_ram_reads_this_machine() -> None:
    (ram,) = HostRam().read()
    assert ram.name == "ram" and ram.kind is DeviceKind.RAM
    page_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert ram.total == page_total or abs(ram.total - page_total) < 64 * MiB
    assert 0 < ram.used < ram.total
    assert ram.free == ram.total - ram.used


def test_host_ram_from_a_recorded_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24683784 kB\nMemFree:        19676452 kB\n"
        "MemAvailable:   22960044 kB\nHugePages_Total:       0\n"
    )
    (ram,) = HostRam(meminfo).read()
    assert ram.total == 24683784 * 1024
    assert ram.used == (24683784 - 22960044) * 1024
    old_kernel = tmp_path / "old"
    old_kernel.write_text("MemTotal: 1000 kB\nMemFree: 300 kB\nCached: 200 kB\n")
    assert HostRam(old_kernel).read()[0].used == 500 * 1024


def test_nvidia_devices_from_recorded_nvml() -> None:
    nvidia = Nvidia(recorded_nvml(RECORDED_NVML))
    assert nvidia.read() == [
        DeviceMemory(
            "gpu0", DeviceKind.NVIDIA, 25757220864, 11454644224, "NVIDIA GeForce RTX 4090"
        ),
        DeviceMemory("gpu1", DeviceKind.NVIDIA, 17171480576, 134610944, "NVIDIA RTX A4000"),
    ]


def test_nvidia_memory_per_pid_from_recorded_nvml() -> None:
    usage = Nvidia(recorded_nvml(RECORDED_NVML)).gpu_bytes_by_pid()
    assert usage == {
        4242: {"gpu0": 9663676416, "gpu1": 2147483648},
        1500: {"gpu0": 402653184},
    }  # PID 77's memory is unattributed (None) and is left out, not counted as 0


def write_card(root: Path, card: str, total: int, used: int, product: str | None) -> None:
    device = root / card / "device"
    device.mkdir(parents=True)
    (device / "mem_info_vram_total").write_text(f"{total}\n")
    (device / "mem_info_vram_used").write_text(f"{used}\n")
    if product is not None:
        (device / "product_name").write_text(product + "\n")


def test_amd_cards_from_a_sysfs_tree(tmp_path: Path) -> None:
    write_card(tmp_path, "card10", 8 * 1024**3, 1 * 1024**3, None)
    write_card(tmp_path, "card1", 25753026560, 300 * MiB, "AMD Radeon RX 7900 XTX")
    (tmp_path / "card1-HDMI-A-1").mkdir()  # a connector, not a card
    (tmp_path / "card0" / "device").mkdir(parents=True)  # an integrated GPU without VRAM files
    amd = AmdSysfs(tmp_path, first_index=2)
    assert amd.read() == [
        DeviceMemory("gpu2", DeviceKind.AMD, 25753026560, 300 * MiB, "AMD Radeon RX 7900 XTX"),
        DeviceMemory("gpu3", DeviceKind.AMD, 8 * 1024**3, 1 * 1024**3, ""),
    ]
    assert amd.gpu_bytes_by_pid() == {}
    assert AmdSysfs(tmp_path / "absent").read() == []


def test_probe_combines_ram_nvml_and_sysfs(tmp_path: Path) -> None:
    write_card(tmp_path, "card0", 16 * 1024**3, 2 * 1024**3, "AMD Instinct")
    nvml = recorded_nvml(RECORDED_NVML)
    devices = probe(nvml=nvml, drm_root=tmp_path)
    snapshot = devices.snapshot()
    assert list(snapshot) == ["ram", "gpu0", "gpu1", "gpu2"]
    assert snapshot["gpu2"].kind is DeviceKind.AMD  # numbered after the NVIDIA ones
    assert devices.capacities()["gpu1"] == 17171480576
    assert devices.gpu_bytes_by_pid()[4242] == {"gpu0": 9663676416, "gpu1": 2147483648}


def test_probe_without_gpus_is_ram_only(tmp_path: Path) -> None:
    devices = probe(use_nvml=False, drm_root=tmp_path)
    assert list(devices.snapshot()) == ["ram"]
    assert devices.gpu_bytes_by_pid() == {}


def test_load_nvml_is_none_without_pynvml_or_driver() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert load_nvml() is None
    else:  # pragma: no cover - only where nvidia-ml-py is installed
        pytest.skip("pynvml is installed here; the no-driver path is machine-dependent")
