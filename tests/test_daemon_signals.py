"""The daemon as users run it: a real ``swapd`` process, stopped with signals."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from swapd.supervise.lifeline import process_alive
from swapd.testing.process import run_swapd
from swapd.testing.server import free_port_base, upstream_cmd


def write_config(tmp_path: Path, *flags: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"startPort: {free_port_base()}\nmodels:\n"
        f"  m:\n    cmd: {upstream_cmd('--model', 'm', *flags)}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    return config


def model_pid(url: str) -> int:
    httpx.post(f"{url}/api/models/load/m", timeout=20)
    return int(httpx.get(f"{url}/running").json()["running"][0]["pid"])


def gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    return not process_alive(pid)


def test_sigterm_stops_swapd_and_its_models(tmp_path: Path) -> None:
    with run_swapd(write_config(tmp_path)) as swapd:
        pid = model_pid(swapd.url)
        swapd.proc.send_signal(signal.SIGTERM)
        swapd.proc.wait(timeout=30)
    assert swapd.proc.returncode == 0
    assert gone(pid)
    assert b"received SIGTERM, shutting down" in swapd.output


def test_a_second_signal_kills_a_model_that_ignores_sigterm(tmp_path: Path) -> None:
    # the daemon's stop grace is 10 s
    with run_swapd(write_config(tmp_path, "--ignore-sigterm")) as swapd:
        pid = model_pid(swapd.url)
        started = time.monotonic()
        swapd.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert swapd.proc.poll() is None  # still waiting for the stubborn model
        swapd.proc.send_signal(signal.SIGINT)
        swapd.proc.wait(timeout=30)
    assert time.monotonic() - started < 8  # far less than the 10 s grace
    assert gone(pid)
    assert b"again, killing every model now" in swapd.output
