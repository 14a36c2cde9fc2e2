"""sd_notify: tell the service manager how swapd is doing, over ``$NOTIFY_SOCKET``.

The protocol is one ``AF_UNIX`` datagram per message, newline-separated ``KEY=value``
fields, sent to the path in ``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket).
swapd sends:

- ``READY=1`` (with ``STATUS=``) once the config is loaded and the listener is bound;
- ``STATUS=ready: a, b; starting: c`` whenever the set of loaded models changes
  (debounced by ``STATUS_DEBOUNCE`` and deduplicated: a burst of changes is one message);
- while a model loads, ``STATUS=loading c: warming up 75% (about 3s left); ready: a, b``
  from its ``loadProgress`` readings (docs/load-progress.md), at most once per
  ``PROGRESS_INTERVAL``; the plain text again once nothing loads;
- ``RELOADING=1`` + ``MONOTONIC_USEC=…`` when a config reload starts and ``READY=1`` when
  it ends (it succeeded, or failed and the old config keeps serving);
- ``STOPPING=1`` as soon as shutdown begins;
- ``WATCHDOG=1`` every half ``$WATCHDOG_USEC``, from a task on the trio loop, so a stalled
  loop stops the pings and systemd restarts swapd. ``$WATCHDOG_PID``, if set, must be ours.

Rules:

- **Never blocks, never raises.** A send is one non-blocking ``sendto``; a manager that is
  gone or slow loses the message (logged once), and swapd carries on.
- Without ``$NOTIFY_SOCKET`` every method is a no-op: ``Notifier()`` is the disabled one.
- The phase messages are idempotent: ``ready()`` twice sends one ``READY=1``, and nothing
  but ``STATUS=`` follows ``STOPPING=1``. So a caller may bracket a reload explicitly even
  though the bus events already do.
- ``from_environ`` removes the variables (as ``sd_notify(unset_environment=1)`` does), so
  model servers started later do not inherit them.

>>> with Notifier.from_environ() as notifier:  # doctest: +SKIP
...     await nursery.start(notifier.run, bus, shutdown)
...     notifier.ready()
"""

from __future__ import annotations

import enum
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from types import TracebackType

import trio

from swapd.core.events import LoadProgressed, ModelStateChanged
from swapd.core.states import ModelState
from swapd.observe.bus import EventBus
from swapd.reload import ConfigReloaded, ConfigReloadStarted

__all__ = [
    "PROGRESS_INTERVAL",
    "STATUS_DEBOUNCE",
    "Notifier",
    "describe_load",
    "describe_models",
    "notify_address",
]

log = logging.getLogger("swapd.notify")

STATUS_DEBOUNCE = 0.1  # seconds a burst of model state changes is collected into one STATUS=
PROGRESS_INTERVAL = 1.0  # seconds between STATUS= lines while a model loads
STATUS_LIMIT = 1000  # characters of STATUS= text; systemctl shows one line anyway
ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# The order loaded models are listed in; stopped and shut-down ones are not "loaded".
_SHOWN = (
    ModelState.READY,
    ModelState.STARTING,
    ModelState.WAKING,
    ModelState.SLEEP_PENDING,
    ModelState.ASLEEP,
    ModelState.STOPPING,
)


class _Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    RELOADING = "reloading"
    STOPPING = "stopping"


def notify_address(value: str) -> str | None:
    """The socket address for a ``$NOTIFY_SOCKET`` value: a path, or ``@name`` → abstract.

    >>> notify_address("@/org/freedesktop/systemd1/notify/42")
    '\\x00/org/freedesktop/systemd1/notify/42'

    Other forms (systemd's ``vsock:``) are not supported and give None.
    """
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def describe_models(states: Mapping[str, ModelState]) -> str:
    """The ``STATUS=`` text for these model states.

    >>> describe_models({"b": ModelState.READY, "a": ModelState.READY, "c": ModelState.STARTING})
    'ready: a, b; starting: c'
    >>> describe_models({"a": ModelState.STOPPED})
    'no model loaded'
    """
    return _fit(_state_parts(states)) or "no model loaded"


def describe_load(loads: Mapping[str, LoadProgressed], states: Mapping[str, ModelState]) -> str:
    """The ``STATUS=`` text while models load: each load's stage, percent and time left,
    then the other models by state (the loading ones are not listed twice), e.g.
    ``loading c: warming up 75% (about 3s left); ready: a``; a time-based estimate is
    ``~20%``, and a load past its prediction has no ``(about …)``.
    """
    parts = []
    for model in sorted(loads):
        reading = loads[model]
        percent = f"~{reading.percent}%" if reading.is_estimate else f"{reading.percent}%"
        left = "" if reading.eta is None else f" (about {math.ceil(reading.eta)}s left)"
        parts.append(f"loading {model}: {reading.label} {percent}{left}")
    others = {model: state for model, state in states.items() if model not in loads}
    return _fit(parts + _state_parts(others))


def _state_parts(states: Mapping[str, ModelState]) -> list[str]:
    parts = []
    for state in _SHOWN:
        names = sorted(model for model, s in states.items() if s == state)
        if names:
            parts.append(f"{state.value}: {', '.join(names)}")
    return parts


def _fit(parts: list[str]) -> str:
    # A newline would end the field: the rest would be read as a message of its own.
    text = "; ".join(parts).replace("\n", " ")
    return text if len(text) <= STATUS_LIMIT else text[: STATUS_LIMIT - 1] + "…"


