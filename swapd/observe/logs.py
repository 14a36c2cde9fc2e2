"""The log hub: every log stream swapd keeps, with history and live subscribers (10.2).

Owns the named logs and how bytes flow between them:

- ``proxy``: swapd's own formatted lines (:meth:`LogHub.log`, :class:`HubHandler`);
- ``upstream``: every model's output (each per-model log forwards into it);
- one log per model ID: that child's stdout+stderr lines, raw, no prefix; its history is
  released when the model stops (:meth:`LogHub.clear_model`);
- ``mux``: the stdout mirror that ``GET /logs`` shows; what reaches it (and the real
  stdout) follows ``logToStdout``:

  ============  ===================  ===================
  mode          stdout gets          mux history
  ============  ===================  ===================
  ``proxy``     proxy                proxy only
  ``upstream``  upstream             upstream only
  ``both``      both, interleaved    both
  ``none``      nothing              nothing
  ============  ===================  ===================

Each log has a 100 KiB :class:`~swapd.observe.ring.ByteRing` and an
:class:`~swapd.observe.bus.EventBus` of raw chunks. Writers never block: a slow
subscriber loses its oldest chunks. Everything here is synchronous; ``history`` followed
by ``subscribe`` with no checkpoint in between sees every byte exactly once.

``logLevel`` filters only swapd's formatted lines, never raw child output. Lines look like
``<ts> [LEVEL] message`` where ``<ts> `` appears only when ``logTimeFormat`` names one of
Go's layouts (:func:`format_go_time`).
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Final, Literal

import attrs

from swapd.config.model import LogLevel, LogToStdout
from swapd.observe.bus import EventBus, Subscription
from swapd.observe.ring import ByteRing

if TYPE_CHECKING:
    import trio

    from swapd.config.model import Config

__all__ = [
    "LOG_RING_BYTES",
    "MUX",
    "PROXY",
    "SUBSCRIBER_SLOTS",
    "UPSTREAM",
    "HubHandler",
    "LogHub",
    "format_go_time",
]

#: Ring size of every log: 100 KiB.
LOG_RING_BYTES: Final = 102_400
#: Chunks a live subscriber may fall behind before its oldest are dropped (5.12).
SUBSCRIBER_SLOTS: Final = 10

PROXY: Final = "proxy"
UPSTREAM: Final = "upstream"
MUX: Final = "mux"

_LEVEL_ORDER: Final = {LogLevel.DEBUG: 0, LogLevel.INFO: 1, LogLevel.WARN: 2, LogLevel.ERROR: 3}

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
_DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _offset_minutes(t: dt.datetime) -> int:
    offset = t.utcoffset()
    return 0 if offset is None else int(offset.total_seconds()) // 60


def _numeric_zone(t: dt.datetime, colon: bool) -> str:
    minutes = _offset_minutes(t)
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    sep = ":" if colon else ""
    return f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"


def _zone_z(t: dt.datetime) -> str:
    """Go's ``Z07:00``: ``Z`` for UTC, else ``±hh:mm``."""
    return "Z" if _offset_minutes(t) == 0 else _numeric_zone(t, colon=True)


def _zone_name(t: dt.datetime) -> str:
    """Go's ``MST``: the zone abbreviation, or ``-0700`` when the zone has no name."""
    name = t.tzname()
    # datetime.timezone without a name reports "UTC+02:00"; Go has no name there.
    if not name or (name.startswith("UTC") and len(name) > 3):
        return _numeric_zone(t, colon=False)
    return name


def _nanos(t: dt.datetime) -> str:
    return f"{t.microsecond * 1000:09d}"


def _hms(t: dt.datetime) -> str:
    return f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def _stamp(t: dt.datetime) -> str:
    """Go's ``Jan _2 15:04:05``."""
    return f"{_MONTHS[t.month - 1]} {t.day:>2d} {_hms(t)}"


def _rfc3339nano(t: dt.datetime) -> str:
    frac = _nanos(t).rstrip("0")
    return f"{t:%Y-%m-%d}T{_hms(t)}{'.' + frac if frac else ''}{_zone_z(t)}"


def _kitchen(t: dt.datetime) -> str:
    hour = t.hour % 12 or 12
    return f"{hour}:{t.minute:02d}{'PM' if t.hour >= 12 else 'AM'}"


def _mon(t: dt.datetime) -> str:
    return _DAYS[t.weekday()][:3]


