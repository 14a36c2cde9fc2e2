"""The machine's hardware, detected once at start, in llama-swap v250's ``/api/hardware`` shape.

``detect(devices)`` reads the CPU from ``/proc/cpuinfo``, the OS from ``/etc/os-release``
and ``platform``, the environment (container, virtual machine, WSL) from well-known marker
files, and memory and GPUs from ``swapd.observe.devices`` (the same interface memory
admission uses). Facts it cannot find are ``None`` (JSON ``null``), never guesses.
Blocking file reads: the async caller runs it through ``trio.to_thread``.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from swapd.core.memory import RAM
from swapd.observe.devices import DeviceKind, Devices

__all__ = ["HostFiles", "detect"]

_ARCHITECTURES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "armv7",
    "ppc64le": "ppc64le",
    "riscv64": "riscv64",
    "s390x": "s390x",
}
_FAMILIES = {"linux": "linux", "darwin": "macos", "windows": "windows", "freebsd": "freebsd"}


@attrs.frozen
class HostFiles:
    """Where the facts are read from (tests point these at recorded copies)."""

    cpuinfo: Path = Path("/proc/cpuinfo")
    os_release: Path = Path("/etc/os-release")
    root: Path = Path("/")
    machine: str = attrs.field(factory=platform.machine)
    system: str = attrs.field(factory=platform.system)
    kernel: str = attrs.field(factory=platform.release)


def detect(devices: Devices, files: HostFiles | None = None) -> dict[str, Any]:
    """The hardware snapshot (schema version 1)."""
    files = files or HostFiles()
    memory = devices.snapshot()
    ram = memory.get(RAM)
    return {
        "schema_version": 1,
        "captured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "capture": {
            "scope": "inference_host",
            "method": "detected",
            "detector": {"name": "swapd", "version": _version()},
        },
        "architecture": _architecture(files.machine),
        "operating_system": _operating_system(files),
        "environment": _environment(files),
        "cpu": cpu_facts(_read(files.cpuinfo)),
        "memory": {"capacity_bytes": ram.total if ram is not None else None},
        "accelerators": [
            {
                "index": index,
                "kind": "gpu",
                "vendor": "nvidia" if device.kind is DeviceKind.NVIDIA else "amd",
                "model": device.label or None,
                "architecture": None,
                "memory": {"kind": "dedicated", "capacity_bytes": device.total},
                "driver": {"name": None, "version": None},
                "power_limit_watts": None,
            }
            for index, device in enumerate(
                d for d in memory.values() if d.kind is not DeviceKind.RAM
            )
        ],
    }


def cpu_facts(cpuinfo: str) -> dict[str, Any]:
    """Vendor, model, sockets, physical cores and logical threads from ``/proc/cpuinfo``."""
    vendor = model = None
    threads = 0
    sockets: set[str] = set()
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in [*cpuinfo.splitlines(), ""]:
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            threads += 1
        elif key == "vendor_id" and vendor is None:
            vendor = value
        elif key in ("model name", "Model") and model is None:
            model = value
        elif key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not line.strip() and physical:  # end of one processor's block
            sockets.add(physical)
            cores.add((physical, core))
            physical = core = ""
    return {
        "vendor": vendor,
        "model": model,
        "socket_count": len(sockets) or None,
        "physical_core_count": len(cores) or None,
        "logical_thread_count": threads or os.cpu_count(),
    }


def _architecture(machine: str) -> dict[str, Any]:
    name = _ARCHITECTURES.get(machine.lower())
    if name is None:
        return {"name": "other", "raw_name": machine}
    return {"name": name, "raw_name": machine}


def _operating_system(files: HostFiles) -> dict[str, Any]:
    family = _FAMILIES.get(files.system.lower(), "other")
    lines = _read(files.os_release).splitlines()
    release = {
        key: value.strip().strip('"')
        for key, _, value in (line.partition("=") for line in lines)
        if value
    }
    facts: dict[str, Any] = {
        "family": family,
        "name": release.get("NAME"),
        "version": release.get("VERSION_ID"),
        "kernel": files.kernel or None,
    }
    if family == "other":
        facts["raw_family"] = files.system
    return facts


def _environment(files: HostFiles) -> dict[str, Any]:
    if "microsoft" in files.kernel.lower():
        kind = "wsl"
    elif (files.root / ".dockerenv").exists() or (files.root / "run/.containerenv").exists():
        kind = "container"
    elif "hypervisor" in _read(files.cpuinfo).split("flags", 1)[-1].split("\n", 1)[0]:
        kind = "virtual_machine"
    else:
        kind = "native"
    return {"kind": kind, "name": None, "version": None}


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _version() -> str | None:
    try:
        return metadata.version("swapd")
    except metadata.PackageNotFoundError:
        return None
