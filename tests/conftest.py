"""Shared fixtures. Every test is checked for leftover model processes afterwards."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

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
