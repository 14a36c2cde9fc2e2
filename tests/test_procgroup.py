"""procgroup: spawn, pump and stop real process groups.

Rules: real children only (stdlib scripts in tests/children/), real clock, every test under
``trio.fail_after``, and the autouse ``no_survivors`` fixture fails a test that leaves any
process carrying its env tag alive.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import trio
from survivors import TAG, child, no_survivors  # noqa: F401 (no_survivors: autouse)

from swapd.supervise.lifeline import process_alive as alive
from swapd.supervise.procgroup import (
    ExitStatus,
    LineFramer,
    ProcessGroup,
    SpawnError,
    live_group_members,
    open_process_group,
)


class Output:
    """An on_output callback that records lines and lets a test wait for one."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._changed = trio.Event()

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))
        self._changed.set()

    async def wait_for(self, prefix: str) -> str:
        while True:
            for _, line in self.lines:
                if line.startswith(prefix):
                    return line
            self._changed = trio.Event()
            await self._changed.wait()

    async def pid_of(self, prefix: str) -> int:
        return int((await self.wait_for(prefix + " ")).split()[1])


def env() -> dict[str, str]:
    return dict(os.environ)


async def test_stop_kills_leader_and_grandchild() -> None:
    out = Output()
    with trio.fail_after(10):
        async with open_process_group(
            child("wrapper_with_grandchild.py"), env=env(), on_output=out
        ) as group:
            grandchild = await out.pid_of("grandchild")
            assert await out.pid_of("leader") == group.pid
            assert repr(group) == f"<ProcessGroup pid {group.pid} running>"
            assert sorted(live_group_members(group.pid)) == sorted([group.pid, grandchild])
            start = trio.current_time()
            status = await group.stop(grace=5)
            assert trio.current_time() - start < 2  # both obeyed SIGTERM
        assert status == ExitStatus(returncode=-signal.SIGTERM, signal="SIGTERM")
        assert not alive(group.pid)
        assert not alive(grandchild)
        assert live_group_members(group.pid) == []


async def test_sigterm_ignored_escalates_to_sigkill() -> None:
    out = Output()
    with trio.fail_after(10):
        async with open_process_group(
            child("sleeper.py", "--ignore-term"), env=env(), on_output=out
        ) as group:
            await out.wait_for("ready")
            start = trio.current_time()
            status = await group.stop(grace=0.5)
            assert trio.current_time() - start >= 0.5
        assert status.signal == "SIGKILL"
        assert status.describe() == "signal SIGKILL"
        assert repr(group) == f"<ProcessGroup pid {group.pid} exited with signal SIGKILL>"
        assert await group.stop(grace=5) is status  # idempotent


async def test_sweep_kills_grandchild_that_outlives_leader() -> None:
    out = Output()
    with trio.fail_after(10):
        async with open_process_group(
            child("wrapper_with_grandchild.py", "--ignore-term"), env=env(), on_output=out
        ) as group:
            grandchild = await out.pid_of("grandchild")
            status = await group.stop(grace=0.5)
            # The leader died of SIGTERM; the grandchild ignored it and needed the sweep.
            assert status.signal == "SIGTERM"
            assert not alive(grandchild)
            assert group.statistics().survivors == ()


async def test_stop_command_stops_the_child() -> None:
    out = Output()
    with trio.fail_after(10):
        async with open_process_group(
            child("sleeper.py", "--exit-on-term", "7"), env=env(), on_output=out
        ) as group:
            await out.wait_for("ready")
            code = f"import os, signal; print('stopping {group.pid}'); os.kill({group.pid}, 15)"
            start = trio.current_time()
            status = await group.stop(grace=5, stop_argv=[sys.executable, "-c", code])
            assert trio.current_time() - start < 2
        assert status == ExitStatus(returncode=7, signal=None)
        assert ("cmdStop", f"stopping {group.pid}") in out.lines
        assert ("stdout", "got SIGTERM") in out.lines


async def test_failing_stop_command_falls_back_to_sigterm() -> None:
    out = Output()
    with trio.fail_after(10):
        async with open_process_group(
            child("sleeper.py", "--exit-on-term", "7"), env=env(), on_output=out
        ) as group:
            await out.wait_for("ready")
            failing = [sys.executable, "-c", "import sys; print('no'); sys.exit(3)"]
            status = await group.stop(grace=5, stop_argv=failing)
        assert status.returncode == 7
        assert ("cmdStop", "no") in out.lines


