"""Measuring what a running model holds: host memory of its process group, GPU memory per PID.

``measure(pgid, devices)`` returns a ``Footprint`` (source ``learned``) with ``ram`` and one
entry per GPU the group's processes hold memory on. Model servers fork (vLLM workers, shell
wrappers), so everything is summed over the **whole process group**, found by scanning
``/proc/<pid>/stat`` for the pgid (field 5).

Host memory is **PSS** (``Pss:`` in ``/proc/<pid>/smaps_rollup``, Linux 4.14+), not RSS.
Summing RSS over a group counts every shared page once per process: a server that forks
workers after loading (or that maps the model file in several processes) would look several
times its size. PSS divides each shared page among the processes that map it, so the sum
over the group is what the group really holds. It still counts the group's share of shared
libraries and of a memory-mapped model file (page cache that the kernel could reclaim), so
it is a slight overestimate for mmap-loading servers, which is the safe side for admission.
Where ``smaps_rollup`` cannot be read (older kernels, another user's process) RSS from
``/proc/<pid>/status`` is used instead.

``estimate_from_argv(argv)`` is the fallback before any measurement: for a command line that
names a GGUF file, the file's size plus its KV cache (see ``swapd.core.gguf_meta``).

Blocking file reads: async callers run these through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from swapd.core.gguf_meta import GgufError, estimate_bytes, gguf_path_in, read_shape
from swapd.core.memory import RAM, Footprint, FootprintSource
from swapd.observe.devices import Devices

__all__ = [
    "estimate_from_argv",
    "group_members",
    "group_resident_bytes",
    "measure",
    "process_resident_bytes",
]

PROC = Path("/proc")
_SHARD = re.compile(r"^(?P<stem>.*)-(?P<index>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$")


def group_members(pgid: int, proc: Path = PROC) -> list[int]:
    """PIDs of the live (non-zombie) processes whose process group is ``pgid``."""
    return [pid for pid, group in _processes(proc) if group == pgid]


def _processes(proc: Path) -> Iterator[tuple[int, int]]:
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            raw = (proc / entry.name / "stat").read_bytes()
        except OSError:
            continue  # gone between the scan and the read
        # comm (field 2) may hold spaces and parentheses: split after the last ")".
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] != b"Z":
            yield int(entry.name), int(fields[2])


def process_resident_bytes(pid: int, proc: Path = PROC) -> int | None:
    """``pid``'s proportional set size (PSS), else its RSS; None when it is gone."""
    for name, field in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            text = (proc / str(pid) / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    return None


def group_resident_bytes(pgid: int, proc: Path = PROC) -> int:
    """Host memory held by the whole process group ``pgid``: the sum of its members' PSS."""
    return sum(process_resident_bytes(pid, proc) or 0 for pid in group_members(pgid, proc))


def measure(pgid: int, devices: Devices | None = None, proc: Path = PROC) -> Footprint:
    """What the process group ``pgid`` holds now, on host RAM and on each GPU."""
    members = group_members(pgid, proc)
    held = {RAM: sum(process_resident_bytes(pid, proc) or 0 for pid in members)}
    if devices is not None:
        by_pid = devices.gpu_bytes_by_pid()
        for pid in members:
            for device, size in by_pid.get(pid, {}).items():
                held[device] = held.get(device, 0) + size
    return Footprint(bytes_on=held, source=FootprintSource.LEARNED)


def _model_files(path: Path) -> list[Path]:
    """The file and, for a split model (``x-00001-of-00003.gguf``), all its shards."""
    match = _SHARD.match(path.name)
    if match is None:
        return [path]
    count = int(match["count"])
    return [
        path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]


def estimate_from_argv(argv: Sequence[str], device: str = RAM) -> Footprint | None:
    """A rough footprint on ``device`` for a command line naming a readable GGUF file, else
    None. Rough: see ``swapd.core.gguf_meta`` for what it leaves out."""
    named = gguf_path_in(argv)
    if named is None:
        return None
    path = Path(named).expanduser()
    try:
        files = _model_files(path)
        size = sum(f.stat().st_size for f in files)
        with files[0].open("rb") as stream:  # the first shard carries the metadata
            shape = read_shape(stream)
    except (OSError, GgufError):
        return None
    return Footprint(
        bytes_on={device: estimate_bytes(shape, size, argv)}, source=FootprintSource.ESTIMATE
    )