_LAYOUTS: Final[dict[str, Callable[[dt.datetime], str]]] = {
    # Mon Jan _2 15:04:05 2006
    "ansic": lambda t: f"{_mon(t)} {_stamp(t)} {t.year:04d}",
    # Mon Jan _2 15:04:05 MST 2006
    "unixdate": lambda t: f"{_mon(t)} {_stamp(t)} {_zone_name(t)} {t.year:04d}",
    # Mon Jan 02 15:04:05 -0700 2006
    "rubydate": lambda t: (
        f"{_mon(t)} {_MONTHS[t.month - 1]} {t.day:02d} {_hms(t)} "
        f"{_numeric_zone(t, colon=False)} {t.year:04d}"
    ),
    # 02 Jan 06 15:04 MST
    "rfc822": lambda t: f"{t.day:02d} {_MONTHS[t.month - 1]} {t:%y %H:%M} {_zone_name(t)}",
    # 02 Jan 06 15:04 -0700
    "rfc822z": lambda t: (
        f"{t.day:02d} {_MONTHS[t.month - 1]} {t:%y %H:%M} {_numeric_zone(t, colon=False)}"
    ),
    # Monday, 02-Jan-06 15:04:05 MST
    "rfc850": lambda t: (
        f"{_DAYS[t.weekday()]}, {t.day:02d}-{_MONTHS[t.month - 1]}-{t:%y} {_hms(t)} {_zone_name(t)}"
    ),
    # Mon, 02 Jan 2006 15:04:05 MST
    "rfc1123": lambda t: (
        f"{_mon(t)}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} {_hms(t)} {_zone_name(t)}"
    ),
    # Mon, 02 Jan 2006 15:04:05 -0700
    "rfc1123z": lambda t: (
        f"{_mon(t)}, {t.day:02d} {_MONTHS[t.month - 1]} {t.year:04d} {_hms(t)} "
        f"{_numeric_zone(t, colon=False)}"
    ),
    # 2006-01-02T15:04:05Z07:00
    "rfc3339": lambda t: f"{t:%Y-%m-%d}T{_hms(t)}{_zone_z(t)}",
    # 2006-01-02T15:04:05.999999999Z07:00 (trailing zeros and a bare dot dropped)
    "rfc3339nano": _rfc3339nano,
    # 3:04PM
    "kitchen": _kitchen,
    # Jan _2 15:04:05[.000[000[000]]]
    "stamp": _stamp,
    "stampmilli": lambda t: f"{_stamp(t)}.{_nanos(t)[:3]}",
    "stampmicro": lambda t: f"{_stamp(t)}.{_nanos(t)[:6]}",
    "stampnano": lambda t: f"{_stamp(t)}.{_nanos(t)}",
}


def format_go_time(layout: str, when: dt.datetime) -> str:
    """Render ``when`` in the named Go layout (``rfc3339``, ``kitchen``…; case-insensitive).

    ``""`` renders ``""`` (no timestamp). Unknown names raise ``KeyError``. A naive
    datetime is treated as local time, as Go's ``time.Now()`` is."""
    name = layout.strip().lower()
    if not name:
        return ""
    if when.tzinfo is None:
        when = when.astimezone()
    return _LAYOUTS[name](when)


def _local_now() -> dt.datetime:
    return dt.datetime.now().astimezone()


def _write_real_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@attrs.define(eq=False)
class _Log:
    """One named log: its history and its live subscribers."""

    ring: ByteRing = attrs.field(factory=lambda: ByteRing(LOG_RING_BYTES))
    bus: EventBus[bytes] = attrs.field(factory=EventBus)

    def write(self, data: bytes) -> None:
        self.ring.write(data)
        self.bus.publish(data)


