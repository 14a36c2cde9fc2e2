"""sd_notify: a real datagram socket stands in for systemd's notify socket.

The end-to-end test runs swapd as a process with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``
set and reads every message it sends, in order, across start, a model load, a SIGHUP
reload and SIGTERM. The other tests drive ``Notifier`` directly, still over real sockets.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from swapd.core.events import ModelStateChanged
from swapd.core.states import ModelState
from swapd.observe.bus import EventBus
from swapd.ops.notify import Notifier, describe_models
from swapd.reload import ConfigReloaded, ConfigReloadStarted, ReloadResult
from swapd.testing.server import free_port_base, upstream_cmd

WATCHDOG = "WATCHDOG=1"


class NotifySocket:
    """systemd's end: a bound AF_UNIX datagram socket that records (arrival, message)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.received: list[tuple[float, str]] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return None
        self.received.append((time.monotonic(), data.decode()))
        return data.decode()

    def next_message(self, timeout: float = 20.0) -> str:
        """The next message that is not a watchdog ping."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and message != WATCHDOG:
                return message
        raise AssertionError(f"no message within {timeout} s; got {self.messages()}")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next_message(left)
            if predicate(message):
                return message
        raise AssertionError(f"no matching message; got {self.messages()}")

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(left)

    def messages(self) -> list[str]:
        """Everything received so far but the watchdog pings, in order."""
        return [m for _, m in self.received if m != WATCHDOG]

    def pings_between(self, start: float, end: float) -> int:
        return sum(1 for at, m in self.received if m == WATCHDOG and start <= at <= end)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[tuple[str, NotifySocket]]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path is long.
    directory = tempfile.mkdtemp(prefix="swapd-notify-")
    path = os.path.join(directory, "notify")
    receiver = NotifySocket(path)
    try:
        yield path, receiver
    finally:
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)


def start_swapd(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, int]:
    base = free_port_base()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"startPort: {base + 1}\nmodels:\n"
        f"  m:\n    cmd: {upstream_cmd('--model', 'm')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "swapd", "--config", str(config), "--listen", f"127.0.0.1:{base}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    return proc, f"http://127.0.0.1:{base}", base


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def expect_reload_sequence(
    proc: subprocess.Popen[bytes], notify: NotifySocket, status: str
) -> None:
    """SIGHUP → ``RELOADING=1`` with a current ``MONOTONIC_USEC`` → ``READY=1`` + STATUS."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    proc.send_signal(signal.SIGHUP)
    reloading = notify.next_message()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", reloading)
    assert match, reloading
    assert before <= int(match[1]) <= after  # the same clock, read while reloading
    assert notify.next_message() == f"READY=1\nSTATUS={status}"


def test_swapd_notifies_ready_status_reload_stopping_and_pings_the_watchdog(
    tmp_path: Path, notify_socket: tuple[str, NotifySocket]
) -> None:
    path, notify = notify_socket
    proc, url, port = start_swapd(tmp_path, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    with reaped(proc):
        # READY=1 comes only once the listener is bound: connect the moment it arrives.
        assert notify.next_message() == "READY=1\nSTATUS=no model loaded"
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert httpx.get(f"{url}/health").status_code == 200

        # WATCHDOG_USEC=400000: a ping every 0.2 s, from the trio loop.
        window_start = time.monotonic()
        notify.drain(2.0)
        pings = notify.pings_between(window_start, time.monotonic())
        assert 6 <= pings <= 14, pings

        # STATUS follows the models (debounced: "starting" may be folded into "ready").
        assert httpx.post(f"{url}/api/models/load/m", timeout=30).status_code == 200
        notify.wait_for(lambda m: m == "STATUS=ready: m")
        # The model does not inherit the notify variables.
        model_env = httpx.get(f"{url}/upstream/m/env", timeout=10).json()
        assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"} & model_env.keys()

        expect_reload_sequence(proc, notify, "ready: m")

        proc.send_signal(signal.SIGTERM)
        assert notify.next_message() == "STOPPING=1"
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output.decode()
        notify.drain(0.3)  # anything sent just before exit

    messages = notify.messages()
    stopping = messages.index("STOPPING=1")
    assert messages[0] == "READY=1\nSTATUS=no model loaded"
    # while m loads: its progress (or "starting: m" before the first reading), then ready
    *loading, ready = messages[1 : stopping - 2]
    assert ready == "STATUS=ready: m"
    assert all(m == "STATUS=starting: m" or m.startswith("STATUS=loading m: ") for m in loading)
    assert messages[stopping - 2].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert messages[stopping - 1] == "READY=1\nSTATUS=ready: m"
    assert all(m.startswith("STATUS=") for m in messages[stopping + 1 :]), messages
    assert messages.count("STOPPING=1") == 1


def test_watchdog_pid_of_another_process_turns_the_pings_off() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}
    with Notifier.from_environ(env) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval is None
    assert env == {}  # the variables are removed, so children do not inherit them
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
    with Notifier.from_environ(env) as notifier:
        assert notifier.watchdog_interval == pytest.approx(0.2)


