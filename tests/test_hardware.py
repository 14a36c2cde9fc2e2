"""Hardware and performance (swapd.observe.hardware/performance, /api/hardware, /api/performance).

Parsing runs on recorded /proc text; GPUs on a recorded NVML stand-in (tests/test_devices.py's,
extended with the sampling calls pynvml answers: ``nvmlDeviceGetTemperature`` in °C,
``...GetUtilizationRates`` with ``gpu``/``memory`` percentages, ``...GetFanSpeed`` in percent,
``...GetPowerUsage`` in milliwatts, ``...GetUUID``) and a temporary amdgpu sysfs tree. The
HTTP tests run swapd for real on this machine, which has no GPU.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
from test_config_v250 import load, problems
from test_devices import RECORDED_NVML, recorded_nvml

from swapd.config.v250 import parse_every
from swapd.observe.devices import AmdSysfs, Devices, HostRam, Nvidia
from swapd.observe.hardware import HostFiles, cpu_facts, detect
from swapd.observe.performance import PerformanceMonitor, ProcFiles, cpu_times, cpu_util, gpu_stats
from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 7950X 16-Core Processor
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu vme sse

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 7950X 16-Core Processor
physical id\t: 0
core id\t\t: 0
flags\t\t: fpu vme sse

processor\t: 2
vendor_id\t: AuthenticAMD
model name\t: AMD Ryzen 9 7950X 16-Core Processor
physical id\t: 0
core id\t\t: 1
flags\t\t: fpu vme sse
"""
STAT_1 = "cpu  10 0 10 80 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 5 0 5 40 0 0 0 0 0 0\nintr 1\n"
STAT_2 = "cpu  40 0 10 130 0 0 0 0\ncpu0 35 0 5 60 0 0 0 0 0 0\ncpu1 5 0 5 70 0 0 0 0 0 0\n"
MEMINFO = (
    "MemTotal:       16384000 kB\nMemFree:         1024000 kB\nMemAvailable:    8192000 kB\n"
    "SwapTotal:       2048000 kB\nSwapFree:        1024000 kB\n"
)
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  999 1 0 0 0 0 0 0  999 1 0 0 0 0 0 0
  eth0: 123456 100 0 0 0 0 0 0 654321 90 0 0 0 0 0 0
