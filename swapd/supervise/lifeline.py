"""The lifeline guardian: the process groups of a dead swapd die with it.

swapd starts every model server in its own session (so its pgid equals its pid) and tells a
small guardian process about it. If swapd dies, even by SIGKILL, the guardian's stdin reaches
end-of-file and the guardian kills every group it still holds. This module is both:

- **the guardian program**, run as ``python -I -S /abs/path/lifeline.py [--grace S]``. It reads
  ``add <pgid>`` / ``del <pgid>`` lines on stdin. On EOF it sends SIGTERM to every registered
  group, polls ``/proc`` up to ``grace`` seconds (default 2) for live members, SIGKILLs the
  groups that still have any, and exits. It ignores SIGINT, SIGTERM and SIGHUP: only EOF ends
  it, so a Ctrl-C or a stray signal cannot kill the guard before it has done its job.
- **the trio-side client**: ``async with open_lifeline() as lifeline`` starts the guardian in a
  new session, and ``lifeline.adopt(pgid)`` / ``lifeline.release(pgid)`` feed it.
- **the marker sweep** that covers what the guardian cannot: ``new_instance_marker()`` builds
  an environment entry ``SWAPD_INSTANCE=<pid>:<starttime>:<random>`` for swapd's children, and
  ``sweep_orphans()`` (run at startup) SIGKILLs the groups of processes whose marker names a
  swapd instance that is no longer alive. ``<starttime>`` is field 22 of ``/proc/<pid>/stat``,
  so a recycled pid does not look alive.
- the stdlib ``/proc`` and ``killpg`` primitives that ``procgroup.py`` reuses.

Rules:

- **Module level imports the standard library only.** The guardian starts as a script and must
  start fast; the client imports trio inside its functions.
- The guardian never signals pgid 0, 1 or its own group, and never sends SIGINT.
- Zombies hold their pid and pgid but no GPU memory: group scans skip state ``Z``.

Limits:

- A process that leaves the group (``setsid``/``setpgid``, e.g. a daemonizing grandchild)
  escapes both the guardian and ``procgroup``'s sweep. It still carries the marker in its
  environment (unless it rewrote it, as ``setproctitle`` may), so the next startup sweep
  finds it.
- If swapd dies between spawning a child and ``adopt()``, the guardian never hears of the
  group: the marker sweep at the next start closes that gap.
- A group that died while still registered could, in theory, be replaced by a new session
  whose leader got the same pid before the guardian runs; pids are recycled slowly enough that
  we accept this.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import trio

__all__ = [
    "Lifeline",
    "LifelineError",
    "MARKER_NAME",
    "Orphan",
    "instance_is_gone",
    "live_group_members",
    "live_groups",
    "main",
    "marked_processes",
    "new_instance_marker",
    "open_lifeline",
    "process_alive",
    "process_start_time",
    "signal_group",
    "sweep_orphans",
]

logger = logging.getLogger(__name__)

MARKER_NAME = "SWAPD_INSTANCE"
PROGRAM = os.path.abspath(__file__)
POLL_INTERVAL = 0.05
SWEEP_LIMIT = 2.0  # seconds of repeated SIGKILL before giving up on a group (D-state members)
STARTUP_LIMIT = 10.0  # seconds for the guardian to report ready


# --- /proc and signals (stdlib only; shared with procgroup.py) ----------------------------


def _proc_pids() -> Iterator[int]:
    with os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                yield int(entry.name)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (index 0 is the state), or None if pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ")".
    return raw[raw.rfind(b")") + 2 :].decode("ascii", "replace").split()


def process_alive(pid: int) -> bool:
    """True unless ``pid`` is gone or only its zombie is left."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _live_processes() -> Iterator[tuple[int, int]]:
    """(pid, pgrp) of every process that is not a zombie."""
    for pid in _proc_pids():
        fields = _stat_fields(pid)
        if fields and fields[0] != "Z":
            yield pid, int(fields[2])


def live_group_members(pgid: int) -> list[int]:
    """Pids of the non-zombie processes in group ``pgid``.

    ``os.killpg(pgid, 0)`` is no substitute: it succeeds while only unreaped zombies remain.
    """
    return [pid for pid, pgrp in _live_processes() if pgrp == pgid]


