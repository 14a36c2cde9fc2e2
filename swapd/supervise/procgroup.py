"""Spawn one child in its own process group, pump its output, and stop the whole group.

This module owns the lifetime of a model server's processes: the leader swapd spawns and
everything the leader forks. ``open_process_group`` is the only way in:

>>> async with open_process_group(argv, env=env, on_output=log) as group:  # doctest: +SKIP
...     status = await group.stop(grace=10)
>>> status.describe()  # doctest: +SKIP
'signal SIGTERM'

Rules, and why:

- The child starts in a **new session** (``start_new_session=True``), so its pgid is its pid
  and signals go to the **group** (``os.killpg``), never to the pid alone: model servers fork
  workers (vLLM) or are wrapped in shells, and a signal to the leader alone strands them.
- **No preexec_fn, no PR_SET_PDEATHSIG.** trio forks from a worker thread and the death signal
  follows that thread, which trio retires after 10 s idle: the child would die 10 s after
  spawn. Orphan protection is the lifeline guardian (``lifeline.py``) plus the env marker.
- **Never SIGINT.** swapd started with ``&`` from a shell inherits SIGINT as ignored, and so
  do its children. Stop is SIGTERM (or the configured stop command), then SIGKILL.
- **A stop ends only when the leader is reaped and no live member of the group remains.**
  ``trio.run_process``'s ``deliver_cancel`` stops running once the leader exits, so we do our
  own escalation and then **sweep**: scan ``/proc`` for non-zombie members (``killpg(pgid, 0)``
  also succeeds for zombies) and SIGKILL the group until none is left, bounded by
  ``lifeline.SWEEP_LIMIT``.
- **Teardown is shielded and bounded**: leaving the context manager for any reason (body done,
  exception, cancellation) stops the group inside ``CancelScope(shield=True)``.
- ``on_output(stream, line)`` runs synchronously in the pump task, once per line, and must not
  block. An exception from it stops the group and propagates out of the context manager.

Limits: a member that leaves the group (``setsid``) escapes the sweep; see ``lifeline.py``.
Spawn errors raise :class:`SpawnError` (local to the supervise layer; the runner turns it into
``swapd.errors.StartFailed`` with the model name and ``phase="spawn"``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from swapd.supervise.lifeline import SWEEP_LIMIT, Lifeline, live_group_members, signal_group

__all__ = [
    "ExitStatus",
    "LineFramer",
    "ProcessGroup",
    "ProcessGroupStatistics",
    "SpawnError",
    "live_group_members",
    "open_process_group",
    "wait_group_gone",
]

logger = logging.getLogger(__name__)

OnOutput = Callable[[str, str], None]
MAX_LINE_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
POLL_INTERVAL = 0.02
PUMP_DRAIN = 1.0  # after a stop, how long escaped holders of our pipes may delay the pumps
STOP_COMMAND_GRACE = 0.5  # the stop command's own group gets this much after the deadline


class SpawnError(Exception):
    """The command could not be started (not found, not executable, bad cwd, ...)."""

    def __init__(self, argv: Sequence[str], reason: str) -> None:
        self.argv = tuple(argv)
        self.reason = reason
        super().__init__(f"cannot start {argv[0]!r}: {reason}")


@attrs.frozen(kw_only=True)
class ExitStatus:
    """How a leader ended: ``returncode`` as trio reports it (negative: killed by a signal)."""

    returncode: int
    signal: str | None  # "SIGKILL", or None for a normal exit

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        if returncode >= 0:
            return cls(returncode=returncode, signal=None)
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return cls(returncode=returncode, signal=name)

    def describe(self) -> str:
        """``"exit code 1"`` or ``"signal SIGKILL"``."""
        return f"signal {self.signal}" if self.signal else f"exit code {self.returncode}"


@attrs.frozen(kw_only=True)
class ProcessGroupStatistics:
    pid: int
    status: ExitStatus | None  # None while the leader runs
    lines: int
    truncated_lines: int
    survivors: tuple[int, ...]  # members left alive after the sweep gave up (D state)


class LineFramer:
    """Bytes in, complete decoded lines out, holding at most ``max_line`` bytes + one chunk.

    A line longer than ``max_line`` is cut there, marked ``" [truncated]"``, and the rest of
    it is dropped until the next newline. Trailing ``\\r`` is stripped. Pure; no I/O.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._discarding = False
        self.truncated = 0

    def feed(self, data: bytes | bytearray) -> list[str]:
        lines: list[str] = []
        start = 0
        while (end := data.find(b"\n", start)) >= 0:
            self._add(data[start:end], complete=True, out=lines)
            start = end + 1
        self._add(data[start:], complete=False, out=lines)
        return lines

    def flush(self) -> list[str]:
        """At EOF: the last line if it had no newline."""
        lines: list[str] = []
        if self._buf:
            self._add(b"", complete=True, out=lines)
        return lines

    def _add(self, piece: bytes | bytearray, *, complete: bool, out: list[str]) -> None:
        if self._discarding:
            self._discarding = not complete
            return
        self._buf += piece
        if len(self._buf) > self._max:
            out.append(self._decode(self._buf[: self._max]) + " [truncated]")
            self.truncated += 1
            self._buf.clear()
            self._discarding = not complete
        elif complete:
            out.append(self._decode(self._buf))
            self._buf.clear()

    @staticmethod
    def _decode(raw: bytes | bytearray) -> str:
        return raw.decode("utf-8", errors="replace").removesuffix("\r")


