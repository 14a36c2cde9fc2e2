"""The swap policy: from a frozen snapshot of every model, decide what to do next.

``plan(snapshot)`` is a pure function. The supervisor calls it after every change
(request queued or finished, process state changed, timer fired) and carries out the
``Plan``: admit waiting requests, start, wake, sleep or stop models. It never performs
I/O and takes the time from the snapshot, so it is tested without trio.

Rules (what "conflict" means is llama-swap's, the rest is ours):

- **Conflicts.** Model M may not run while a model that conflicts with it *occupies* a
  slot (starting, ready, waking, going to sleep or stopping; asleep does not occupy).
  X conflicts with M when they share a ``swap: true`` group, or when M's group is
  ``exclusive`` and X's group is another, non-``persistent`` group.
- **Never evict busy or loading.** A conflicting model is stopped (or put to sleep, when
  it supports sleep) only when it has no request in flight and is not starting or waking.
- **Batching.** A ready model keeps admitting its own queued requests while another
  model waits for its slot, but only until the oldest such waiter has waited
  ``max_wait`` seconds; then the conflicting models admit only requests that arrived
  before it (FIFO), drain, and are swapped out. So consecutive requests for the loaded
  model are served together, and a different model never starves.
- **FIFO between loads.** Models that need loading are considered oldest waiter first;
  one that cannot load yet holds its place, and no younger model that conflicts with it
  in either direction may start before it.
- **Abandoned starts.** A model still starting with nobody waiting for it is stopped if
  another model is waiting for its slot.
- **TTL.** A ready (or asleep) model with ``ttl`` > 0, idle and with nobody waiting, is
  stopped ``ttl`` seconds after its last request finished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from swapd.core.states import OCCUPYING, ModelState

__all__ = ["GroupView", "ModelView", "Plan", "Snapshot", "conflicts_with", "plan"]

S = ModelState


@attrs.frozen(kw_only=True)
class ModelView:
    """What the policy needs to know about one model, at one instant."""

    model_id: str
    group: str
    state: ModelState = S.STOPPED
    in_flight: int = 0
    limit: int = 10
    waiting: int = 0
    oldest_wait: float | None = None  # arrival time of the oldest queued request
    tickets: tuple[int, ...] = ()  # queue order of waiting requests (global, oldest first)
    last_used: float = 0.0  # when the last request finished (or the model became ready)
    ttl: float = 0.0  # 0: never unload when idle
    sleep_enabled: bool = False
    keep_loading: bool = False  # an explicit load or preload wants it even with no waiter
    retry_at: float = 0.0  # after a failed start, no new start before this time


@attrs.frozen(kw_only=True)
class GroupView:
    swap: bool = True
    exclusive: bool = True
    persistent: bool = False


@attrs.frozen(kw_only=True)
class Snapshot:
    now: float
    models: Mapping[str, ModelView]
    groups: Mapping[str, GroupView]
    max_wait: float = 10.0


@attrs.frozen(kw_only=True)
class Plan:
    """What to do now. ``wake_at`` is when to plan again if nothing else happens."""

    admit: Mapping[str, int] = attrs.field(factory=dict)
    start: tuple[str, ...] = ()
    wake: tuple[str, ...] = ()
    sleep: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()  # swapped out to make room
    cancel: tuple[str, ...] = ()  # starts nobody waits for any more
    expire: tuple[str, ...] = ()  # idle past their TTL
    draining: frozenset[str] = frozenset()
    wake_at: float = math.inf

    @property
    def is_empty(self) -> bool:
        return not (
            self.admit
            or self.start
            or self.wake
            or self.sleep
            or self.stop
            or self.cancel
            or self.expire
        )


def conflicts_with(snapshot: Snapshot, model_id: str, other_id: str) -> bool:
    """Whether ``other_id`` may not occupy a slot while ``model_id`` runs."""
    if model_id == other_id:
        return False
    mine = snapshot.models[model_id].group
    theirs = snapshot.models[other_id].group
    if mine == theirs:
        return snapshot.groups[mine].swap
    return snapshot.groups[mine].exclusive and not snapshot.groups[theirs].persistent


def _needs_load(view: ModelView) -> bool:
    return view.state in (S.STOPPED, S.ASLEEP)


def plan(snapshot: Snapshot) -> Plan:
    """Decide the next actions for ``snapshot``. Pure; see the module docstring."""
    models = snapshot.models
    now = snapshot.now
    wake_at = math.inf
    occupying = {m for m, v in models.items() if v.state in OCCUPYING}
    wanting = sorted(
        (v for v in models.values() if (v.waiting or v.keep_loading) and _needs_load(v)),
        key=lambda v: (v.tickets[0] if v.tickets else -1, v.model_id),
    )

    # A model whose oldest waiter has waited max_wait makes everything in its way admit
    # only requests older than that waiter, so they drain and can be swapped out.
    cutoff: dict[str, int] = {}
    for view in wanting:
        if view.oldest_wait is None or not view.tickets:
            continue
        deadline = view.oldest_wait + snapshot.max_wait
        in_the_way = {x for x in occupying if conflicts_with(snapshot, view.model_id, x)}
        if now >= deadline:
            for x in in_the_way:
                cutoff[x] = min(cutoff.get(x, view.tickets[0]), view.tickets[0])
        elif in_the_way:
            wake_at = min(wake_at, deadline)

    admit: dict[str, int] = {}
    in_flight = {m: v.in_flight for m, v in models.items()}
    for model_id, view in models.items():
        if view.state is not S.READY or not view.waiting:
            continue
        limit = cutoff.get(model_id)
        eligible = view.waiting if limit is None else sum(1 for t in view.tickets if t < limit)
        free = view.limit - view.in_flight
        if free > 0 and eligible > 0:
            admit[model_id] = min(free, eligible)
            in_flight[model_id] += admit[model_id]

    start: list[str] = []
    wake: list[str] = []
    sleep: list[str] = []
    stop: list[str] = []
    cancel: list[str] = []
    expire: list[str] = []
    reserved: set[str] = set()  # older loads that are waiting: nobody younger overtakes them
    for view in wanting:
        model_id = view.model_id
        if view.retry_at > now:
            wake_at = min(wake_at, view.retry_at)
            continue
        waiting_ahead = [
            x
            for x in sorted(reserved)
            if conflicts_with(snapshot, model_id, x) or conflicts_with(snapshot, x, model_id)
        ]
        blockers = [x for x in sorted(occupying) if conflicts_with(snapshot, model_id, x)]
        reserved.add(model_id)
        first = view.tickets[0] if view.tickets else -1
        if waiting_ahead:
            continue
        evictable = all(
            models[x].state is S.READY
            and in_flight[x] == 0
            and not any(t < first for t in models[x].tickets)
            for x in blockers
        )
        if not blockers:
            (wake if view.state is S.ASLEEP else start).append(model_id)
            occupying.add(model_id)
        elif evictable:
            for x in blockers:
                (sleep if models[x].sleep_enabled else stop).append(x)
        else:
            for x in blockers:
                other = models[x]
                abandoned = (
                    other.state is S.STARTING
                    and not other.waiting
                    and not other.keep_loading
                    and in_flight[x] == 0
                )
                if abandoned:
                    cancel.append(x)

    evicting = set(stop) | set(sleep) | set(cancel)
    for model_id, view in models.items():
        idle = in_flight[model_id] == 0 and not view.waiting and not view.keep_loading
        if view.ttl <= 0 or not idle or model_id in evicting:
            continue
        if view.state in (S.READY, S.ASLEEP):
            deadline = view.last_used + view.ttl
            if now >= deadline:
                expire.append(model_id)
            else:
                wake_at = min(wake_at, deadline)

    return Plan(
        admit=admit,
        start=tuple(start),
        wake=tuple(wake),
        sleep=tuple(dict.fromkeys(sleep)),
        stop=tuple(dict.fromkeys(stop)),
        cancel=tuple(dict.fromkeys(cancel)),
        expire=tuple(expire),
        draining=frozenset(cutoff),
        wake_at=wake_at,
    )