def live_groups() -> set[int]:
    """The pgids that have at least one non-zombie member."""
    return {pgrp for _, pgrp in _live_processes()}


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (stat field 22), None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def signal_group(pgid: int, sig: signal.Signals) -> bool:
    """``os.killpg(pgid, sig)``; False if the group is gone or not ours to signal.

    Refuses pgid 0 and 1 and the caller's own group: a bug there would signal swapd itself or
    every process we may signal.
    """
    if pgid <= 1 or pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}")
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --- instance markers and the startup sweep -----------------------------------------------


def new_instance_marker(name: str = MARKER_NAME) -> str:
    """``NAME=<pid>:<starttime>:<random hex>`` for the current process, to put in children's env.

    >>> new_instance_marker()  # doctest: +SKIP
    'SWAPD_INSTANCE=4121:8810342:5f0c9a1e2b3d4c5e'
    """
    return f"{name}={os.getpid()}:{process_start_time(os.getpid())}:{secrets.token_hex(8)}"


def instance_is_gone(value: str) -> bool:
    """True if the swapd instance that ``value`` (``pid:starttime:random``) names is dead.

    A malformed value is not ours to judge and counts as alive.
    """
    try:
        pid_text, start_text, _ = value.split(":", 2)
        pid, start = int(pid_text), int(start_text)
    except ValueError:
        return False
    # A different start time means the pid was recycled: the instance is gone.
    return process_start_time(pid) != start


def marked_processes(name: str) -> dict[int, str]:
    """{pid: value} of our own uid's live processes whose environment has ``name``.

    Processes whose environ we cannot read (other users, races with exit) are skipped. Only
    the environment a process started with is visible, so a child that rewrote it is missed.
    """
    uid, key = os.getuid(), name.encode() + b"="
    found: dict[int, str] = {}
    for pid in _proc_pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        # A zombie's environ reads as empty, so zombies never match.
        for entry in environ.split(b"\0"):
            if entry.startswith(key):
                found[pid] = entry[len(key) :].decode("utf-8", "replace")
                break
    return found


class Orphan(NamedTuple):
    pid: int
    pgid: int
    marker: str


def sweep_orphans(
    marker_name: str = MARKER_NAME, *, is_stale: Callable[[str], bool] = instance_is_gone
) -> list[Orphan]:
    """SIGKILL the process groups of leftovers from dead swapd instances; return what was found.

    Run once at startup, before spawning anything. A process whose marker passes
    ``is_stale`` has its whole group killed (or only itself, if it somehow shares our group).
    Synchronous and bounded by one scan of ``/proc``; it does not wait for the kills to land.
    """
    me, my_group = os.getpid(), os.getpgrp()
    killed: list[Orphan] = []
    for pid, value in marked_processes(marker_name).items():
        if pid == me or not is_stale(value):
            continue
        fields = _stat_fields(pid)
        if fields is None:
            continue
        pgid = int(fields[2])
        if pgid <= 1 or pgid == my_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        else:
            signal_group(pgid, signal.SIGKILL)
        logger.warning("killed orphan pid %d (group %d) of dead instance %s", pid, pgid, value)
        killed.append(Orphan(pid, pgid, value))
    return killed


# --- the guardian program -----------------------------------------------------------------


def _say(message: str) -> None:
    # stderr is inherited from swapd, so this lands in swapd's log (journal, terminal).
    sys.stderr.write(f"swapd lifeline {os.getpid()}: {message}\n")
    sys.stderr.flush()


def _stop_groups(groups: set[int], grace: float) -> None:
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (alive := groups & live_groups()) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    # Repeat the SIGKILL: a member may fork between our scan and the signal.
    deadline = time.monotonic() + SWEEP_LIMIT
    while alive := groups & live_groups():
        for pgid in alive:
            signal_group(pgid, signal.SIGKILL)
        if time.monotonic() >= deadline:
            _say(f"groups {sorted(alive)} survive SIGKILL")
            return
        time.sleep(POLL_INTERVAL)


def main(argv: list[str] | None = None) -> int:
    """The guardian: hold pgids from stdin; on EOF, stop them all."""
    parser = argparse.ArgumentParser(prog="lifeline.py")
    parser.add_argument("--grace", type=float, default=2.0)
    args = parser.parse_args(argv)
    # swapd may have been started with SIGINT ignored or be hit by a group-wide signal; the
    # guardian outlives all of that on purpose.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    groups: set[int] = set()
    for raw in sys.stdin.buffer:
        match raw.split():
            # signal_group refuses 0, 1 and our own group: never let a bad line crash the guard.
            case [b"add", pgid] if pgid.isdigit() and int(pgid) not in (0, 1, os.getpgrp()):
                groups.add(int(pgid))
            case [b"del", pgid] if pgid.isdigit():
                groups.discard(int(pgid))
            case _:
                _say(f"ignoring {raw!r}")
    if groups:
        _say(f"swapd is gone, stopping groups {sorted(groups)}")
        _stop_groups(groups, args.grace)
    return 0


