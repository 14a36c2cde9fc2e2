"""The demo upstream, plus a timeline of its own start-up, for ``swap_latency.py``.

::

    python benchmarks/timed_upstream.py --events FILE [--jitter S] -- <demo upstream flags>

Runs ``swapd.testing.upstream`` unchanged in this process and appends one JSON line per
event to FILE (``{"pid": ..., "event": ..., "t": ...}``), ``t`` being ``time.monotonic()``
(CLOCK_MONOTONIC, the same clock in every process of the machine, so the benchmark can
compare it with its own readings):

* ``exec``: this script started running (the interpreter is up; trio is not imported yet);
* ``listening``: the upstream printed its ``listening on`` line;
* ``ready``: the exact moment its ``--loading-delay`` ended, i.e. when ``/health`` started
  to be able to answer 200. The upstream keeps that moment in trio's clock
  (``Upstream.ready_at``); it is converted by reading both clocks at the same instant;
* ``probe``: every health request received (so the benchmark can show swapd's poll
  schedule);
* ``health_ok``: the first health request answered 200;
* ``first_request``: the first ``/v1/chat/completions`` request arrived (fully read).

``--jitter S`` adds a random 0..S seconds to the upstream's ``--loading-delay``, so that
the moment it becomes ready falls anywhere in swapd's health-poll period (a real model's
load time bears no relation to swapd's probe schedule; without jitter the same phase would
be measured every time). The ``ready`` event records the delay actually used.

The upstream logs no timestamps, hence this wrapper: it wraps ``say`` and
``Upstream.dispatch`` of the demo upstream module (module attributes looked up at call
time) and changes nothing else. One ``os.write`` of a short line per event, so the cost on
the timed path is a few microseconds.
"""

from __future__ import annotations

import time

EXEC_TIME = time.monotonic()  # before the heavier imports below

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import trio  # noqa: E402

from swapd.testing import upstream  # noqa: E402

CHAT_PATH = "/v1/chat/completions"


class Timeline:
    """Appends events to a file; ``once`` events are written the first time only."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._seen: set[str] = set()
        self._pid = os.getpid()

    def record(self, event: str, t: float, *, once: bool = True) -> None:
        if once:
            if event in self._seen:
                return
            self._seen.add(event)
        line = json.dumps({"pid": self._pid, "event": event, "t": t}) + "\n"
        os.write(self._fd, line.encode())


def install(timeline: Timeline) -> None:
    """Wrap the demo upstream's ``say`` and ``Upstream.dispatch`` to record events."""
    original_say = upstream.say
    original_dispatch = upstream.Upstream.dispatch

    def say(line: str, *, err: bool = False) -> None:
        if " listening on " in line:
            timeline.record("listening", time.monotonic())
        original_say(line, err=err)

    def dispatch(self: upstream.Upstream, req: Any) -> Any:
        now = time.monotonic()
        # ready_at is in trio's clock; shift it onto CLOCK_MONOTONIC, both read just now.
        timeline.record("ready", self.ready_at - trio.current_time() + time.monotonic())
        if req.path == self.opts.health_path:
            timeline.record("probe", now, once=False)
            if not self.loading():
                timeline.record("health_ok", now)
        elif req.path == CHAT_PATH:
            timeline.record("first_request", now)
        return original_dispatch(self, req)

    upstream.say = say
    upstream.Upstream.dispatch = dispatch  # type: ignore[method-assign]


def with_jitter(flags: list[str], jitter: float) -> list[str]:
    """``flags`` with ``--loading-delay`` raised by a random 0..``jitter`` seconds."""
    if jitter <= 0:
        return flags
    flags = list(flags)
    extra = random.uniform(0.0, jitter)
    if "--loading-delay" in flags:
        index = flags.index("--loading-delay") + 1
        flags[index] = f"{float(flags[index]) + extra:.6f}"
    else:
        flags += ["--loading-delay", f"{extra:.6f}"]
    return flags


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: timed_upstream.py --events FILE [--jitter S] -- <flags>", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="timed_upstream.py")
    parser.add_argument("--events", required=True, help="file the timeline is appended to")
    parser.add_argument("--jitter", type=float, default=0.0, help="random extra loading delay")
    args = parser.parse_args(argv[:split])
    timeline = Timeline(args.events)
    timeline.record("exec", EXEC_TIME)
    install(timeline)
    return upstream.main(with_jitter(argv[split + 1 :], args.jitter))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
