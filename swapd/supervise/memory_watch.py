"""The supervisor's memory I/O: device capacities, footprint measurements, learned peaks,
and waiting until a stopped model's memory is really free.

- ``MemoryProbe`` is what the supervisor asks (all calls block; it runs them through
  ``trio.to_thread.run_sync``): the devices' capacities, a measurement of a running
  process group, a rough estimate from a command line, and whether a stopped group's
  memory is released. ``HostProbe`` is the real one (``observe/devices.py`` and
  ``observe/footprint.py``); ``NoProbe`` measures nothing (the swap harness uses it, so
  the mock clock never waits on real I/O, and declared footprints are all there is).
- ``FootprintBook`` keeps the learned peak per model and command line (a changed ``cmd``
  is a new model). It lives in memory only: ``load``/``save`` are the seam for the
  activity store, which will make learned peaks survive restarts; today they do nothing
  durable (``load`` returns nothing, ``save`` keeps the value in memory only).

Released means: no live process of the model's process group remains (so the kernel has
returned its host memory), and no GPU still attributes memory to any of the PIDs last
measured in the group (NVML; AMD's sysfs has no per-process figure, so there only the
group being gone counts).
"""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping
from typing import Protocol

import attrs

from swapd.core.memory import Footprint
from swapd.observe.devices import DeviceMemory, Devices
from swapd.observe.footprint import estimate_from_argv, group_members, measure

__all__ = ["FootprintBook", "HostProbe", "MemoryProbe", "NoProbe"]

#: How often a running model's footprint is measured, and how long (and how often) the
#: supervisor waits for a stopped model's memory to be reported free.
MEASURE_EVERY = 2.0
RELEASE_TIMEOUT = 10.0
RELEASE_POLL = 0.2


class MemoryProbe(Protocol):
    measures: bool  # False: no measurement, no release wait (nothing real to look at)

    def capacities(self) -> Mapping[str, int]: ...

    def snapshot(self) -> Mapping[str, DeviceMemory]:
        """Each device's total, used and free memory now."""
        ...

    def measure(self, pgid: int) -> tuple[Footprint, list[int]]:
        """What group ``pgid`` holds now, and the PIDs that were in it."""
        ...

    def estimate(self, cmd: str) -> Footprint | None: ...

    def released(self, pgid: int, pids: Collection[int]) -> bool: ...


@attrs.define
class HostProbe:
    """This machine's devices (host RAM, NVIDIA, AMD)."""

    devices: Devices
    measures: bool = True

    def capacities(self) -> Mapping[str, int]:
        return self.devices.capacities()

    def snapshot(self) -> Mapping[str, DeviceMemory]:
        return self.devices.snapshot()

    def measure(self, pgid: int) -> tuple[Footprint, list[int]]:
        members = group_members(pgid)
        return measure(pgid, self.devices), members

    def estimate(self, cmd: str) -> Footprint | None:
        try:
            argv = shlex.split(cmd)
        except ValueError:
            return None
        return estimate_from_argv(argv)

    def released(self, pgid: int, pids: Collection[int]) -> bool:
        if group_members(pgid):
            return False
        by_pid = self.devices.gpu_bytes_by_pid()
        return not any(by_pid.get(pid) for pid in (pgid, *pids))


@attrs.define
class NoProbe:
    """No devices, no measurement: only declared footprints and absolute budgets count."""

    measures: bool = False

    def capacities(self) -> Mapping[str, int]:
        return {}

    def snapshot(self) -> Mapping[str, DeviceMemory]:
        return {}

    def measure(self, pgid: int) -> tuple[Footprint, list[int]]:
        return Footprint(), []

    def estimate(self, cmd: str) -> Footprint | None:
        return None

    def released(self, pgid: int, pids: Collection[int]) -> bool:
        return True


@attrs.define
class FootprintBook:
    """Learned footprint peaks by (model, command line). In memory only for now: ``load``
    and ``save`` are where the activity store will plug in (see the module docstring)."""

    _peaks: dict[tuple[str, str], Footprint] = attrs.field(factory=dict)

    def load(self, model_id: str, cmd: str) -> Footprint | None:
        """The learned peak, None when this model and command line never ran (nothing
        durable is read yet)."""
        return self._peaks.get((model_id, cmd))

    def save(self, model_id: str, cmd: str, peak: Footprint) -> None:
        """Keep ``peak`` for this model and command line (in memory only, for now)."""
        self._peaks[(model_id, cmd)] = peak

    def observe(self, model_id: str, cmd: str, sample: Footprint) -> bool:
        """Fold a measurement into the peak; True when the peak grew."""
        before = self.load(model_id, cmd)
        peak = sample.peak_with(sample) if before is None else before.peak_with(sample)
        if peak == before:
            return False
        self.save(model_id, cmd, peak)
        return True