@pytest.mark.parametrize(
    ("how", "expected", "described"),
    [
        ("0", ExitStatus(returncode=0, signal=None), "exit code 0"),
        ("3", ExitStatus(returncode=3, signal=None), "exit code 3"),
        ("SIGKILL", ExitStatus(returncode=-9, signal="SIGKILL"), "signal SIGKILL"),
        ("SIGTERM", ExitStatus(returncode=-15, signal="SIGTERM"), "signal SIGTERM"),
    ],
)
async def test_exit_status(how: str, expected: ExitStatus, described: str) -> None:
    with trio.fail_after(10):
        async with open_process_group(
            child("exit_code.py", how), env=env(), on_output=Output()
        ) as group:
            status = await group.wait()
            assert group.returncode == expected.returncode
        assert status == expected
        assert status.describe() == described
        assert repr(group).endswith(f"exited with {described}>")


async def test_output_lines_reach_on_output() -> None:
    out = Output()
    with trio.fail_after(10):
        async with open_process_group(child("print_lines.py"), env=env(), on_output=out) as group:
            await group.wait()
    stdout = [line for stream, line in out.lines if stream == "stdout"]
    assert [line for stream, line in out.lines if stream == "stderr"] == ["err 1"]
    assert stdout[:2] == ["out 1", "out 2"]
    big = stdout[2]
    assert big == "x" * (64 * 1024) + " [truncated]"
    assert stdout[3:] == ["after big", "bad \ufffd utf8", "tail without newline"]
    stats = group.statistics()
    assert (stats.lines, stats.truncated_lines) == (7, 1)


def test_line_framer_splits_across_chunks_and_bounds_long_lines() -> None:
    framer = LineFramer(max_line=8)
    data = b"one\r\ntwo\n" + b"y" * 30 + b"\nthree\nhalf"
    lines = [line for i in range(len(data)) for line in framer.feed(data[i : i + 1])]
    assert lines == ["one", "two", "yyyyyyyy [truncated]", "three"]
    assert framer.flush() == ["half"]
    assert framer.truncated == 1
    assert framer.feed(b"12345678\n") == ["12345678"]  # exactly max_line is not truncated


async def test_missing_binary_raises_spawn_error() -> None:
    with pytest.raises(SpawnError, match="swapd-no-such-command") as caught:
        async with open_process_group(
            ["swapd-no-such-command", "--flag"], env=env(), on_output=Output()
        ):
            pytest.fail("should not start")
    assert caught.value.argv == ("swapd-no-such-command",)
    assert "not found on PATH" in str(caught.value)


async def test_command_is_found_next_to_sys_executable() -> None:
    out = Output()
    bare = {"PATH": "/nonexistent", TAG: os.environ[TAG]}
    with trio.fail_after(10):
        async with open_process_group(
            [Path(sys.executable).name, "-c", "print('hi')"], env=bare, on_output=out
        ) as group:
            assert (await group.wait()).returncode == 0
    assert out.lines == [("stdout", "hi")]


async def test_marker_is_added_to_child_env() -> None:
    out = Output()
    code = "import os; print(os.environ['SWAPD_TEST_MARK'])"
    with trio.fail_after(10):
        async with open_process_group(
            [sys.executable, "-c", code], env=env(), on_output=out, marker="SWAPD_TEST_MARK=a=b"
        ) as group:
            await group.wait()
    assert out.lines == [("stdout", "a=b")]


async def test_cancellation_stops_the_group() -> None:
    out = Output()
    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            async with open_process_group(
                child("wrapper_with_grandchild.py"), env=env(), on_output=out, stop_grace=5
            ) as group:
                grandchild = await out.pid_of("grandchild")
                scope.cancel(reason="test")
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert group.returncode == -signal.SIGTERM
        assert not alive(group.pid)
        assert not alive(grandchild)


async def test_exception_in_body_stops_group_and_propagates_unwrapped() -> None:
    out = Output()
    groups: list[ProcessGroup] = []

    async def fail_inside() -> None:
        async with open_process_group(
            child("sleeper.py"), env=env(), on_output=out, stop_grace=5
        ) as group:
            groups.append(group)
            await out.wait_for("ready")
            _ = 1 / 0

    with trio.fail_after(10), pytest.raises(ZeroDivisionError):
        await fail_inside()
    assert groups[0].returncode == -signal.SIGTERM


async def test_failing_on_output_stops_group_and_propagates() -> None:
    def on_output(stream: str, line: str) -> None:
        raise RuntimeError(f"bad callback: {line}")

    with trio.fail_after(10), pytest.raises(RuntimeError, match="bad callback: ready"):
        async with open_process_group(
            child("sleeper.py"), env=env(), on_output=on_output, stop_grace=5
        ):
            await trio.sleep_forever()
