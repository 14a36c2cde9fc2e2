"""``kill -9 swapd`` leaves no model process behind: the real command line, real models.

One model is started through a wrapper shell script that backgrounds a grandchild before
it execs the server, so the group holds a process swapd never spawned itself. After
SIGKILL the lifeline guardian stops every registered group. A process that left its group
(``setsid``) escapes that; the next swapd's startup sweep finds it by its environment
marker (under systemd, the unit's cgroup is the backstop: see the README).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from swapd.supervise.lifeline import MARKER_NAME, marked_processes
from swapd.supervise.lifeline import process_alive as alive
from swapd.testing.process import run_swapd
from swapd.testing.server import free_port_base, upstream_cmd

WRAPPER = """\
#!/bin/sh
# a model launcher that leaves a helper running in the background, as real ones do
{background} &
exec "$@"
"""
IN_GROUP = f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(1000)'"
ESCAPING = f"{shlex.quote(sys.executable)} -c 'import os, time; os.setsid(); time.sleep(1000)'"


def children_of(swapd_pid: int) -> dict[int, str]:
    """Live processes carrying the marker of the swapd with this pid: its model processes."""
    prefix = f"{swapd_pid}:"
    return {
        pid: value
        for pid, value in marked_processes(MARKER_NAME).items()
        if value.startswith(prefix) and alive(pid)
    }


def lifeline_of(swapd_pid: int) -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_bytes()
                ppid = int(stat[stat.rfind(b")") + 2 :].split()[1])
                if ppid == swapd_pid and b"lifeline.py" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    raise AssertionError("no lifeline guardian found")


def wait_until(condition: object, timeout: float) -> bool:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def write_config(tmp_path: Path, background: str) -> tuple[Path, int]:
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(WRAPPER.format(background=background))
    base = free_port_base()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"startPort: {base + 1}\n"
        "groups:\n  both: {swap: false, members: [wrapped, plain]}\n"
        "models:\n"
        f"  wrapped:\n    cmd: sh {wrapper} {upstream_cmd('--model', 'wrapped')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
        f"  plain:\n    cmd: {upstream_cmd('--model', 'plain')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    return config, base


@contextlib.contextmanager
def swapd_running(config: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    with run_swapd(config, port=port) as swapd:
        yield swapd.proc


def load_both(port: int) -> list[int]:
    url = f"http://127.0.0.1:{port}"
    for model in ("wrapped", "plain"):
        assert httpx.post(f"{url}/api/models/load/{model}", timeout=30).status_code == 200
    running = httpx.get(f"{url}/running").json()["running"]
    assert sorted(r["model"] for r in running) == ["plain", "wrapped"]
    return [int(r["pid"]) for r in running]


@contextlib.contextmanager
def killed_afterwards(pids: set[int]) -> Iterator[set[int]]:
    """Whatever the test asserts, no process it found outlives it."""
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_sigkill_of_swapd_takes_every_model_process_and_grandchild_down(tmp_path: Path) -> None:
    config, port = write_config(tmp_path, IN_GROUP)
    with swapd_running(config, port) as swapd, killed_afterwards(set()) as found:
        leaders = load_both(port)
        assert wait_until(lambda: len(children_of(swapd.pid)) == 3, 10)
        processes = children_of(swapd.pid)  # two servers and the wrapper's grandchild
        found.update(processes)
        guardian = lifeline_of(swapd.pid)
        assert set(leaders) < set(processes)
        (grandchild,) = set(processes) - set(leaders)
        assert b"time.sleep(1000)" in Path(f"/proc/{grandchild}/cmdline").read_bytes()

        swapd.kill()
        assert swapd.wait(timeout=10) == -signal.SIGKILL
        assert wait_until(lambda: not any(alive(pid) for pid in processes), 15), [
            pid for pid in processes if alive(pid)
        ]
        assert wait_until(lambda: not alive(guardian), 10)  # the guardian's work is done


def test_a_grandchild_that_left_its_group_is_swept_by_the_next_start(tmp_path: Path) -> None:
    config, port = write_config(tmp_path, ESCAPING)
    with killed_afterwards(set()) as found:
        with swapd_running(config, port) as first:
            leaders = load_both(port)
            assert wait_until(lambda: len(children_of(first.pid)) == 3, 10)
            found.update(children_of(first.pid))
            (escaped,) = found - set(leaders)
            first.kill()
        assert wait_until(lambda: not any(alive(pid) for pid in leaders), 15)
        # The lifeline cannot reach it (it is in a session of its own) ...
        assert alive(escaped)
        # ... but it carries the dead instance's marker, and the next start kills it.
        with swapd_running(config, port):
            assert wait_until(lambda: not alive(escaped), 10)
