"""Shared fixtures. Every test is checked for leftover model processes afterwards."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swapd.supervise.lifeline import marked_processes


def _our_children() -> dict[int, str]:
    prefix = f"{os.getpid()}:"
    return {
        pid: value
        for pid, value in marked_processes("SWAPD_INSTANCE").items()
        if value.startswith(prefix)
    }


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Fail a test that leaves any model process of this test run alive."""
    yield
    deadline = time.monotonic() + 5
    while _our_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _our_children() == {}, "model processes outlived the test"


@pytest.fixture(autouse=True, scope="module")
def collect_garbage_per_module() -> Iterator[None]:
    """Finalise what a module left to the garbage collector at the module's end, under
    its own warning filters. Otherwise an unclosed socket's ResourceWarning fires in
    whichever later test the collector happens to run in, and fails that test (seen
    under CPU load). One collection per module costs a few seconds per run."""
    yield
    gc.collect()


_SESSION_STATE = tempfile.mkdtemp(prefix="swapd-test-state-")


def pytest_configure(config: pytest.Config) -> None:
    """swapd keeps its activity history under ``$XDG_STATE_HOME`` (or systemd's
    ``$STATE_DIRECTORY``): a test run must never write into the real home, not even from
    session-wide swapd processes, so the whole run gets a scratch state directory."""
    os.environ.pop("STATE_DIRECTORY", None)
    os.environ["XDG_STATE_HOME"] = _SESSION_STATE


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_STATE, ignore_errors=True)


@pytest.fixture(autouse=True)
def private_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's swapds get an activity database of their own (ids from 1, no rows
    from other tests)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
