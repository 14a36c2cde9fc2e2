"""swapd as users run it: the ``swapd`` CLI in its own process, for tests that need
signals, ``kill -9``, environment variables or a clean RSS measurement.

::

    with run_swapd(config_path) as swapd:
        httpx.get(f"{swapd.url}/health")
        swapd.proc.send_signal(signal.SIGHUP)
    print(swapd.output)  # everything it printed, once it has exited

``run_swapd`` picks a free loopback port, waits until ``/health`` answers, and on exit
stops swapd (SIGTERM, then SIGKILL after ``stop_timeout``) and collects its output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO

import attrs
import httpx

from swapd.testing.server import free_port_base

__all__ = ["SwapdProcess", "run_swapd"]


@attrs.define(eq=False)
class SwapdProcess:
    proc: subprocess.Popen[bytes]
    port: int
    output: bytes = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextmanager
def run_swapd(
    config: str | os.PathLike[str],
    *,
    port: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 20.0,
    stop_timeout: float = 30.0,
) -> Iterator[SwapdProcess]:
    """Run ``swapd --config CONFIG --listen 127.0.0.1:PORT ARGS...`` until the block ends."""
    port = port if port is not None else free_port_base(1)
    argv = [sys.executable, "-m", "swapd", "--config", os.fspath(config)]
    argv += ["--listen", f"127.0.0.1:{port}", *args]
    # Output goes to a file, not a pipe: a chatty swapd must never block on a full pipe.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        swapd = SwapdProcess(proc, port)
        try:
            _wait_ready(swapd, log, ready_timeout)
            yield swapd
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=stop_timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.seek(0)
            swapd.output = log.read()


def _output(log: IO[bytes], limit: int = 2000) -> str:
    """The tail of what swapd printed so far, for a failure message."""
    fd = log.fileno()
    size = os.fstat(fd).st_size
    # pread leaves the shared file offset alone: swapd is still writing at it.
    tail = os.pread(fd, limit, max(0, size - limit))
    return tail.decode(errors="replace").strip()


def _wait_ready(swapd: SwapdProcess, log: IO[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if swapd.proc.poll() is not None:
            raise AssertionError(
                f"swapd exited with {swapd.proc.returncode} before it was up: {_output(log)}"
            )
        try:
            if httpx.get(f"{swapd.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"swapd did not answer on {swapd.url} within {timeout:g}s: {_output(log)}"
            )
        time.sleep(0.05)
