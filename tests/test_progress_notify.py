"""systemd ``STATUS=`` while a model loads: the stage, percentage and time left, at most
once a second, and the plain status again once the model is ready. A real datagram
socket stands in for systemd's notify socket: once driven by bus events on a mock clock
(how often), once end to end with swapd as a process and a slowly loading demo model."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import httpx
import pytest
import trio
import trio.testing

from swapd.core.events import LoadProgressed, ModelStateChanged
from swapd.core.states import ModelState
from swapd.observe.bus import EventBus
from swapd.ops.notify import Notifier, describe_load
from swapd.testing.server import free_port_base, upstream_cmd


@pytest.fixture
def notify_path() -> Iterator[tuple[str, socket.socket]]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path is long.
    directory = tempfile.mkdtemp(prefix="swapd-notify-")
    path = os.path.join(directory, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    try:
        yield path, receiver
    finally:
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)


def received(receiver: socket.socket) -> list[str]:
    """Every message waiting on the socket, without blocking."""
    receiver.setblocking(False)
    messages = []
    while True:
        try:
            messages.append(receiver.recv(65536).decode())
        except BlockingIOError:
            return messages


def reading(percent: int, *, eta: float | None, estimate: bool = False) -> LoadProgressed:
    return LoadProgressed(
        model="s",
        stage="loading_weights",
        label="loading weights",
        fraction=percent / 100,
        percent=percent,
        eta=eta,
        is_estimate=estimate,
        elapsed=1.0,
        predicted=10.0,
        prediction_basis="history",
    )


def changed(old: ModelState, new: ModelState) -> ModelStateChanged:
    return ModelStateChanged(model="s", old=old, new=new, reason="test")


def test_the_load_line_says_stage_percent_and_time_left() -> None:
    states = {"s": ModelState.STARTING, "a": ModelState.READY}
    assert (
        describe_load({"s": reading(42, eta=3.1)}, states)
        == "loading s: loading weights 42% (about 4s left); ready: a"
    )
    assert describe_load({"s": reading(20, eta=None, estimate=True)}, {}) == (
        "loading s: loading weights ~20%"  # past the prediction: no time left is known
    )


async def test_progress_status_is_rate_limited_and_ends_with_the_plain_status(
    notify_path: tuple[str, socket.socket], autojump_clock: trio.testing.MockClock
) -> None:
    path, receiver = notify_path
    bus: EventBus[object] = EventBus()
    shutdown = trio.Event()
    with Notifier(path) as notifier:
        async with trio.open_nursery() as nursery:
            await nursery.start(notifier.run, bus, shutdown)
            notifier.ready()
            bus.publish(changed(ModelState.STOPPED, ModelState.STARTING))
            for percent in range(1, 41):  # 40 readings over 4 s: ten a second
                bus.publish(reading(percent, eta=(40 - percent) / 10))
                await trio.sleep(0.1)
            await trio.sleep(2)
            bus.publish(changed(ModelState.STARTING, ModelState.READY))
            bus.publish(attrs.evolve(reading(100, eta=0.0), stage="ready", label="ready"))
            await trio.sleep(2)
            nursery.cancel_scope.cancel()
    messages = received(receiver)
    assert messages[0] == "READY=1\nSTATUS=no model loaded"
    loading = [m for m in messages if m.startswith("STATUS=loading s: loading weights ")]
    # one line a second over the 4 s of readings, the first one at once
    assert 3 <= len(loading) <= 6, messages
    percents = [int(m.split("weights ")[1].split("%")[0]) for m in loading]
    assert percents == sorted(percents)
    assert percents[-1] == 40  # the latest reading is the one sent
    assert messages[-1] == "STATUS=ready: s"


def test_swapd_reports_a_load_in_progress_in_its_status(
    tmp_path: Path, notify_path: tuple[str, socket.socket]
) -> None:
    path, receiver = notify_path
    base = free_port_base()
    cmd = upstream_cmd("--model", "m", "--loading-delay", "4", "--load-stages")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"startPort: {base + 1}\nhealthCheckTimeout: 30\nmodels:\n"
        f"  m:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "swapd", "--config", str(config), "--listen", f"127.0.0.1:{base}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "NOTIFY_SOCKET": path},
    )
    messages: list[str] = []
    try:
        receiver.settimeout(20)
        messages.append(receiver.recv(65536).decode())  # READY=1: the listener is bound
        reply = httpx.post(f"http://127.0.0.1:{base}/api/models/load/m", timeout=30)
        assert reply.status_code == 200, reply.text
        deadline = time.monotonic() + 10
        while "STATUS=ready: m" not in messages and time.monotonic() < deadline:
            receiver.settimeout(max(deadline - time.monotonic(), 0.01))
            messages.append(receiver.recv(65536).decode())
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert messages[0] == "READY=1\nSTATUS=no model loaded"
    loading = [m for m in messages if m.startswith("STATUS=loading m: ")]
    assert loading, messages
    assert any("% (about " in m for m in loading)  # the first load's 15 s prediction
    assert messages[-1] == "STATUS=ready: m"
