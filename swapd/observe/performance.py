"""System and GPU samples every ``performance.every``, kept for an hour (``/api/performance``).

``PerformanceMonitor.run`` is a task the daemon starts: it detects the hardware once
(``swapd.observe.hardware``), then takes a sample every period in a worker thread
(``trio.to_thread``: the reads block) and keeps ``3600 / every`` of them in a ring. A
sample is llama-swap v250's: per-core CPU use since the previous sample (``/proc/stat``),
memory and swap (``/proc/meminfo``), load averages (``/proc/loadavg``), bytes per network
interface (``/proc/net/dev``, loopback left out), and one entry per GPU. GPU memory comes
from ``swapd.observe.devices`` (the interface memory admission uses); temperature, use,
fan and power come from the same NVML module (NVIDIA) or the same sysfs card directory
(AMD), each ``None`` when the GPU does not report it. With ``performance.disabled`` the
task does nothing and the routes answer 503 (off until a restart, as in llama-swap).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from swapd.config.v250 import MIN_EVERY, parse_every
from swapd.observe import devices as devices_module
from swapd.observe.devices import AmdSysfs, DeviceKind, Devices, Nvidia
from swapd.observe.hardware import detect

__all__ = [
    "MIN_EVERY",
    "PerformanceMonitor",
    "ProcFiles",
    "cpu_times",
    "cpu_util",
]

log = logging.getLogger(__name__)
_MB = 1024 * 1024


@attrs.frozen
class ProcFiles:
    """Where the samples are read from (tests point these at recorded copies)."""

    stat: Path = Path("/proc/stat")
    meminfo: Path = Path("/proc/meminfo")
    loadavg: Path = Path("/proc/loadavg")
    net_dev: Path = Path("/proc/net/dev")


def cpu_times(stat: str) -> list[tuple[int, int]]:
    """(busy, total) jiffies per logical CPU from ``/proc/stat`` (``cpuN`` lines)."""
    times = []
    for line in stat.splitlines():
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        times.append((sum(values) - idle, sum(values)))
    return times


def cpu_util(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    """Percentage busy per core between two ``cpu_times`` readings (0 where nothing passed)."""
    util = []
    for (busy0, total0), (busy1, total1) in zip(before, after, strict=False):
        elapsed = total1 - total0
        util.append(round(100.0 * (busy1 - busy0) / elapsed, 2) if elapsed > 0 else 0.0)
    return util


def _meminfo_mb(text: str) -> dict[str, int]:
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) // 1024  # kB → MiB
    return fields


def _net_io(text: str) -> list[dict[str, Any]]:
    interfaces = []
    for line in text.splitlines()[2:]:  # two header lines
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name.strip() == "lo" or len(fields) < 9:
            continue
        interfaces.append(
            {"name": name.strip(), "bytes_recv": int(fields[0]), "bytes_sent": int(fields[8])}
        )
    return interfaces


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.define(eq=False)
class PerformanceMonitor:
    """The sampler and its ring; ``hardware`` is the start-up snapshot (None until detected
    or when detection failed)."""

    every: float = 5.0
    disabled: bool = False
    files: ProcFiles = attrs.field(factory=ProcFiles)
    probe: Callable[[], Devices] = devices_module.probe
    hardware: dict[str, Any] | None = None
    detected: trio.Event = attrs.field(factory=trio.Event)
    _sys: collections.deque[dict[str, Any]] = attrs.field(init=False)
    _gpu: collections.deque[list[dict[str, Any]]] = attrs.field(init=False)
    _devices: Devices | None = attrs.field(init=False, default=None)
    _cpu: list[tuple[int, int]] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        size = max(int(3600 / max(self.every, MIN_EVERY)), 1)
        self._sys = collections.deque(maxlen=size)
        self._gpu = collections.deque(maxlen=size)

    @classmethod
    def from_config(cls, settings: Any) -> PerformanceMonitor:
        """From ``config.performance`` (``every`` was checked at load: at least 5 s)."""
        return cls(every=max(parse_every(settings.every), MIN_EVERY), disabled=settings.disabled)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            self._devices = await trio.to_thread.run_sync(self.probe)
            self.hardware = await trio.to_thread.run_sync(detect, self._devices)
        except Exception as exc:  # a broken /proc or driver must not take swapd down
            log.error("hardware detection unavailable: %s", exc)
        finally:
            self.detected.set()
        if self.disabled:
            log.info("performance monitoring is disabled")
            return
        while True:
            try:
                await trio.to_thread.run_sync(self.sample_now)
            except Exception as exc:
                log.warning("performance sample failed: %s", exc)
            await trio.sleep(self.every)

    def sample_now(self) -> None:
        """Take one sample into the ring (blocking reads)."""
        stamp = _now()
        now_cpu = cpu_times(self.files.stat.read_text())
        before = self._cpu or [(0, 0)] * len(now_cpu)
        self._cpu = now_cpu
        mem = _meminfo_mb(self.files.meminfo.read_text())
        load = (self.files.loadavg.read_text().split() + ["0"] * 3)[:3]
        total = mem.get("MemTotal", 0)
        available = mem.get("MemAvailable", mem.get("MemFree", 0))
        self._sys.append(
            {
                "timestamp": stamp,
                "cpu_util_per_core": cpu_util(before, now_cpu),
                "mem_total_mb": total,
                "mem_used_mb": total - available,
                "mem_free_mb": available,
                "swap_total_mb": mem.get("SwapTotal", 0),
                "swap_used_mb": mem.get("SwapTotal", 0) - mem.get("SwapFree", 0),
                "load_avg_1": float(load[0]),
                "load_avg_5": float(load[1]),
                "load_avg_15": float(load[2]),
                "net_io": _net_io(self.files.net_dev.read_text()),
            }
        )
        self._gpu.append(gpu_stats(self._devices, stamp) if self._devices else [])

    def samples(self, after: dt.datetime | None = None) -> tuple[list[Any], list[Any]]:
        """(sys_stats, gpu_stats), oldest first, only those strictly after ``after``."""

        def keep(entry: dict[str, Any]) -> bool:
            return after is None or _parse_stamp(entry["timestamp"]) > after

        sys_stats = [s for s in self._sys if keep(s)]
        gpu = [g for batch in self._gpu for g in batch if keep(g)]
        return sys_stats, gpu

    def latest(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """The newest system sample and its GPU entries (for Prometheus)."""
        if not self._sys:
            return None, []
        return self._sys[-1], list(self._gpu[-1])


def _parse_stamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def gpu_stats(devices: Devices, stamp: str) -> list[dict[str, Any]]:
    """One entry per GPU: memory from ``devices``, the rest from its own family."""
    extras: dict[str, dict[str, Any]] = {}
    for family in devices.families:
        if isinstance(family, Nvidia):
            extras.update(_nvidia_extras(family))
        elif isinstance(family, AmdSysfs):
            extras.update(_amd_extras(family))
    entries = []
    gpus = [d for d in devices.snapshot().values() if d.kind is not DeviceKind.RAM]
    for index, device in enumerate(gpus):
        extra = extras.get(device.name, {})
        entries.append(
            {
                "timestamp": stamp,
                "id": index,
                "name": device.label or device.name,
                "uuid": extra.get("uuid"),
                "temp_c": extra.get("temp_c"),
                "vram_temp_c": extra.get("vram_temp_c"),
                "gpu_util_pct": extra.get("gpu_util_pct"),
                "mem_util_pct": extra.get("mem_util_pct"),
                "mem_used_mb": device.used // _MB,
                "mem_total_mb": device.total // _MB,
                "fan_speed_pct": extra.get("fan_speed_pct"),
                "power_draw_w": extra.get("power_draw_w"),
            }
        )
    return entries


def _attempt(read: Callable[..., Any], *args: Any) -> Any:
    try:
        return read(*args)
    except Exception:  # NVMLError_NotSupported, a missing sysfs file, ...
        return None


def _strip(text: str | None) -> str | None:
    return None if text is None else text.strip()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _nvidia_extras(family: Nvidia) -> dict[str, dict[str, Any]]:
    nvml = family.nvml
    found = {}
    for index in range(family.count()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        rates = _attempt(nvml.nvmlDeviceGetUtilizationRates, handle)
        uuid = _attempt(nvml.nvmlDeviceGetUUID, handle)
        power = _attempt(nvml.nvmlDeviceGetPowerUsage, handle)  # milliwatts
        found[f"gpu{family.first_index + index}"] = {
            "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
            "temp_c": _float(_attempt(nvml.nvmlDeviceGetTemperature, handle, 0)),
            "gpu_util_pct": None if rates is None else float(rates.gpu),
            "mem_util_pct": None if rates is None else float(rates.memory),
            "fan_speed_pct": _float(_attempt(nvml.nvmlDeviceGetFanSpeed, handle)),
            "power_draw_w": None if power is None else power / 1000.0,
        }
    return found


def _amd_extras(family: AmdSysfs) -> dict[str, dict[str, Any]]:
    found = {}
    for offset, device in enumerate(family.cards()):
        hwmon = next(iter(sorted((device / "hwmon").glob("hwmon*"))), None)

        def number(path: Path | None, scale: float) -> float | None:
            if path is None:
                return None
            text = _attempt(path.read_text)
            return None if text is None else float(text.strip()) / scale

        found[f"gpu{family.first_index + offset}"] = {
            "uuid": _strip(_attempt((device / "unique_id").read_text)),
            "temp_c": number(hwmon and hwmon / "temp1_input", 1000.0),
            "vram_temp_c": number(hwmon and hwmon / "temp3_input", 1000.0),
            "gpu_util_pct": number(device / "gpu_busy_percent", 1.0),
            "mem_util_pct": number(device / "mem_busy_percent", 1.0),
            "fan_speed_pct": None,
            "power_draw_w": number(hwmon and hwmon / "power1_average", 1e6),
        }
    return found