class LogHub:
    """All of swapd's logs; see the module docstring.

    ``stdout`` receives what the terminal should show (injectable for tests), ``now``
    supplies timestamps (injectable for tests)."""

    def __init__(
        self,
        model_ids: Iterable[str] = (),
        *,
        log_level: LogLevel = LogLevel.INFO,
        log_time_format: str = "",
        log_to_stdout: LogToStdout = LogToStdout.PROXY,
        stdout: Callable[[bytes], None] = _write_real_stdout,
        now: Callable[[], dt.datetime] = _local_now,
    ) -> None:
        if log_time_format.strip().lower() not in ("", *_LAYOUTS):
            raise ValueError(f"unknown logTimeFormat {log_time_format!r}")
        self.log_level = log_level
        self.log_time_format = log_time_format
        self.log_to_stdout = log_to_stdout
        self._stdout = stdout
        self._now = now
        self._fixed: dict[str, _Log] = {PROXY: _Log(), UPSTREAM: _Log(), MUX: _Log()}
        self._models: dict[str, _Log] = {}
        for model_id in model_ids:
            self.add_model(model_id)

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        stdout: Callable[[bytes], None] = _write_real_stdout,
        now: Callable[[], dt.datetime] = _local_now,
    ) -> LogHub:
        """A hub for ``config``'s models with its ``logLevel``/``logTimeFormat``/``logToStdout``."""
        return cls(
            config.models,
            log_level=config.log_level,
            log_time_format=config.log_time_format,
            log_to_stdout=config.log_to_stdout,
            stdout=stdout,
            now=now,
        )

    # -- names ---------------------------------------------------------------------------

    def add_model(self, model_id: str) -> None:
        """Register a model's log (idempotent)."""
        self._models.setdefault(model_id, _Log())

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(self._models)

    def _get(self, name: str) -> _Log:
        """``proxy``, ``upstream``, ``mux`` (``""`` is the mux too), else a model ID."""
        if name == "":
            return self._fixed[MUX]
        if name in self._fixed:
            return self._fixed[name]
        return self._models[name]

    # -- reading -------------------------------------------------------------------------

    def history(self, name: str) -> bytes:
        """A copy of the log's retained bytes. Unknown name: ``KeyError``."""
        return self._get(name).ring.snapshot()

    @contextmanager
    def subscribe(self, name: str, maxlen: int = SUBSCRIBER_SLOTS) -> Iterator[Subscription[bytes]]:
        """Live chunks of one log, as written, as an async iterable.

        Holds at most ``maxlen`` pending chunks; beyond that the oldest are dropped
        (counted in ``Subscription.dropped``). Unknown name: ``KeyError`` on entry."""
        log = self._get(name)
        with log.bus.subscribe(maxlen=maxlen) as sub:
            yield sub

    @contextmanager
    def watch(self, name: str, fn: Callable[[bytes], None]) -> Iterator[None]:
        """Call ``fn`` synchronously with every write to log ``name`` (must not block)."""
        with self._get(name).bus.watch(fn):
            yield

    def close(self) -> None:
        """End every live subscription (shutdown / config reload)."""
        for log in (*self._fixed.values(), *self._models.values()):
            log.bus.close()

    # -- writing -------------------------------------------------------------------------

    def _to_stdout(self, source: str, data: bytes) -> None:
        mode = self.log_to_stdout
        if mode is LogToStdout.BOTH or mode.value == source:
            self._fixed[MUX].write(data)
            self._stdout(data)

    def write_proxy(self, data: bytes) -> None:
        """Raw bytes into the proxy log (and mux/stdout per ``logToStdout``)."""
        self._fixed[PROXY].write(data)
        self._to_stdout(PROXY, data)

    def write_upstream(self, data: bytes) -> None:
        """Raw bytes into the upstream log (and mux/stdout per ``logToStdout``)."""
        self._fixed[UPSTREAM].write(data)
        self._to_stdout(UPSTREAM, data)

    def write_model_line(self, model_id: str, stream: str, line: str | bytes) -> None:
        """One line a model's server printed (``stream``: ``stdout``/``stderr``/…).

        Shape matches ``swapd.supervise.instance.OutputSink``. The line is stored raw
        (a newline is added when missing) in the model's log and forwarded to upstream.
        Unknown model: ``KeyError``."""
        del stream  # raw output: the stream is not shown (10.2)
        log = self._models[model_id]
        data = line.encode("utf-8", errors="replace") if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\n"
        log.write(data)
        self.write_upstream(data)

    def clear_model(self, model_id: str) -> None:
        """Release a model's history (it stopped); subscribers stay attached."""
        self._models[model_id].ring.clear()

    def enabled(self, level: LogLevel) -> bool:
        return _LEVEL_ORDER[level] >= _LEVEL_ORDER[self.log_level]

    def format_line(self, level: LogLevel, message: str) -> bytes:
        """``<ts> [LEVEL] message\\n`` (``<ts> `` only with a ``logTimeFormat``)."""
        stamp = format_go_time(self.log_time_format, self._now())
        prefix = f"{stamp} " if stamp else ""
        return f"{prefix}[{level.value.upper()}] {message}\n".encode("utf-8", errors="replace")

    def log(
        self,
        level: LogLevel,
        message: str,
        *,
        target: Literal["proxy", "upstream"] = "proxy",
    ) -> None:
        """One of swapd's own lines, dropped when below ``logLevel``."""
        if not self.enabled(level):
            return
        data = self.format_line(level, message)
        if target == PROXY:
            self.write_proxy(data)
        else:
            self.write_upstream(data)


def _level_of(levelno: int) -> LogLevel:
    if levelno >= logging.ERROR:
        return LogLevel.ERROR
    if levelno >= logging.WARNING:
        return LogLevel.WARN
    if levelno >= logging.INFO:
        return LogLevel.INFO
    return LogLevel.DEBUG


_STDLIB_LEVEL: Final = {
    LogLevel.DEBUG: logging.DEBUG,
    LogLevel.INFO: logging.INFO,
    LogLevel.WARN: logging.WARNING,
    LogLevel.ERROR: logging.ERROR,
}


class HubHandler(logging.Handler):
    """Routes stdlib ``logging`` records into the hub's proxy log.

    The handler's level defaults to the hub's ``logLevel``; the hub filters again, so
    either can be tightened. The hub is not thread-safe: records emitted from a thread
    other than the one that created the handler are handed to trio with
    ``trio_token.run_sync_soon`` when a token is given, and dropped otherwise."""

    def __init__(
        self,
        hub: LogHub,
        level: LogLevel | None = None,
        *,
        trio_token: trio.lowlevel.TrioToken | None = None,
    ) -> None:
        super().__init__(_STDLIB_LEVEL[level if level is not None else hub.log_level])
        self.hub = hub
        self._owner = threading.get_ident()
        self._token = trio_token

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            level = _level_of(record.levelno)
            if threading.get_ident() == self._owner:
                self.hub.log(level, message)
            elif self._token is not None:
                self._token.run_sync_soon(self.hub.log, level, message)
        except Exception:
            self.handleError(record)
