"""A model's lifecycle: its states, the events that move it, and the one transition table.

Rules of this module:
- every legal transition is a row of ``TRANSITIONS``; ``apply`` is the only way to move;
- an illegal (state, event) pair raises ``InvalidTransition`` and changes nothing;
- in-flight request counts, queues and timers are not states (the supervisor keeps them);
- no I/O, no trio, no clock.

Theory of operation. A model starts ``stopped``. A *start* spawns its process
(``starting``); the process answering its health check makes it ``ready``. A swap may
put a sleep-capable model to sleep (``sleep_pending`` while the sleep calls run, then
``asleep``: the process lives but holds no GPU memory); a request wakes it (``waking`` →
``ready``). Any *stop* goes through ``stopping`` and ends ``stopped`` once the whole
process group is gone (*reaped*). A process that exits on its own (*exited*) lands in
``stopped`` from wherever it was. ``shutdown`` is terminal: swapd is exiting and will
not start this model again.

::

    stopped ──start──► starting ──healthy──► ready ──sleep──► sleep_pending ──slept──► asleep
       ▲                  │                    │                   │                    │
       │            failed/stop              stop            sleep_failed/stop         wake
       │                  ▼                    ▼                   ▼                    ▼
       └─────reaped──── stopping ◄─────────────┴───────────────────┴──wake_failed──── waking
                                                                                        │
    (any running state) ──exited──► stopped      stopped ──shutdown──► shutdown      woke──► ready
"""

from __future__ import annotations

import enum

__all__ = [
    "OCCUPYING",
    "RUNNING",
    "TRANSITIONS",
    "Event",
    "InvalidTransition",
    "ModelState",
    "apply",
]


class ModelState(enum.StrEnum):
    """What a model's process is doing. The values are the wire names (llama-swap's)."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    SLEEP_PENDING = "sleepPending"
    ASLEEP = "asleep"
    WAKING = "waking"
    SHUTDOWN = "shutdown"


class Event(enum.StrEnum):
    START = "start"  # spawn the process
    HEALTHY = "healthy"  # the health check passed
    FAILED = "failed"  # the start failed (spawn error, timeout); the process is being stopped
    STOP = "stop"  # stop requested (swap, TTL, unload, shutdown, failed sleep/wake)
    REAPED = "reaped"  # the process group is gone after a stop
    EXITED = "exited"  # the process exited on its own (crash or clean exit)
    SLEEP = "sleep"  # put to sleep instead of stopping
    SLEPT = "slept"
    SLEEP_FAILED = "sleep_failed"
    WAKE = "wake"
    WOKE = "woke"
    WAKE_FAILED = "wake_failed"
    SHUTDOWN = "shutdown"  # swapd is exiting; never start again


S = ModelState
E = Event

#: (state, event) → next state. The whole lifecycle; nothing else moves a model.
TRANSITIONS: dict[tuple[ModelState, Event], ModelState] = {
    (S.STOPPED, E.START): S.STARTING,
    (S.STOPPED, E.SHUTDOWN): S.SHUTDOWN,
    (S.STARTING, E.HEALTHY): S.READY,
    (S.STARTING, E.FAILED): S.STOPPING,
    (S.STARTING, E.STOP): S.STOPPING,
    (S.STARTING, E.EXITED): S.STOPPED,
    (S.READY, E.STOP): S.STOPPING,
    (S.READY, E.SLEEP): S.SLEEP_PENDING,
    (S.READY, E.EXITED): S.STOPPED,
    (S.STOPPING, E.REAPED): S.STOPPED,
    (S.STOPPING, E.EXITED): S.STOPPED,
    (S.SLEEP_PENDING, E.SLEPT): S.ASLEEP,
    (S.SLEEP_PENDING, E.SLEEP_FAILED): S.STOPPING,
    (S.SLEEP_PENDING, E.STOP): S.STOPPING,
    (S.SLEEP_PENDING, E.EXITED): S.STOPPED,
    (S.ASLEEP, E.WAKE): S.WAKING,
    (S.ASLEEP, E.STOP): S.STOPPING,
    (S.ASLEEP, E.EXITED): S.STOPPED,
    (S.WAKING, E.WOKE): S.READY,
    (S.WAKING, E.WAKE_FAILED): S.STOPPING,
    (S.WAKING, E.STOP): S.STOPPING,
    (S.WAKING, E.EXITED): S.STOPPED,
}

#: States in which a process exists (something to stop on shutdown).
RUNNING = frozenset({S.STARTING, S.READY, S.STOPPING, S.SLEEP_PENDING, S.ASLEEP, S.WAKING})

#: States that hold the model's group slot and GPU memory. Asleep models do not: a
#: sleeping model has released its memory, so it never blocks another from loading.
OCCUPYING = frozenset({S.STARTING, S.READY, S.STOPPING, S.SLEEP_PENDING, S.WAKING})


class InvalidTransition(Exception):
    """``event`` is not allowed in ``state``; the state is unchanged."""

    def __init__(self, state: ModelState, event: Event) -> None:
        super().__init__(f"cannot {event.value} a model that is {state.value}")
        self.state = state
        self.event = event


def apply(state: ModelState, event: Event) -> ModelState:
    """The state after ``event``, or InvalidTransition."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