def test_without_notify_socket_everything_is_a_no_op() -> None:
    with Notifier.from_environ({"WATCHDOG_USEC": "400000"}) as notifier:
        assert not notifier.enabled
        assert notifier.watchdog_interval is None
        assert notifier.send("READY=1") is False
        notifier.ready()
        notifier.stopping()
        assert notifier.sent == 0
        assert repr(notifier) == "<Notifier disabled>"


def test_abstract_namespace_socket() -> None:
    name = f"swapd-test-{os.getpid()}-{time.monotonic_ns()}"
    receiver = NotifySocket("\0" + name)
    try:
        with Notifier("@" + name) as notifier:
            assert notifier.send("STATUS=hello", "X=1")
        assert receiver.receive(5) == "STATUS=hello\nX=1"
    finally:
        receiver.close()


def test_phases_are_idempotent_and_nothing_but_status_follows_stopping(
    notify_socket: tuple[str, NotifySocket],
) -> None:
    path, receiver = notify_socket
    with Notifier(path) as notifier:
        notifier.reloading()  # not ready yet: nothing to bracket
        notifier.ready()
        notifier.ready()
        notifier.status("no model loaded")  # what READY=1 carried: not repeated
        notifier.status("ready: a")
        notifier.reloading()
        notifier.reloading()
        notifier.ready()
        notifier.stopping()
        notifier.ready()
        notifier.reloading()
        notifier.stopping()
        notifier.status("stopping: a")
    receiver.drain(0.2)
    messages = receiver.messages()
    assert [m.split("\n")[0] for m in messages] == [
        "READY=1",
        "STATUS=ready: a",
        "RELOADING=1",
        "READY=1",
        "STOPPING=1",
        "STATUS=stopping: a",
    ]
    assert messages[0] == "READY=1\nSTATUS=no model loaded"


def test_a_manager_that_went_away_is_not_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "gone")
    NotifySocket(path).close()  # bound once, nobody reads it any more
    with Notifier(path) as notifier:
        assert notifier.send("READY=1") is False
        assert notifier.send("STATUS=x") is False  # still quiet, still no exception
    with Notifier("vsock:2:1234") as notifier:  # an address form we do not speak
        assert not notifier.enabled


def test_describe_models_lists_loaded_models_by_state() -> None:
    S = ModelState
    assert describe_models({}) == "no model loaded"
    assert (
        describe_models({"z": S.READY, "a": S.READY, "w": S.WAKING, "s": S.STOPPED, "x": S.ASLEEP})
        == "ready: a, z; waking: w; asleep: x"
    )
    assert describe_models({"a\nSTOPPING=1": S.READY}) == "ready: a STOPPING=1"  # one field
    long = describe_models({f"model-{i:04d}": S.READY for i in range(500)})
    assert len(long) == 1000
    assert long.endswith("…")


async def test_bus_events_drive_status_and_reload_brackets(
    notify_socket: tuple[str, NotifySocket],
) -> None:
    path, receiver = notify_socket
    bus: EventBus[object] = EventBus()
    shutdown = trio.Event()

    def changed(model: str, old: ModelState, new: ModelState) -> None:
        bus.publish(ModelStateChanged(model=model, old=old, new=new, reason="test"))

    with Notifier(path) as notifier, trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(notifier.run, bus, shutdown)
            notifier.ready()
            # A burst of changes is one STATUS= (debounced), with the final state.
            changed("a", ModelState.STOPPED, ModelState.STARTING)
            changed("b", ModelState.STOPPED, ModelState.STARTING)
            changed("a", ModelState.STARTING, ModelState.READY)
            await trio.sleep(0.5)
            bus.publish(ConfigReloadStarted("SIGHUP"))
            bus.publish(ConfigReloaded(ReloadResult(ok=False, at=0.0, trigger="SIGHUP")))
            shutdown.set()
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    receiver.drain(0.2)
    assert [m.split("\n")[0] for m in receiver.messages()] == [
        "READY=1",
        "STATUS=ready: a; starting: b",
        "RELOADING=1",
        "READY=1",
        "STOPPING=1",
    ]
