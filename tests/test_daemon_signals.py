"""The daemon as users run it: a real ``swapd`` process, stopped with signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from swapd.testing.server import free_port_base, upstream_cmd


def start_swapd(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    base = free_port_base()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"startPort: {base + 1}\nmodels:\n"
        f"  m:\n    cmd: {upstream_cmd('--model', 'm', *flags)}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "swapd", "--config", str(config), "--listen", f"127.0.0.1:{base}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{base}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("swapd did not come up")


def model_pid(url: str) -> int:
    httpx.post(f"{url}/api/models/load/m", timeout=20)
    return int(httpx.get(f"{url}/running").json()["running"][0]["pid"])


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper counts as gone
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_sigterm_stops_swapd_and_its_models(tmp_path: Path) -> None:
    proc, url = start_swapd(tmp_path)
    pid = model_pid(url)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert gone(pid)
    assert b"received SIGTERM, shutting down" in output


def test_a_second_signal_kills_a_model_that_ignores_sigterm(tmp_path: Path) -> None:
    proc, url = start_swapd(tmp_path, "--ignore-sigterm")  # the daemon's stop grace is 10 s
    pid = model_pid(url)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    assert proc.poll() is None  # still waiting for the stubborn model
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert time.monotonic() - started < 8  # far less than the 10 s grace
    assert gone(pid)
    assert b"again, killing every model now" in output
