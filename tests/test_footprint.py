"""Footprint measurement (swapd.observe.footprint) on real process groups, and the GGUF estimate.

The demo upstream holds N MiB of touched pages (``--hold-mib``) in its own process group;
the measurement must see at least that, and not absurdly more.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio
from survivors import no_survivors  # noqa: F401 (autouse)
from test_devices import RECORDED_NVML, recorded_nvml

from swapd.core.gguf_meta import kv_cache_bytes, read_shape
from swapd.core.memory import RAM, FootprintSource
from swapd.observe.devices import Devices, HostRam, Nvidia
from swapd.observe.footprint import (
    estimate_from_argv,
    group_members,
    group_resident_bytes,
    measure,
    process_resident_bytes,
)
from swapd.supervise.procgroup import open_process_group
from swapd.testing.gguf import TinyModel, write_tiny_gguf

MiB = 1024**2
HOLD = 96


def upstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "swapd.testing.upstream", "--port", "0", "--silent", *args]


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.changed = trio.Event()

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append(line)
        self.changed.set()

    async def wait_for(self, prefix: str) -> str:
        while True:
            for line in self.lines:
                if line.startswith(prefix):
                    return line
            self.changed = trio.Event()
            await self.changed.wait()


async def test_measures_a_process_group_holding_touched_memory() -> None:
    out = Lines()
    with trio.fail_after(60):
        async with open_process_group(
            upstream("--hold-mib", str(HOLD), "--spawn-grandchild"),
            env=dict(os.environ),
            on_output=out,
        ) as group:
            await out.wait_for("demo upstream")
            grandchild = int((await out.wait_for("grandchild pid")).split()[2])
            members = await trio.to_thread.run_sync(group_members, group.pid)
            assert sorted(members) == sorted([group.pid, grandchild])
            leader = await trio.to_thread.run_sync(process_resident_bytes, group.pid)
            total = await trio.to_thread.run_sync(group_resident_bytes, group.pid)
            assert leader is not None and leader >= HOLD * MiB
            assert total > leader  # the grandchild counts too
            # Python, trio and the held block; far below the held size again on top.
            assert total < (HOLD + 200) * MiB
            footprint = await trio.to_thread.run_sync(measure, group.pid)
            assert footprint.source is FootprintSource.LEARNED
            assert footprint.on(RAM) >= HOLD * MiB
            await group.stop(grace=5)
    assert group_resident_bytes(group.pid) == 0  # nothing of the group is left


async def test_without_hold_the_group_is_much_smaller() -> None:
    out = Lines()
    with trio.fail_after(60):
        async with open_process_group(upstream(), env=dict(os.environ), on_output=out) as group:
            await out.wait_for("demo upstream")
            total = await trio.to_thread.run_sync(group_resident_bytes, group.pid)
            assert 0 < total < HOLD * MiB
            await group.stop(grace=5)


async def test_gpu_memory_of_the_group_comes_from_the_device_interface() -> None:
    out = Lines()
    with trio.fail_after(60):
        async with open_process_group(upstream(), env=dict(os.environ), on_output=out) as group:
            await out.wait_for("demo upstream")
            # Recorded NVML answers, re-keyed so the group leader is the process on the GPUs.
            recording = {
                "devices": [
                    {**d, "compute": [{**p, "pid": group.pid} for p in d["compute"]]}
                    for d in RECORDED_NVML["devices"]
                ]
            }
            devices = Devices([HostRam(), Nvidia(recorded_nvml(recording))])
            footprint = await trio.to_thread.run_sync(measure, group.pid, devices)
            assert footprint.on("gpu0") == 9663676416
            assert footprint.on("gpu1") == 2147483648
            assert footprint.on(RAM) > 0
            await group.stop(grace=5)


def test_estimate_for_a_gguf_command(tmp_path: Path) -> None:
    model = TinyModel(n_ctx=2048)
    path = write_tiny_gguf(tmp_path / "tiny.gguf", model)
    size = path.stat().st_size
    with path.open("rb") as stream:
        shape = read_shape(stream)
    argv = ["llama-server", "-m", str(path), "-c", "512"]
    estimate = estimate_from_argv(argv)
    assert estimate is not None and estimate.source is FootprintSource.ESTIMATE
    assert estimate.on(RAM) == size + kv_cache_bytes(shape, 512, ("f16", "f16"))
    on_gpu = estimate_from_argv(["llama-server", "--model", str(path)], device="gpu0")
    assert on_gpu is not None
    assert on_gpu.on("gpu0") == size + kv_cache_bytes(shape, 2048, ("f16", "f16"))
    assert estimate_from_argv(["vllm", "serve", "org/model"]) is None
    assert estimate_from_argv(["llama-server", "-m", str(tmp_path / "missing.gguf")]) is None
    not_gguf = tmp_path / "fake.gguf"
    not_gguf.write_bytes(b"not a model")
    assert estimate_from_argv(["llama-server", "-m", str(not_gguf)]) is None


def test_estimate_sums_the_shards_of_a_split_model(tmp_path: Path) -> None:
    first = write_tiny_gguf(tmp_path / "m-00001-of-00002.gguf")
    second = tmp_path / "m-00002-of-00002.gguf"
    second.write_bytes(bytes(4096))  # later shards hold tensors only
    with first.open("rb") as stream:
        shape = read_shape(stream)
    estimate = estimate_from_argv(["llama-server", "-m", str(first), "-c", "16"])
    assert estimate is not None
    expected = first.stat().st_size + 4096 + kv_cache_bytes(shape, 16, ("f16", "f16"))
    assert estimate.on(RAM) == expected