# --- the trio-side client -----------------------------------------------------------------


class LifelineError(Exception):
    """The guardian did not start, or is gone or stuck, so children are unprotected."""


class Lifeline:
    """swapd's end of the pipe to the guardian. Create it with :func:`open_lifeline`.

    ``adopt`` and ``release`` are synchronous and never block: each writes one line of fewer
    than ``PIPE_BUF`` bytes to a non-blocking pipe, which the kernel writes whole or not at all.
    """

    def __init__(self, process: trio.Process, fd: int) -> None:
        self._process = process
        self._fd: int | None = fd
        self._groups: set[int] = set()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def groups(self) -> frozenset[int]:
        """The pgids currently registered."""
        return frozenset(self._groups)

    def adopt(self, pgid: int) -> None:
        """Register ``pgid``: the guardian kills it if swapd dies. Raises LifelineError."""
        self._send(f"add {pgid}\n")
        self._groups.add(pgid)

    def release(self, pgid: int) -> None:
        """Forget ``pgid`` (its group is gone). Never raises: the group is gone either way."""
        if pgid in self._groups:
            self._groups.discard(pgid)
            try:
                self._send(f"del {pgid}\n")
            except LifelineError as exc:
                logger.warning("could not release group %d: %s", pgid, exc)

    def _send(self, line: str) -> None:
        if self._fd is None:
            raise LifelineError("the lifeline is closed")
        try:
            os.write(self._fd, line.encode())
        except BlockingIOError:
            raise LifelineError("the lifeline guardian stopped reading") from None
        except OSError as exc:  # EPIPE: the guardian died
            raise LifelineError(f"the lifeline guardian is gone: {exc}") from exc

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"holding {len(self._groups)} groups"
        return f"<Lifeline pid {self.pid} {state}>"


@contextlib.asynccontextmanager
async def open_lifeline(*, grace: float = 2.0) -> AsyncIterator[Lifeline]:
    """Start the guardian and yield its :class:`Lifeline`; on exit, end it and reap it.

    ``grace`` is how long the guardian waits between SIGTERM and SIGKILL when swapd dies.
    Entering waits until the guardian reports ready (raises LifelineError if it does not).
    Exiting closes the pipe; groups still registered then are stopped by the guardian, as if
    swapd had died, and the exit waits for that (shielded, bounded by about ``grace + 3`` s).

    >>> async with open_lifeline() as lifeline:  # doctest: +SKIP
    ...     async with open_process_group(argv, env=env, on_output=log, lifeline=lifeline):
    ...         ...
    """
    import trio  # here, not at module level: the guardian program must not import trio

    read_fd, write_fd = os.pipe()  # both close-on-exec: no other child inherits the write end
    try:
        os.set_blocking(write_fd, False)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-I", "-S", PROGRAM, "--grace", str(grace)],
            stdin=read_fd,
            stdout=subprocess.PIPE,
            start_new_session=True,  # out of reach of signals sent to swapd's group or terminal
        )
    except BaseException:
        os.close(write_fd)
        raise
    finally:
        os.close(read_fd)
    lifeline = Lifeline(process, write_fd)
    stdout = process.stdout
    assert stdout is not None
    try:
        received = b""
        with trio.move_on_after(STARTUP_LIMIT):
            while not received.endswith(b"\n") and (chunk := await stdout.receive_some()):
                received += chunk
        if received != b"ready\n":
            raise LifelineError(f"the lifeline guardian did not start (said {received!r})")
        yield lifeline
    finally:
        with trio.CancelScope(shield=True):
            if lifeline.groups:
                logger.warning("closing the lifeline with groups %s", sorted(lifeline.groups))
            lifeline._close()
            with trio.move_on_after(grace + SWEEP_LIMIT + 1.0):
                await process.wait()
            if process.returncode is None:
                process.kill()  # it ignores SIGTERM by design
                await process.wait()
            await stdout.aclose()


if __name__ == "__main__":
    sys.exit(main())
