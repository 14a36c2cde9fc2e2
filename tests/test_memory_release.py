"""When is a stopped model's memory free again (``HostProbe.released``), on a real process
group: not while a member lives, not while a GPU still attributes memory to one of its
PIDs (recorded NVML answers: the build machine has no GPU), and yes once both are gone."""

from __future__ import annotations

import os
import sys

import trio
from survivors import no_survivors  # noqa: F401 (autouse)
from test_devices import RECORDED_NVML, recorded_nvml
from test_footprint import Lines

from swapd.core.memory import RAM, Footprint, FootprintSource
from swapd.observe.devices import Devices, HostRam, Nvidia
from swapd.supervise.memory_watch import FootprintBook, HostProbe
from swapd.supervise.procgroup import open_process_group

MiB = 1024**2


def upstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "swapd.testing.upstream", "--port", "0", "--silent", *args]


def nvml_naming(pid: int | None) -> Devices:
    """Recorded GPUs whose compute processes are ``pid`` (none when None)."""
    recording = {
        "devices": [
            {**d, "compute": [] if pid is None else [{**p, "pid": pid} for p in d["compute"]]}
            for d in RECORDED_NVML["devices"]
        ]
    }
    return Devices([HostRam(), Nvidia(recorded_nvml(recording))])


async def test_released_once_the_group_is_gone_and_no_gpu_names_its_pids() -> None:
    out = Lines()
    with trio.fail_after(60):
        async with open_process_group(
            upstream("--hold-mib", "64"), env=dict(os.environ), on_output=out
        ) as group:
            await out.wait_for("demo upstream")
            probe = HostProbe(nvml_naming(group.pid))
            sample, members = await trio.to_thread.run_sync(probe.measure, group.pid)
            assert members == [group.pid]
            assert sample.on(RAM) >= 64 * MiB and sample.on("gpu0") > 0
            assert not await trio.to_thread.run_sync(probe.released, group.pid, members)
            await group.stop(grace=5)
    # The group is gone, but the (recorded) driver still attributes memory to its PID.
    assert not probe.released(group.pid, members)
    assert HostProbe(nvml_naming(None)).released(group.pid, members)
    assert HostProbe(Devices([HostRam()])).released(group.pid, members)


def test_the_book_keeps_the_peak_per_model_and_command_line() -> None:
    book = FootprintBook()

    def sample(ram: int, gpu: int = 0) -> Footprint:
        sizes = {"ram": ram, **({"gpu0": gpu} if gpu else {})}
        return Footprint(bytes_on=sizes, source=FootprintSource.LEARNED)

    assert book.load("m", "cmd a") is None
    assert book.observe("m", "cmd a", sample(100))
    assert not book.observe("m", "cmd a", sample(90))  # below the peak: nothing changes
    assert book.observe("m", "cmd a", sample(80, gpu=50))
    assert book.load("m", "cmd a") == sample(100, gpu=50)
    assert book.load("m", "cmd b") is None  # a changed command line is a new model
