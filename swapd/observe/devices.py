"""The machine's memory devices behind one small, synchronous interface.

``probe()`` finds what this machine has and returns a ``Devices``:

- host RAM, always, from ``/proc/meminfo`` (``MemTotal``; used = total - ``MemAvailable``,
  the kernel's own estimate of what can be handed out without swapping);
- NVIDIA GPUs through NVML (the ``pynvml`` module of the ``nvidia-ml-py`` package, imported
  only when installed: ``pip install swapd[gpu]``), named ``gpu0``, ``gpu1``, ... by NVML
  index; per-process GPU memory comes from NVML's compute and graphics process lists;
- AMD GPUs through sysfs (``/sys/class/drm/card*/device/mem_info_vram_total`` and
  ``mem_info_vram_used``), named after the NVIDIA ones (``gpuN`` continues the count);
  sysfs has no per-process figure, so AMD processes report nothing per PID.

``Devices.snapshot()`` reads every device now; ``Devices.gpu_bytes_by_pid()`` maps PID to
bytes per GPU. Both block (NVML calls and file reads), so async callers run them through
``trio.to_thread.run_sync``. Tests inject a recorded NVML module object (``nvml=``) and a
temporary sysfs tree (``drm_root=``) instead of the real ones.

Which parts ran on real hardware: host RAM (``/proc/meminfo``) on the build machine. The
NVML and sysfs paths ran only against recorded answers: the build machine has no GPU.
"""

from __future__ import annotations

import enum
import importlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from swapd.core.memory import RAM

__all__ = [
    "AmdSysfs",
    "DeviceKind",
    "DeviceMemory",
    "Devices",
    "HostRam",
    "Nvidia",
    "load_nvml",
    "probe",
]


class DeviceKind(enum.StrEnum):
    RAM = "ram"
    NVIDIA = "nvidia"
    AMD = "amd"


@attrs.frozen
class DeviceMemory:
    """One device's memory at one moment, in bytes."""

    name: str  # "ram", "gpu0", ...
    kind: DeviceKind
    total: int
    used: int
    label: str = ""  # the device's own name ("NVIDIA RTX 4090"), when known

    @property
    def free(self) -> int:
        return max(self.total - self.used, 0)


class DeviceFamily(Protocol):
    """One source of devices (host RAM, NVML, sysfs)."""

    def read(self) -> list[DeviceMemory]: ...

    def gpu_bytes_by_pid(self) -> dict[int, dict[str, int]]: ...


@attrs.frozen
class HostRam:
    """Host RAM from ``/proc/meminfo``."""

    meminfo: Path = Path("/proc/meminfo")

    def read(self) -> list[DeviceMemory]:
        fields: dict[str, int] = {}
        for line in self.meminfo.read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                scale = 1024 if parts[1:] == ["kB"] else 1
                fields[name] = int(parts[0]) * scale
        total = fields["MemTotal"]
        # MemAvailable exists since Linux 3.14; before it, free + page cache is the estimate.
        available = fields.get("MemAvailable", fields.get("MemFree", 0) + fields.get("Cached", 0))
        return [DeviceMemory(name=RAM, kind=DeviceKind.RAM, total=total, used=total - available)]

    def gpu_bytes_by_pid(self) -> dict[int, dict[str, int]]:
        return {}


def load_nvml() -> Any | None:
    """The ``pynvml`` module, initialised; None when it is absent or finds no driver."""
    try:
        nvml = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None
    return nvml


