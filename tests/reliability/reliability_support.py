"""Helpers shared by the reliability suite: configs, the process table, the event stream.

Every scenario asserts three things: what the client saw, what the process table holds
afterwards and what the event stream said. ``ours()`` is the process table (model
processes of this test run, found by swapd's environment marker); ``EventLog`` records
the event stream synchronously (``EventBus.watch``), so no transition is missed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import attrs
import h11
import httpx
import trio

from swapd.core.events import ModelStateChanged
from swapd.observe.bus import EventBus
from swapd.supervise.lifeline import marked_processes, process_alive
from swapd.testing import upstream_cmd


def ours(prefix_pid: int | None = None) -> set[int]:
    """Live model processes started by this test process (or by swapd ``prefix_pid``)."""
    prefix = f"{prefix_pid or os.getpid()}:"
    return {
        pid for pid, value in marked_processes("SWAPD_INSTANCE").items() if value.startswith(prefix)
    }


def gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    return not process_alive(pid)


def processes_running(needle: str) -> list[int]:
    """Live processes whose command line contains ``needle`` (for helpers swapd does not
    mark, such as a ``cmdStop`` command)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if needle in cmdline and not gone(int(entry)):
            found.append(int(entry))
    return found


def model_yaml(name: str, *flags: str, extra: str = "", cmd: str | None = None) -> str:
    """One model entry running the demo upstream with ``flags`` (or ``cmd``)."""
    lines = [
        f"  {name}:",
        f"    cmd: {cmd or upstream_cmd('--model', name, '--respond', f'hi from {name}', *flags)}",
        "    proxy: http://127.0.0.1:${PORT}",
    ]
    lines.extend("    " + line for line in extra.splitlines() if line.strip())
    return "\n".join(lines) + "\n"


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hello there"}], **extra}


@attrs.define
class EventLog:
    """Every event published on a bus, in order, recorded as it is published."""

    events: list[object] = attrs.field(factory=list)

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def changes(self, model: str | None = None) -> list[ModelStateChanged]:
        return [
            e
            for e in self.events
            if isinstance(e, ModelStateChanged) and (model is None or e.model == model)
        ]

    def transitions(self, model: str) -> list[tuple[str, str]]:
        """``(old, new)`` state names of ``model``, in order."""
        return [(e.old.value, e.new.value) for e in self.changes(model)]

    def of_type(self, kind: type[object]) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]


@contextmanager
def recording(bus: EventBus[object]) -> Iterator[EventLog]:
    log = EventLog()
    with bus.watch(log):
        yield log


@attrs.frozen
class RawReply:
    """A response read off a raw socket (``status`` None: closed without an answer)."""

    status: int | None
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.decode("latin-1").lower() == name:
                return value.decode("latin-1")
        return None


async def raw_request(host: str, port: int, data: bytes, *, within: float = 10.0) -> RawReply:
    """Send ``data`` as it is (whatever a well-behaved client would refuse to send) and
    read one response with h11; the connection is closed afterwards."""
    conn = h11.Connection(h11.CLIENT)
    # h11 must believe it sent a request to parse the answer: a HEAD-free GET will do
    conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
    conn.send(h11.EndOfMessage())
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = []
    body = b""
    stream = await trio.open_tcp_stream(host, port)
    try:
        with trio.move_on_after(within):
            # refused mid-upload: the answer may still be there
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(data)
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        chunk = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        chunk = b""
                    conn.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    status, headers = event.status_code, list(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    finally:
        await stream.aclose()
    return RawReply(status, headers, body)


# --- what a process holds, read from /proc ----------------------------------------------

_CLOSE_WAIT = "08"  # the st column of /proc/net/tcp


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` holds."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def close_wait_sockets(port: int) -> int:
    """TCP sockets on local port ``port`` (IPv4 and IPv6) whose peer has closed while this
    side has not: a connection the server never noticed ending."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, state = fields[1], fields[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == _CLOSE_WAIT:
                count += 1
    return count


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory (``VmHWM``) of process ``pid``, in MB: a short spike
    counts, unlike in the current ``VmRSS``."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


@asynccontextmanager
async def health_latency(client: httpx.AsyncClient) -> AsyncIterator[Callable[[], float]]:
    """Ask ``GET /health`` every 0.2 s (its own connection) while the block runs; yields
    a function giving the slowest answer so far in seconds, an unanswered one counting
    for as long as it has waited."""
    slowest = 0.0
    asked_at: float | None = None

    def worst() -> float:
        waiting = trio.current_time() - asked_at if asked_at is not None else 0.0
        return max(slowest, waiting)

    async def probe(probe_client: httpx.AsyncClient) -> None:
        nonlocal slowest, asked_at
        while True:
            asked_at = trio.current_time()
            reply = await probe_client.get("/health")
            assert reply.status_code == 200
            slowest = max(slowest, trio.current_time() - asked_at)
            asked_at = None
            await trio.sleep(0.2)

    async with (
        httpx.AsyncClient(base_url=client.base_url, timeout=120) as probe_client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(probe, probe_client)
        await trio.sleep(0.3)  # at least one answer before the attack
        try:
            yield worst
        finally:
            final = worst()
            nursery.cancel_scope.cancel()
            slowest = final
