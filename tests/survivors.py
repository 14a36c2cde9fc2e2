"""Real child processes for the process tests, and a check that none outlives its test.

``child(name, *args)`` runs one of the stdlib scripts in ``tests/children/``. Import
``no_survivors`` into a test module to make it autouse there: it tags every process the
test starts (through the environment) and fails the test if one is still alive 5 s after
it ended (and kills it, so one failure does not spill into the next test).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from swapd.supervise.lifeline import marked_processes

CHILDREN = Path(__file__).parent / "children"
TAG = "SWAPD_TEST_TAG"


def child(name: str, *args: str) -> list[str]:
    return [sys.executable, str(CHILDREN / name), *args]


@pytest.fixture(autouse=True)
def no_survivors(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tag every process the test starts (through the env) and fail if one outlives it."""
    tag = secrets.token_hex(8)
    monkeypatch.setenv(TAG, tag)
    yield
    deadline = time.monotonic() + 5
    while True:
        left = [pid for pid, value in marked_processes(TAG).items() if value == tag]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes survived the test: {left}"