"""


def sampling_nvml() -> Any:
    nvml = recorded_nvml(RECORDED_NVML)

    def only_first(value: Any) -> Any:
        def call(handle: Any, *_: Any) -> Any:
            if handle is RECORDED_NVML["devices"][0]:
                return value
            raise RuntimeError("NVMLError_NotSupported")

        return call

    nvml.nvmlDeviceGetTemperature = only_first(54)
    nvml.nvmlDeviceGetUtilizationRates = only_first(SimpleNamespace(gpu=87, memory=41))
    nvml.nvmlDeviceGetFanSpeed = only_first(60)
    nvml.nvmlDeviceGetPowerUsage = only_first(312500)
    nvml.nvmlDeviceGetUUID = only_first(b"GPU-1234")
    return nvml


def amd_tree(root: Path) -> Path:
    device = root / "card0" / "device"
    (device / "hwmon" / "hwmon3").mkdir(parents=True)
    (device / "mem_info_vram_total").write_text("17163091968\n")
    (device / "mem_info_vram_used").write_text("1073741824\n")
    (device / "product_name").write_text("Radeon RX 7800 XT\n")
    (device / "gpu_busy_percent").write_text("12\n")
    (device / "hwmon" / "hwmon3" / "temp1_input").write_text("45000\n")
    (device / "hwmon" / "hwmon3" / "power1_average").write_text("25000000\n")
    return root


def proc_files(tmp_path: Path, stat: str) -> ProcFiles:
    for name, text in (
        ("stat", stat),
        ("meminfo", MEMINFO),
        ("loadavg", "0.50 0.25 0.10 1/99 7\n"),
    ):
        (tmp_path / name).write_text(text)
    (tmp_path / "net_dev").write_text(NET_DEV)
    return ProcFiles(
        stat=tmp_path / "stat",
        meminfo=tmp_path / "meminfo",
        loadavg=tmp_path / "loadavg",
        net_dev=tmp_path / "net_dev",
    )


def test_cpu_facts_count_sockets_cores_and_threads() -> None:
    assert cpu_facts(CPUINFO) == {
        "vendor": "AuthenticAMD",
        "model": "AMD Ryzen 9 7950X 16-Core Processor",
        "socket_count": 1,
        "physical_core_count": 2,
        "logical_thread_count": 3,
    }


def test_cpu_use_per_core_between_two_readings() -> None:
    before, after = cpu_times(STAT_1), cpu_times(STAT_2)
    assert before == [(10, 50), (10, 50)]
    assert cpu_util(before, after) == [60.0, 0.0]  # cpu0: 30 of 50 jiffies busy


def test_hardware_snapshot_with_recorded_gpus(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    (tmp_path / "os-release").write_text('NAME="Debian GNU/Linux"\nVERSION_ID="12"\n')
    devices = Devices([HostRam(), Nvidia(sampling_nvml())])
    files = HostFiles(
        cpuinfo=tmp_path / "cpuinfo",
        os_release=tmp_path / "os-release",
        root=tmp_path,
        machine="aarch64",
        system="Linux",
        kernel="6.1.0",
    )
    found = detect(devices, files)
    assert found["schema_version"] == 1
    assert found["architecture"] == {"name": "arm64", "raw_name": "aarch64"}
    assert found["operating_system"] == {
        "family": "linux",
        "name": "Debian GNU/Linux",
        "version": "12",
        "kernel": "6.1.0",
    }
    assert found["environment"]["kind"] == "native"
    assert found["cpu"]["physical_core_count"] == 2
    assert found["memory"]["capacity_bytes"] == HostRam().read()[0].total
    assert [(a["index"], a["vendor"], a["model"]) for a in found["accelerators"]] == [
        (0, "nvidia", "NVIDIA GeForce RTX 4090"),
        (1, "nvidia", "NVIDIA RTX A4000"),
    ]
    assert found["accelerators"][0]["memory"] == {
        "kind": "dedicated",
        "capacity_bytes": 25757220864,
    }


def test_gpu_samples_from_nvml_and_sysfs(tmp_path: Path) -> None:
    nvidia = Nvidia(sampling_nvml())
    devices = Devices([HostRam(), nvidia, AmdSysfs(amd_tree(tmp_path), first_index=2)])
    first, second, amd = gpu_stats(devices, "2026-12-04T10:00:00.000000Z")
    assert first | {"timestamp": None} == {
        "timestamp": None,
        "id": 0,
        "name": "NVIDIA GeForce RTX 4090",
        "uuid": "GPU-1234",
        "temp_c": 54.0,
        "vram_temp_c": None,
        "gpu_util_pct": 87.0,
        "mem_util_pct": 41.0,
        "mem_used_mb": 11454644224 // 1024**2,
        "mem_total_mb": 25757220864 // 1024**2,
        "fan_speed_pct": 60.0,
        "power_draw_w": 312.5,
    }
    # the second GPU answers NotSupported to every sampling call: nulls, not a failure
    assert second["name"] == "NVIDIA RTX A4000" and second["temp_c"] is None
    assert second["mem_total_mb"] == 17171480576 // 1024**2
    assert (amd["id"], amd["name"], amd["temp_c"], amd["gpu_util_pct"], amd["power_draw_w"]) == (
        2,
        "Radeon RX 7800 XT",
        45.0,
        12.0,
        25.0,
    )
    assert amd["mem_util_pct"] is None  # no mem_busy_percent file


def test_samples_ring_and_after_filter(tmp_path: Path) -> None:
    monitor = PerformanceMonitor(every=5, files=proc_files(tmp_path, STAT_1))
    monitor.sample_now()
    (tmp_path / "stat").write_text(STAT_2)
    monitor.sample_now()
    sys_stats, gpu = monitor.samples()
    assert gpu == []  # no devices probed: no GPU entries
    latest = sys_stats[-1]
    assert latest["cpu_util_per_core"] == [60.0, 0.0]
    assert (latest["mem_total_mb"], latest["mem_used_mb"], latest["mem_free_mb"]) == (
        16000,
        8000,
        8000,
    )
    assert (latest["swap_total_mb"], latest["swap_used_mb"]) == (2000, 1000)
    assert (latest["load_avg_1"], latest["load_avg_5"], latest["load_avg_15"]) == (0.5, 0.25, 0.1)
    assert latest["net_io"] == [{"name": "eth0", "bytes_recv": 123456, "bytes_sent": 654321}]
    first = dt.datetime.fromisoformat(sys_stats[0]["timestamp"])
    assert monitor.samples(first)[0] == sys_stats[1:]
    assert len(PerformanceMonitor(every=5).samples()[0]) == 0
    assert PerformanceMonitor(every=60)._sys.maxlen == 60  # one hour of samples


def test_performance_every_is_checked_at_load() -> None:
    assert parse_every("1m30s") == 90.0
    assert load("performance: {every: 10s}\n").performance.every == "10s"
    (found,) = problems("performance:\n  every: 2s\n")
    assert found[1:] == ("performance.every", "performance: every must be at least 5s, got 2s")
    (found,) = problems("performance:\n  every: soon\n")
    assert found[2] == "performance: invalid duration 'soon'"


async def test_hardware_and_performance_over_http() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd("models: {}\n") as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            hardware = (await client.get("/api/hardware")).json()
            for _ in range(100):  # the first sample is taken as swapd starts
                answer = await client.get("/api/performance")
                if answer.json()["sys_stats"]:
                    break
                await trio.sleep(0.1)
            bad = await client.get("/api/performance", params={"after": "yesterday"})
            stamp = answer.json()["sys_stats"][-1]["timestamp"]
            after = await client.get("/api/performance", params={"after": stamp})
    assert hardware["schema_version"] == 1
    assert hardware["cpu"]["logical_thread_count"] == os.cpu_count()
    assert hardware["memory"]["capacity_bytes"] == HostRam().read()[0].total
    assert hardware["accelerators"] == []  # this machine has no GPU
    body = answer.json()
    assert answer.status_code == 200 and body["enabled"] is True and body["gpu_stats"] == []
    assert len(body["sys_stats"][0]["cpu_util_per_core"]) == os.cpu_count()
    assert bad.status_code == 400 and "after" in bad.json()["error"]["message"]
    assert after.json()["sys_stats"] == []


async def test_performance_disabled_answers_503() -> None:
    config = "performance: {disabled: true}\nmodels: {}\n"
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            answer = await client.get("/api/performance")
            hardware = await client.get("/api/hardware")
    assert answer.status_code == 503 and answer.json() == {"enabled": False}
    assert hardware.status_code == 200  # the snapshot is taken either way


async def test_resident_memory_in_running_and_prometheus() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    config = f"models:\n  m:\n    cmd: {upstream_cmd('--model', 'm')}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    with trio.fail_after(60):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            assert (await client.post("/api/models/load/m")).status_code == 200
            for _ in range(100):  # /metrics has the system gauges once the first sample is in
                text = (await client.get("/metrics")).text
                if "llamaswap_cpu_util_percent" in text:
                    break
                await trio.sleep(0.1)
            (entry,) = (await client.get("/running")).json()["running"]
    assert entry["model"] == "m" and entry["rss"] > 1024 * 1024  # a Python process: MiBs
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("swapd_model_resident_bytes", (("model", "m"),))] > 1024 * 1024
    assert samples[("llamaswap_memory_total_bytes", ())] > 0
    assert ("llamaswap_load_average", (("interval", "1m"),)) in samples
    cores = [k for k in samples if k[0] == "llamaswap_cpu_util_percent"]
    assert len(cores) == os.cpu_count()