@attrs.frozen
class Nvidia:
    """NVIDIA GPUs through an initialised NVML module (``pynvml`` or a recorded stand-in)."""

    nvml: Any
    first_index: int = 0

    def count(self) -> int:
        return int(self.nvml.nvmlDeviceGetCount())

    def read(self) -> list[DeviceMemory]:
        devices = []
        for index in range(self.count()):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            info = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            label = self.nvml.nvmlDeviceGetName(handle)
            devices.append(
                DeviceMemory(
                    name=f"gpu{self.first_index + index}",
                    kind=DeviceKind.NVIDIA,
                    total=int(info.total),
                    used=int(info.used),
                    label=label.decode() if isinstance(label, bytes) else str(label),
                )
            )
        return devices

    def gpu_bytes_by_pid(self) -> dict[int, dict[str, int]]:
        usage: dict[int, dict[str, int]] = {}
        for index in range(self.count()):
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            name = f"gpu{self.first_index + index}"
            processes = [
                *self.nvml.nvmlDeviceGetComputeRunningProcesses(handle),
                *self.nvml.nvmlDeviceGetGraphicsRunningProcesses(handle),
            ]
            seen: set[int] = set()
            for process in processes:
                # usedGpuMemory is None where the driver cannot attribute memory (e.g. under
                # some virtualisation); a PID in both lists is the same allocation.
                if process.usedGpuMemory is None or process.pid in seen:
                    continue
                seen.add(process.pid)
                per_device = usage.setdefault(int(process.pid), {})
                per_device[name] = per_device.get(name, 0) + int(process.usedGpuMemory)
        return usage


_CARD = re.compile(r"card([0-9]+)")


@attrs.frozen
class AmdSysfs:
    """AMD GPUs from the amdgpu driver's sysfs files."""

    drm_root: Path = Path("/sys/class/drm")
    first_index: int = 0

    def cards(self) -> list[Path]:
        """Device directories of cards that report VRAM, in card-number order."""
        if not self.drm_root.is_dir():
            return []
        found = []
        for entry in self.drm_root.iterdir():
            match = _CARD.fullmatch(entry.name)  # skips connectors such as card0-HDMI-A-1
            if match and (entry / "device" / "mem_info_vram_total").is_file():
                found.append((int(match[1]), entry / "device"))
        return [path for _, path in sorted(found)]

    def read(self) -> list[DeviceMemory]:
        devices = []
        for offset, device in enumerate(self.cards()):
            total = int((device / "mem_info_vram_total").read_text().strip())
            used = int((device / "mem_info_vram_used").read_text().strip())
            devices.append(
                DeviceMemory(
                    name=f"gpu{self.first_index + offset}",
                    kind=DeviceKind.AMD,
                    total=total,
                    used=used,
                    label=_product_name(device),
                )
            )
        return devices

    def gpu_bytes_by_pid(self) -> dict[int, dict[str, int]]:
        return {}  # sysfs has no per-process VRAM figure


def _product_name(device: Path) -> str:
    try:
        return (device / "product_name").read_text().strip()
    except OSError:
        return ""


@attrs.frozen
class Devices:
    """Every memory device of the machine, RAM first."""

    families: Sequence[DeviceFamily]

    def snapshot(self) -> dict[str, DeviceMemory]:
        """Each device's memory now, by name."""
        return {d.name: d for family in self.families for d in family.read()}

    def gpu_bytes_by_pid(self) -> dict[int, dict[str, int]]:
        """GPU bytes per device for every process a device attributes memory to."""
        merged: dict[int, dict[str, int]] = {}
        for family in self.families:
            for pid, per_device in family.gpu_bytes_by_pid().items():
                merged.setdefault(pid, {}).update(per_device)
        return merged

    def capacities(self) -> Mapping[str, int]:
        """Each device's total bytes, for resolving fractional budgets."""
        return {name: device.total for name, device in self.snapshot().items()}


def probe(
    *,
    nvml: Any | None = None,
    use_nvml: bool = True,
    drm_root: Path = Path("/sys/class/drm"),
    meminfo: Path = Path("/proc/meminfo"),
) -> Devices:
    """The devices of this machine. ``nvml``: an initialised NVML module to use instead of
    importing ``pynvml`` (tests pass a recorded one); ``use_nvml=False`` skips NVML."""
    families: list[DeviceFamily] = [HostRam(meminfo)]
    if nvml is None and use_nvml:
        nvml = load_nvml()
    gpus = 0
    if nvml is not None:
        nvidia = Nvidia(nvml)
        gpus = nvidia.count()
        families.append(nvidia)
    amd = AmdSysfs(drm_root, first_index=gpus)
    if amd.cards():
        families.append(amd)
    return Devices(families)