class Notifier:
    """swapd's end of the notify socket; see the module docstring.

    ``address`` is a ``$NOTIFY_SOCKET`` value (None: disabled); ``watchdog_usec`` is
    ``$WATCHDOG_USEC`` (None or 0: no watchdog pings).
    """

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        self._address = notify_address(address) if address else None
        if address and self._address is None:
            log.warning("NOTIFY_SOCKET=%s is not a supported address; not notifying", address)
        self._socket: socket.socket | None = None
        if self._address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._phase = _Phase.STARTING
        self._states: dict[str, ModelState] = {}
        self._loads: dict[str, LoadProgressed] = {}  # the latest reading of each load
        self._last_status_at = -math.inf  # trio time of the last STATUS= sent by the task
        self._status: str | None = None  # the last STATUS= text sent
        self._changed = trio.Event()
        self._failed = False
        self.sent = 0

    @classmethod
    def from_environ(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """The notifier ``$NOTIFY_SOCKET``/``$WATCHDOG_USEC``/``$WATCHDOG_PID`` ask for.

        ``environ`` defaults to ``os.environ``; with ``unset`` the variables are removed from
        it, so children do not inherit them."""
        env = os.environ if environ is None else environ
        values = {name: env.get(name, "") for name in ENVIRONMENT}
        if unset:
            for name in ENVIRONMENT:
                env.pop(name, None)
        usec = int(values["WATCHDOG_USEC"]) if values["WATCHDOG_USEC"].isdigit() else None
        watchdog_pid = values["WATCHDOG_PID"]
        if watchdog_pid and watchdog_pid != str(os.getpid()):
            usec = None  # the watchdog is meant for another process (our parent, say)
        return cls(values["NOTIFY_SOCKET"] or None, watchdog_usec=usec)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings: half the manager's timeout; None if off."""
        if self._socket is None or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def send(self, *fields: str) -> bool:
        """Send one message of ``KEY=value`` fields; True if it was handed to the socket."""
        if self._socket is None or self._address is None:
            return False
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:  # the manager is gone, or its queue is full
            if not self._failed:
                log.warning("cannot notify the service manager: %s", exc)
                self._failed = True
            return False
        self.sent += 1
        return True

    def ready(self) -> None:
        """``READY=1`` with the current ``STATUS=``: at startup, and after a reload."""
        if self._phase in (_Phase.STARTING, _Phase.RELOADING):
            self._phase = _Phase.READY
            self._status = self._describe()
            self.send("READY=1", f"STATUS={self._status}")

    def reloading(self) -> None:
        """``RELOADING=1`` with ``MONOTONIC_USEC``: a reload begins (after ``ready``)."""
        if self._phase is _Phase.READY:
            self._phase = _Phase.RELOADING
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            self.send("RELOADING=1", f"MONOTONIC_USEC={now}")

    def stopping(self) -> None:
        """``STOPPING=1``: shutdown has begun. Only ``STATUS=`` is sent after it."""
        if self._phase is not _Phase.STOPPING:
            self._phase = _Phase.STOPPING
            self.send("STOPPING=1")

    def status(self, text: str) -> None:
        """``STATUS=text``, unless that is what was sent last."""
        if text != self._status:
            self._status = text
            self.send(f"STATUS={text}")

    def on_event(self, event: object) -> None:
        """A bus watcher: model state changes feed ``STATUS=``; reloads are bracketed."""
        if isinstance(event, ModelStateChanged):
            self._states[event.model] = event.new
            if event.new is not ModelState.STARTING:
                self._loads.pop(event.model, None)
            self._changed.set()
        elif isinstance(event, LoadProgressed):
            # only while the model is starting: the final ``ready`` reading comes after
            if event.stage != "ready" and self._states.get(event.model) is ModelState.STARTING:
                self._loads[event.model] = event
                self._changed.set()
        elif isinstance(event, ConfigReloadStarted):
            self.reloading()
        elif isinstance(event, ConfigReloaded):
            self.ready()

    async def run(
        self,
        bus: EventBus[object],
        shutdown: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch ``bus`` and ``shutdown``, ping the watchdog; runs until cancelled (returns
        at once when disabled).

        ``started()`` once the bus is watched, so no state change is missed."""
        if self._socket is None:
            task_status.started()
            return
        with bus.watch(
            self.on_event,
            (ModelStateChanged, LoadProgressed, ConfigReloadStarted, ConfigReloaded),
        ):
            task_status.started()
            async with trio.open_nursery() as nursery:
                if (interval := self.watchdog_interval) is not None:
                    nursery.start_soon(self._ping_watchdog, interval)
                nursery.start_soon(self._report_status)
                await shutdown.wait()
                self.stopping()

    async def _ping_watchdog(self, interval: float) -> None:
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(interval)

    async def _report_status(self) -> None:
        while True:
            await self._changed.wait()
            await trio.sleep(STATUS_DEBOUNCE)  # let a burst of changes settle
            if self._loads:  # progress moves every second: a line a second is enough
                await trio.sleep_until(self._last_status_at + PROGRESS_INTERVAL)
            self._changed = trio.Event()
            if self._phase is not _Phase.STARTING:  # READY=1 carries the first STATUS=
                self.status(self._describe())
                self._last_status_at = trio.current_time()

    def _describe(self) -> str:
        if self._loads:
            return describe_load(self._loads, self._states)
        return describe_models(self._states)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._address is None:
            return "<Notifier disabled>"
        watchdog = f", watchdog every {self.watchdog_interval}s" if self.watchdog_interval else ""
        return f"<Notifier {self._phase.value}, {self.sent} sent{watchdog}>"
