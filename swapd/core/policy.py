"""The swap policy: from a frozen snapshot of every model, decide what to do next.

``plan(snapshot)`` is a pure function. The supervisor calls it after every change
(request queued or finished, process state changed, timer fired) and carries out the
``Plan``: admit waiting requests, start, wake, sleep or stop models. It never performs
I/O and takes the time from the snapshot, so it is tested without trio.

Rules (what "conflict" means comes from the config's eviction rule, ``core/eviction.py``:
llama-swap's groups or its matrix; the rest is ours):

- **Conflicts.** Model M may not run while one of its *blockers* (``rule.blockers``)
  occupies a slot (starting, ready, waking, going to sleep or stopping; asleep does not
  occupy).
- **Never evict busy or loading.** A blocker is stopped (or put to sleep, when it
  supports sleep) only when it has no request in flight and is not starting or waking.
- **Joining a load.** Every request that queued for X before X became ready (while X
  was stopped, starting or waking) *joined* X's load: X serves it, whatever else waits.
- **Batching, with a starvation bound.** A ready model X keeps admitting its own newer
  requests while a model M it blocks waits, until M's oldest waiter has been held back by
  the *ready* X for ``max_wait`` seconds: the deadline is
  ``max(M's oldest arrival, X's ready_since) + max_wait``; time spent while X was still
  loading does not count, and while X is starting or waking there is no deadline at all.
  Past the deadline X admits only requests that joined its load or are older than M's
  oldest waiter (``ticket < max(M.tickets[0], X.ready_ticket + 1)``), drains, and is
  swapped out. So a slow load is never wasted on one request (one launch per swap, not
  one per request), and a waiting model never starves.
- **Order between loads: priority, then FIFO.** Models that need loading are considered
  highest ``priority`` first, oldest waiter first among equals; but a model whose oldest
  waiter has waited ``max_wait`` since it arrived goes before every model that has not,
  in arrival order, so a higher priority overtakes a lower one for at most ``max_wait``.
  A model that cannot load yet holds its place: no later model incompatible with it
  (``not rule.compatible``) may start before it. Loads that do not conflict run at once.
- **Abandoned starts.** A model still starting with nobody waiting for it is stopped if
  another model is waiting for its slot.
- **TTL.** A ready (or asleep) model with ``ttl`` > 0, idle and with nobody waiting, is
  stopped ``ttl`` seconds after its last request finished.
- **Memory budgets** (only when ``Snapshot.budgets`` is not empty; docs/memory.md). After
  the rule's blockers, a model that wants to load asks ``core.memory.admit`` with the
  models that will remain once the stops and sleeps under way are done (everything
  holding memory except itself and the blockers that stop; blockers that sleep stay, as
  asleep). ``Fits``: it starts once its blockers are gone and the memory of models
  leaving is free already. ``Evict``: those idle models leave too (put to sleep when
  they support it and sleeping is enough, else stopped); busy, loading or stopping
  models and models holding a request older than the target's oldest are never evicted.
  ``Wait``: it keeps its place like any blocked load; the ready models with requests
  that keep it out get the starvation bound like the rule's blockers. ``NeverFits``: its
  waiters are refused at once (``Plan.refuse``). FIFO between loads holds for memory
  too: a model starts before earlier waiting loads only if it fits in the budgets
  together with them (memory's ``compatible``; counting the earlier loads that passed
  this check themselves), so it never keeps them out once the models now loaded have
  made room. A stopped model whose memory is
  not yet reported free (``ModelView.releasing``) still counts as holding it.

**Worst case for one waiter** (no failed starts or crashes). A request for M that
arrives at t waits at most

    t_prio + sum over k in ahead(M, t) of (L_k + W + D_k + S_k) + L_M

where W is ``max_wait``; ahead(M, t) holds the models that occupy a slot at t (M itself
too, if it is draining for someone else) and the models with a waiter older than this
request, each counted once (only those in M's way, directly or through a model ahead of
it, cost anything: counting them all is safe); when a higher priority than M's is in
use, also the higher-priority models asked for before t + W, and then t_prio = W (else
0). L_k is k's load (start or wake) time, D_k the time k needs to finish the requests it
admitted until its bound expired plus those that joined its load or are older than the
waiter (with a concurrency limit covering them all: its longest request), S_k its stop
(or sleep) time, L_M M's own load time. Why: later requests never go ahead of an older
one (FIFO between loads; after W not even a higher priority does), so each model ahead
takes at most one turn; a turn is its load, at most W of being ready before the bound
of the oldest waiter it holds back expires (the clock starts when it is ready or when
the waiter came, so never before t), its drain and its stop.
With memory budgets the same holds, "in M's way" now also meaning holding memory M
needs (those models get the same starvation bound); a wait for a stopped model's memory
to be reported free adds at most ``RELEASE_TIMEOUT`` (10 s) per stop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import attrs

from swapd.core import memory
from swapd.core.eviction import EvictionRule
from swapd.core.memory import Footprint, NeverFits, Occupancy, Occupant
from swapd.core.states import OCCUPYING, ModelState

__all__ = ["ModelView", "Plan", "Snapshot", "plan"]

S = ModelState


@attrs.frozen(kw_only=True)
class ModelView:
    """What the policy needs to know about one model, at one instant."""

    model_id: str
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
    ready_since: float | None = None  # when it last became ready (None: not ready)
    ready_ticket: int = 0  # the last ticket handed out when it became ready: <= joined its load
    priority: int = 0  # higher is loaded first (see the module docstring)
    footprint: Footprint | None = None  # what it holds when loaded; None: nothing known
    evict_cost: int | None = None  # the matrix's evict cost: memory evicts cheapest first
    releasing: bool = False  # stopped, but its memory is not yet reported free


@attrs.frozen(kw_only=True)
class Snapshot:
    now: float
    models: Mapping[str, ModelView]
    rule: EvictionRule
    max_wait: float = 10.0
    budgets: Mapping[str, int] = attrs.field(factory=dict)  # bytes per budgeted device


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
    draining: frozenset[str] = frozenset()  # ready models whose bound expired
    # Models whose evictions were ordered now, with the occupying set the rule judged
    # (for the matrix router's one log line per committed swap).
    swaps: Mapping[str, frozenset[str]] = attrs.field(factory=dict)
    # Models that can never fit their memory budget: their waiters fail with this message.
    refuse: Mapping[str, str] = attrs.field(factory=dict)
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
            or self.refuse
        )


def _needs_load(view: ModelView) -> bool:
    return view.state in (S.STOPPED, S.ASLEEP)


def _overdue(view: ModelView, snapshot: Snapshot) -> bool:
    return view.oldest_wait is not None and snapshot.now >= view.oldest_wait + snapshot.max_wait


def _load_order(view: ModelView, snapshot: Snapshot) -> tuple[int, int, int, str]:
    """Overdue waiters first in arrival order; then higher priority, then older."""
    first = view.tickets[0] if view.tickets else -1
    if _overdue(view, snapshot):
        return (0, 0, first, view.model_id)
    return (1, -view.priority, first, view.model_id)


def _bound_deadline(waiter: ModelView, blocker: ModelView, max_wait: float) -> float | None:
    """When ``waiter``'s oldest request has been held back by ``blocker`` long enough; None
    while ``blocker`` is not ready (loading or leaving: that time does not count)."""
    if waiter.oldest_wait is None or blocker.state is not S.READY:
        return None
    since = blocker.ready_since if blocker.ready_since is not None else waiter.oldest_wait
    return max(waiter.oldest_wait, since) + max_wait


def plan(snapshot: Snapshot) -> Plan:
    """Decide the next actions for ``snapshot``. Pure; see the module docstring."""
    models = snapshot.models
    rule = snapshot.rule
    now = snapshot.now
    wake_at = math.inf
    occupying = {m for m, v in models.items() if v.state in OCCUPYING}
    wanting = sorted(
        (v for v in models.values() if (v.waiting or v.keep_loading) and _needs_load(v)),
        key=lambda v: _load_order(v, snapshot),
    )

    # A waiter held back by a ready blocker for max_wait makes that blocker admit only
    # what joined its load or is older than the waiter, so it drains and can be swapped out.
    cutoff: dict[str, int] = {}
    for view in wanting:
        if not view.tickets:
            continue
        held_back_by = rule.blockers(view.model_id, occupying) | _memory_blockers(view, snapshot)
        for x in held_back_by:
            deadline = _bound_deadline(view, models[x], snapshot.max_wait)
            if deadline is None:
                continue
            if now >= deadline:
                older_than = max(view.tickets[0], models[x].ready_ticket + 1)
                cutoff[x] = min(cutoff.get(x, older_than), older_than)
            else:
                wake_at = min(wake_at, deadline)
    # A lower priority overtaken now is promoted once its oldest waiter is overdue.
    if wanting and len({v.priority for v in wanting}) > 1:
        for view in wanting:
            if view.oldest_wait is not None and not _overdue(view, snapshot):
                wake_at = min(wake_at, view.oldest_wait + snapshot.max_wait)

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
    swaps: dict[str, frozenset[str]] = {}
    refuse: dict[str, str] = {}
    started: set[str] = set()  # loads this plan begins: they hold memory from now on
    budgets = snapshot.budgets
    reserved: list[str] = []  # earlier loads that are waiting: nobody later overtakes them
    spoken_for: list[str] = []  # earlier loads that later ones must fit beside (memory)
    for view in wanting:
        model_id = view.model_id
        if budgets and view.footprint is not None:
            alone = memory.admit(view.footprint, (), budgets)
            if isinstance(alone, NeverFits):
                if view.waiting:
                    refuse[model_id] = f"model '{model_id}' does not fit: {alone.message}"
                continue
        if view.retry_at > now:
            wake_at = min(wake_at, view.retry_at)
            continue
        waiting_ahead = [x for x in reserved if not rule.compatible(model_id, x)]
        blockers = sorted(rule.blockers(model_id, occupying))
        reserved.append(model_id)
        if waiting_ahead:
            continue
        if budgets:
            ahead = [x for x in spoken_for if x not in started]
            if not _fits_beside(view, ahead, models, budgets):
                continue
            spoken_for.append(model_id)
        first = view.tickets[0] if view.tickets else -1
        evictable = all(
            models[x].state is S.READY
            and in_flight[x] == 0
            and not any(t < first for t in models[x].tickets)
            for x in blockers
        )
        if blockers and not evictable:
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
            continue
        make_room: tuple[list[str], list[str]] = ([], [])  # (stop, sleep) for memory
        if budgets:
            blockers_sleep = {x for x in blockers if models[x].sleep_enabled}
            memo = _Memory(
                models=models,
                in_flight=in_flight,
                started=started,
                leaving=set(stop) | set(cancel) | (set(blockers) - blockers_sleep),
                sleeping=set(sleep) | blockers_sleep,
                first=first,
            )
            # Decide on what will remain once the stops and sleeps under way have freed
            # their memory (so nothing more is evicted for memory about to be free), then
            # start only when it is free already.
            needs = view.footprint or Footprint()
            decision = memory.admit(needs, memo.occupants(model_id), budgets)
            if isinstance(decision, memory.Evict):
                make_room = memo.how_to_evict(model_id, view, decision.models, budgets)
            elif not blockers:
                if isinstance(decision, memory.Wait):
                    continue  # holds its place until busy or loading models are done
                free_now = memory.admit(needs, memo.occupants(model_id, now=True), budgets)
                if not isinstance(free_now, memory.Fits):
                    continue  # fits once the models leaving have freed their memory
        if not blockers and not make_room[0] and not make_room[1]:
            (wake if view.state is S.ASLEEP else start).append(model_id)
            occupying.add(model_id)
            started.add(model_id)
            continue
        swaps[model_id] = frozenset(occupying)
        for x in blockers:
            (sleep if models[x].sleep_enabled else stop).append(x)
        stop.extend(make_room[0])
        sleep.extend(make_room[1])

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
        swaps=swaps,
        refuse=refuse,
        wake_at=wake_at,
    )


def _fits_beside(
    view: ModelView, ahead: list[str], models: Mapping[str, ModelView], budgets: Mapping[str, int]
) -> bool:
    """Whether ``view`` fits in the budgets together with every earlier load still waiting
    (memory's ``compatible``): only then may it start before them."""
    if not ahead:
        return True
    earlier = [Occupant(x, models[x].footprint or Footprint(), Occupancy.LOADING) for x in ahead]
    return isinstance(memory.admit(view.footprint or Footprint(), earlier, budgets), memory.Fits)


def _memory_blockers(view: ModelView, snapshot: Snapshot) -> frozenset[str]:
    """The ready models with requests that keep ``view`` out for memory (``admit`` says
    ``Wait``): they get the starvation bound like the rule's blockers."""
    if not snapshot.budgets or view.footprint is None:
        return frozenset()
    models = snapshot.models
    busy = {m: v.in_flight + v.waiting for m, v in models.items()}
    first = view.tickets[0] if view.tickets else -1
    memo = _Memory(
        models=models, in_flight=busy, started=set(), leaving=set(), sleeping=set(), first=first
    )
    occupants = memo.occupants(view.model_id)
    decision = memory.admit(view.footprint, occupants, snapshot.budgets)
    if not isinstance(decision, memory.Wait):
        return frozenset()
    return frozenset(
        o.model_id
        for o in occupants
        if o.state is Occupancy.BUSY
        and models[o.model_id].state is S.READY
        and any(o.footprint.on(d) > 0 for d in decision.blocked_on)
    )


@attrs.frozen(kw_only=True)
class _Memory:
    """Who holds memory, as admission sees it, part-way through one plan."""

    models: Mapping[str, ModelView]
    in_flight: Mapping[str, int]
    started: set[str]  # loads this plan begins
    leaving: set[str]  # stopped by this plan
    sleeping: set[str]  # put to sleep by this plan
    first: int  # the target's oldest ticket

    def occupants(
        self, target: str, *, asleep: frozenset[str] = frozenset(), now: bool = False
    ) -> list[Occupant]:
        """The models holding memory besides ``target``: once the stops and sleeps under
        way are done, or (``now``) at this instant, when leaving models still hold it all."""
        held: dict[str, Occupant] = {}
        for model_id, view in self.models.items():
            if model_id == target or (model_id in self.leaving and not now):
                continue
            state = self._occupancy(model_id, view, asleep, now=now)
            if state is not None:
                footprint = view.footprint or Footprint()
                held[model_id] = Occupant(
                    model_id,
                    footprint,
                    state,
                    last_used=view.last_used,
                    evict_cost=view.evict_cost,
                )
        return list(held.values())

    def _occupancy(
        self, model_id: str, view: ModelView, asleep: frozenset[str], *, now: bool
    ) -> Occupancy | None:
        leaving = model_id in self.leaving or model_id in self.sleeping
        if model_id in self.started or (now and leaving):
            return Occupancy.LOADING
        if model_id in self.sleeping or model_id in asleep:
            return Occupancy.ASLEEP
        state = view.state
        if state is S.STOPPED:
            return Occupancy.LOADING if view.releasing and now else None
        if state is S.STOPPING:
            return Occupancy.LOADING if now else None  # its memory is about to be free
        if state is S.SLEEP_PENDING and not now:
            return Occupancy.ASLEEP
        if state is S.SHUTDOWN:
            return None
        if state is S.ASLEEP:
            return Occupancy.ASLEEP
        if state is S.READY:
            idle = self.in_flight[model_id] == 0 and not any(t < self.first for t in view.tickets)
            return Occupancy.IDLE if idle else Occupancy.BUSY
        return Occupancy.LOADING  # starting, waking, stopping, going to sleep: never evicted

    def how_to_evict(
        self,
        target: str,
        view: ModelView,
        chosen: tuple[str, ...],
        budgets: Mapping[str, int],
    ) -> tuple[list[str], list[str]]:
        """(stop, sleep) for the models ``admit`` chose: the ready ones that support sleep
        are put to sleep when that alone makes room (sleep keeps their RAM), else all stop."""
        sleepers = frozenset(
            x for x in chosen if self.models[x].state is S.READY and self.models[x].sleep_enabled
        )
        if sleepers:
            trial = attrs.evolve(self, leaving=self.leaving | (set(chosen) - sleepers))
            fits = memory.admit(
                view.footprint or Footprint(), trial.occupants(target, asleep=sleepers), budgets
            )
            if isinstance(fits, memory.Fits):
                return [x for x in chosen if x not in sleepers], sorted(sleepers)
        return list(chosen), []
