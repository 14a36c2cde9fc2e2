"""lifeline: the guardian kills registered groups when swapd dies; the marker sweep.

Rules: real processes, real clock, every test under ``trio.fail_after``; the autouse
``no_survivors`` fixture fails a test that leaves any process carrying its env tag alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import trio
from survivors import child, no_survivors  # noqa: F401 (no_survivors: autouse)

from swapd.supervise.lifeline import (
    instance_is_gone,
    new_instance_marker,
    open_lifeline,
    process_start_time,
    sweep_orphans,
)
from swapd.supervise.lifeline import process_alive as alive
from swapd.supervise.procgroup import LineFramer, open_process_group


async def wait_gone(*pids: int) -> None:
    while any(alive(pid) for pid in pids):  # noqa: ASYNC110 - /proc has no event to wait on
        await trio.sleep(0.02)


async def test_guardian_kills_groups_when_swapd_is_sigkilled() -> None:
    with trio.fail_after(20):
        parent = await trio.lowlevel.open_process(
            child("lifeline_parent.py"), stdout=subprocess.PIPE
        )
        assert parent.stdout is not None
        try:
            pids: dict[str, int] = {}
            framer = LineFramer()
            while "ready" not in pids:
                chunk = await parent.stdout.receive_some()
                assert chunk, f"the parent exited early: {parent.returncode}"
                for line in framer.feed(chunk):
                    name, _, pid = line.partition(" ")
                    pids[name] = int(pid or 0)
            assert all(alive(pids[name]) for name in ("lifeline", "leader", "grandchild"))
            os.kill(parent.pid, signal.SIGKILL)
            assert await parent.wait() == -signal.SIGKILL
            start = trio.current_time()
            await wait_gone(pids["leader"], pids["grandchild"])
            assert trio.current_time() - start < 3
            await wait_gone(pids["lifeline"])
        finally:
            with trio.CancelScope(shield=True):
                if parent.returncode is None:
                    parent.kill()
                    await parent.wait()
                await parent.stdout.aclose()


async def test_normal_exit_ends_the_guardian() -> None:
    with trio.fail_after(10):
        async with open_lifeline() as lifeline:
            assert alive(lifeline.pid)
            lifeline.adopt(12345)
            assert lifeline.groups == {12345}
            lifeline.release(12345)
            lifeline.release(12345)  # releasing twice is harmless
            assert lifeline.groups == frozenset()
            assert repr(lifeline) == f"<Lifeline pid {lifeline.pid} holding 0 groups>"
        assert not alive(lifeline.pid)
        assert repr(lifeline) == f"<Lifeline pid {lifeline.pid} closed>"


async def test_guardian_ignores_sigint_sigterm_sighup() -> None:
    with trio.fail_after(10):
        async with open_lifeline() as lifeline:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                os.kill(lifeline.pid, sig)
            await trio.sleep(0.2)
            assert alive(lifeline.pid)


async def test_groups_still_registered_at_close_are_stopped() -> None:
    """Closing the pipe is what swapd's death looks like: TERM, grace, then KILL."""
    with trio.fail_after(10):
        polite = await trio.lowlevel.open_process(
            child("sleeper.py", "--exit-on-term", "5"), start_new_session=True
        )
        stubborn = await trio.lowlevel.open_process(
            child("sleeper.py", "--ignore-term"), start_new_session=True
        )
        try:
            await trio.sleep(0.5)  # let them install their SIGTERM handlers
            start = trio.current_time()
            async with open_lifeline(grace=0.3) as lifeline:
                lifeline.adopt(polite.pid)
                lifeline.adopt(stubborn.pid)
            assert await polite.wait() == 5
            assert await stubborn.wait() == -signal.SIGKILL
            assert trio.current_time() - start >= 0.3
        finally:
            with trio.CancelScope(shield=True):
                for process in (polite, stubborn):
                    if process.returncode is None:
                        process.kill()
                        await process.wait()


def test_instance_marker_format() -> None:
    marker = new_instance_marker()
    name, _, value = marker.partition("=")
    assert name == "SWAPD_INSTANCE"
    assert re.fullmatch(r"(\d+):(\d+):[0-9a-f]{16}", value)
    assert value.split(":")[:2] == [str(os.getpid()), str(process_start_time(os.getpid()))]
    assert not instance_is_gone(value)
    assert instance_is_gone(f"{os.getpid()}:1:x")  # pid recycled: start time differs
    assert not instance_is_gone("garbage")  # not ours to judge


def setter(event: trio.Event) -> Callable[[str, str], None]:
    return lambda _stream, _line: event.set()


def nonexistent_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


async def test_sweep_orphans_kills_only_dead_instances() -> None:
    name = f"SWAPD_TEST_SWEEP_{secrets.token_hex(4)}"
    no_such_pid = nonexistent_pid()
    markers = {
        "dead": f"{name}={no_such_pid}:1:aa",
        "recycled": f"{name}={os.getpid()}:1:bb",
        "live": new_instance_marker(name),
        "malformed": f"{name}=garbage",
    }
    with trio.fail_after(10):
        async with contextlib.AsyncExitStack() as stack:
            groups = {}
            for key, marker in markers.items():
                ready = trio.Event()
                groups[key] = await stack.enter_async_context(
                    open_process_group(
                        child("sleeper.py"),
                        env=dict(os.environ),
                        on_output=setter(ready),
                        marker=marker,
                        stop_grace=5,
                    )
                )
                await ready.wait()  # exec'd: /proc/<pid>/environ now shows the marker
            killed = sweep_orphans(name)
            assert sorted(orphan.pid for orphan in killed) == sorted(
                [groups["dead"].pid, groups["recycled"].pid]
            )
            assert all(orphan.pgid == orphan.pid for orphan in killed)
            assert (await groups["dead"].wait()).signal == "SIGKILL"
            assert (await groups["recycled"].wait()).signal == "SIGKILL"
            assert groups["live"].returncode is None
            assert groups["malformed"].returncode is None
            assert sweep_orphans(name) == []
