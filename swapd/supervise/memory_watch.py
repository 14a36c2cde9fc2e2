"""The supervisor's memory I/O: device capacities, footprint measurements, learned peaks,
and waiting until a stopped model's memory is really free.

- ``MemoryProbe`` is what the supervisor asks (all calls block; it runs them through
  ``trio.to_thread.run_sync``): the devices' capacities, a measurement of a running
  process group, a rough estimate from a command line, and whether a stopped group's
  memory is released. ``HostProbe`` is the real one (``observe/devices.py`` and
  ``observe/footprint.py``); ``NoProbe`` measures nothing (the swap harness uses it, so
  the mock clock never waits on real I/O, and declared footprints are all there is).
- ``FootprintBook`` keeps the learned peak per model and command line (a changed ``cmd``
  is a new model), in memory for the supervisor's synchronous reads. Attached to the
  activity store (:meth:`FootprintBook.attach`, at start), it begins with the peaks the
  store kept and queues every grown peak to its ``footprints`` table, so learned peaks
  survive restarts when the store is a file.

Released means: no live process of the model's process group remains (so the kernel has
returned its host memory), and no GPU still attributes memory to any of the PIDs last
measured in the group (NVML; AMD's sysfs has no per-process figure, so there only the
group being gone counts).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Collection, Mapping
from typing import Protocol

import attrs

from swapd.core.memory import Footprint, FootprintSource
from swapd.observe.devices import DeviceMemory, Devices
from swapd.observe.footprint import estimate_from_argv, group_members, measure
from swapd.observe.loads import command_hash
from swapd.observe.store import ActivityStore, FootprintRecord

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
    """Learned footprint peaks by (model, command-line digest); see the module docstring.
    Without :meth:`attach` it keeps them in memory only."""

    _peaks: dict[tuple[str, str], Footprint] = attrs.field(factory=dict)
    _keep: Callable[[FootprintRecord], None] | None = None

    async def attach(self, store: ActivityStore) -> None:
        """Start from the peaks ``store`` kept and keep every new one there (the store's
        writer must be running). Peaks learned already in this run stay if larger."""
        for key, peaks in (await store.learned_footprints()).items():
            kept = Footprint(bytes_on=peaks, source=FootprintSource.LEARNED)
            now = self._peaks.get(key)
            self._peaks[key] = kept if now is None else now.peak_with(kept)
        self._keep = store.add_footprint

    def load(self, model_id: str, cmd: str) -> Footprint | None:
        """The learned peak, None when this model and command line never ran (in this run
        or, attached to a file store, in an earlier one)."""
        return self._peaks.get((model_id, command_hash(cmd)))

    def save(self, model_id: str, cmd: str, peak: Footprint) -> None:
        """Keep ``peak`` for this model and command line (and queue it to the store)."""
        digest = command_hash(cmd)
        self._peaks[(model_id, digest)] = peak
        if self._keep is not None:
            record = FootprintRecord(
                model=model_id,
                cmd_hash=digest,
                peaks=dict(peak.bytes_on),
                updated_ms=int(time.time() * 1000),
            )
            self._keep(record)

    def observe(self, model_id: str, cmd: str, sample: Footprint) -> bool:
        """Fold a measurement into the peak; True when the peak grew."""
        before = self.load(model_id, cmd)
        peak = sample.peak_with(sample) if before is None else before.peak_with(sample)
        if peak == before:
            return False
        self.save(model_id, cmd, peak)
        return True