async def wait_group_gone(pgid: int) -> None:
    """Return once group ``pgid`` has no live (non-zombie) member. The caller sets the deadline."""
    while live_group_members(pgid):  # noqa: ASYNC110 - /proc has no event to wait on
        await trio.sleep(POLL_INTERVAL)


def _resolve(command: str, env: Mapping[str, str]) -> str:
    """The executable for ``command``: a path as given, else PATH, else next to sys.executable.

    The last place finds console scripts (``swapd-demo-upstream``) of an un-activated venv.
    """
    if os.sep in command:
        return command
    found = shutil.which(command, path=os.pathsep.join(os.get_exec_path(dict(env))))
    found = found or shutil.which(command, path=os.path.dirname(sys.executable))
    if found is None:
        raise SpawnError([command], f"not found on PATH or in {os.path.dirname(sys.executable)}")
    return found


class ProcessGroup:
    """A running child and its process group. Create it with :func:`open_process_group`."""

    def __init__(
        self,
        process: trio.Process,
        *,
        env: dict[str, str],
        on_output: OnOutput,
        lifeline: Lifeline | None,
        max_line: int,
    ) -> None:
        self._process = process
        self._env = env
        self._on_output = on_output
        self._lifeline = lifeline
        self._max_line = max_line
        self._stop_lock = trio.Lock()
        self._stopped: ExitStatus | None = None
        self._survivors: tuple[int, ...] = ()
        self._lines = self._truncated = 0
        self._pumps_done = trio.Event()
        self._pumps_running = 0

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the group's pgid."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The leader's return code, None while it runs (members may outlive it)."""
        return self._process.returncode

    async def wait(self) -> ExitStatus:
        """Wait for the leader to exit (not for the group: see :func:`wait_group_gone`)."""
        return ExitStatus.from_returncode(await self._process.wait())

    def kill(self) -> None:
        """SIGKILL the whole group now. Does nothing once a stop has completed."""
        if self._stopped is None:
            signal_group(self.pid, signal.SIGKILL)

    async def stop(self, *, grace: float, stop_argv: Sequence[str] | None = None) -> ExitStatus:
        """Stop the group; return the leader's exit status. Idempotent; concurrent calls wait.

        1. Politely: run ``stop_argv`` (output to ``on_output`` as ``"cmdStop"``) if given and
           it succeeds within ``grace``, else SIGTERM the group.
        2. Wait until ``grace`` has passed for the leader to exit and the group to empty.
        3. SIGKILL the group, reap the leader, and sweep the group empty (bounded).

        Not shielded: a cancelled stop is redone, shielded, when the context manager exits.
        """
        async with self._stop_lock:
            if self._stopped is not None:
                return self._stopped
            deadline = trio.current_time() + grace
            if self._process.returncode is None or live_group_members(self.pid):
                if stop_argv is None or not await self._run_stop_command(stop_argv, deadline):
                    signal_group(self.pid, signal.SIGTERM)
                with trio.move_on_at(deadline):
                    await self._process.wait()
                    await wait_group_gone(self.pid)
            if self._process.returncode is None:
                # SIGKILL before reaping: an unreaped leader keeps the pgid from being recycled.
                signal_group(self.pid, signal.SIGKILL)
            status = ExitStatus.from_returncode(await self._process.wait())
            await self._sweep()
            self._stopped = status
            return status

    async def _run_stop_command(self, argv: Sequence[str], deadline: float) -> bool:
        """Run the configured stop command until ``deadline``; True if it exited with 0."""
        try:
            async with open_process_group(
                argv,
                env=self._env,
                on_output=lambda _, line: self._on_output("cmdStop", line),
                lifeline=self._lifeline,
                stop_grace=STOP_COMMAND_GRACE,
            ) as command:
                with trio.move_on_at(deadline):
                    status = await command.wait()
                    if status.returncode == 0:
                        return True
                    logger.warning("stop command for pid %d: %s", self.pid, status.describe())
                    return False
                logger.warning("stop command for pid %d did not finish in time", self.pid)
                return False
        except SpawnError as exc:
            logger.warning("stop command for pid %d: %s; sending SIGTERM", self.pid, exc)
            return False

    async def _sweep(self) -> None:
        """SIGKILL the group until no live member remains (members that outlived the leader)."""
        with trio.move_on_after(SWEEP_LIMIT):
            while live_group_members(self.pid):
                signal_group(self.pid, signal.SIGKILL)
                await trio.sleep(POLL_INTERVAL)
        self._survivors = tuple(live_group_members(self.pid))
        if self._survivors:
            # Keep it registered: the lifeline retries when swapd exits.
            logger.error("group %d: %s survive SIGKILL", self.pid, self._survivors)
        elif self._lifeline is not None:
            self._lifeline.release(self.pid)

    async def _pump(self, stream: trio.abc.ReceiveStream, name: str) -> None:
        framer = LineFramer(self._max_line)
        try:
            while chunk := await stream.receive_some(CHUNK_BYTES):
                self._emit(name, framer.feed(chunk))
            self._emit(name, framer.flush())
        finally:
            self._truncated += framer.truncated
            self._pumps_running -= 1
            if not self._pumps_running:
                self._pumps_done.set()

    def _emit(self, name: str, lines: list[str]) -> None:
        for line in lines:
            self._lines += 1
            self._on_output(name, line)

    def statistics(self) -> ProcessGroupStatistics:
        return ProcessGroupStatistics(
            pid=self.pid,
            status=self._status(),
            lines=self._lines,
            truncated_lines=self._truncated,
            survivors=self._survivors,
        )

    def _status(self) -> ExitStatus | None:
        returncode = self._process.returncode
        return None if returncode is None else ExitStatus.from_returncode(returncode)

    def __repr__(self) -> str:
        status = self._status()
        state = "running" if status is None else f"exited with {status.describe()}"
        return f"<ProcessGroup pid {self.pid} {state}>"


@asynccontextmanager
async def open_process_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    on_output: OnOutput,
    cwd: str | os.PathLike[str] | None = None,
    lifeline: Lifeline | None = None,
    marker: str | None = None,
    stop_grace: float = 10.0,
    max_line: int = MAX_LINE_BYTES,
) -> AsyncIterator[ProcessGroup]:
    """Start ``argv`` in a new process group; stop the group when the block exits.

    - ``env`` is the child's **whole** environment (not merged with ``os.environ``).
    - ``on_output(stream, line)`` gets each line of ``"stdout"`` and ``"stderr"`` (and of
      ``"cmdStop"`` during a stop). Called synchronously from the pump tasks; must not block.
    - ``lifeline``: the pgid is adopted right after spawn and released once the group is gone.
    - ``marker``: ``"NAME=VALUE"`` added to the child's env, for ``lifeline.sweep_orphans``.
    - ``stop_grace``: SIGTERM-to-SIGKILL grace of the shielded stop on exit.

    Raises :class:`SpawnError` if the command cannot be started. Entering is a checkpoint
    (the fork runs in a worker thread); exiting waits for the stop, shielded.
    """
    if not argv:
        raise ValueError("empty argv")
    child_env = dict(env)
    if marker is not None:
        name, sep, value = marker.partition("=")
        if not (name and sep):
            raise ValueError(f"marker must be NAME=VALUE, got {marker!r}")
        child_env[name] = value
    executable = _resolve(argv[0], child_env)
    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            executable=executable,
            env=child_env,
            cwd=cwd,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise SpawnError(argv, str(exc)) from exc
    # No checkpoint between the spawn and this try: the child cannot escape the teardown.
    group = ProcessGroup(
        process, env=child_env, on_output=on_output, lifeline=lifeline, max_line=max_line
    )
    try:
        async with trio.open_nursery() as nursery:
            for stream, name in ((process.stdout, "stdout"), (process.stderr, "stderr")):
                assert stream is not None
                group._pumps_running += 1
                nursery.start_soon(group._pump, stream, name)
            try:
                if lifeline is not None:
                    lifeline.adopt(group.pid)
                yield group
            finally:
                with trio.CancelScope(shield=True):
                    await group.stop(grace=stop_grace)
                    # The group is gone, so the pipes are at EOF unless an escaped process
                    # (setsid) still holds them: let the pumps deliver the last lines, briefly.
                    with trio.move_on_after(PUMP_DRAIN):
                        await group._pumps_done.wait()
                if not group._pumps_done.is_set():
                    nursery.cancel_scope.cancel(reason="process group stopped, pipes still open")
    except BaseExceptionGroup as exc_group:
        # The nursery wraps whatever crosses it, including the body's own exception; hand
        # the caller that exception itself when it is the only one.
        if len(exc_group.exceptions) == 1:
            only = exc_group.exceptions[0]
            raise only from only.__cause__
        raise
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:  # only if the stop above was never reached
                group.kill()
                await process.wait()
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()
