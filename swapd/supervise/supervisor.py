"""The supervisor: admits requests to models and swaps models in and out.

One scheduling task owns every decision. Callers never change a model's state: a request
*asks* for a model (``acquire``), waits in that model's queue, and is *granted* a
``Lease`` once the model is ready and has a free slot; releasing the lease ends the
request. After every change — a request queued, abandoned or finished, a runner's state
moving, a timer — the scheduling task takes a snapshot, asks ``core.policy.plan`` what to
do, and tells the runners. Because trio runs one task at a time and all bookkeeping here
is synchronous, no locks are needed and no decision can interleave with another.

Guarantees (tested in tests/test_supervisor*.py and by property tests):
- a request is granted, or fails with a clear error; it never waits forever: start
  failures fail its queue, shutdown fails everything, and waits are bounded by the
  caller's own cancellation (a client disconnect removes it from the queue at once);
- a model is never evicted with requests in flight unless unloaded explicitly;
- the config's eviction rule (groups, ``core/eviction.py``) holds at every instant, and
  requests are batched by model within the starvation bound (see ``core/policy.py``);
- ``run`` never returns with a model process alive;
- a config reload (``reconfigure``) never cuts a request: models whose process settings
  changed, or that were removed, finish their in-flight requests and are stopped when
  idle; requests that arrive meanwhile wait for the restarted model;
- with ``memory.budgets`` (docs/memory.md), the footprints of the models holding memory
  never exceed a budget as far as footprints are known: each model's footprint is chosen
  by ``core.memory.choose_footprint`` (declared, learned peak, estimate), running models
  are measured every ``MEASURE_EVERY`` seconds (``supervise/memory_watch.py``), and a
  stopped model counts as holding its memory until the devices report it free (bounded
  by ``RELEASE_TIMEOUT``); a model that can never fit fails its requests at once
  (``DoesNotFit``, 507); a start that runs out of memory (``core/oom.py``) raises the
  model's footprint and is retried once, and its error then says so.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Mapping, Set
from typing import TYPE_CHECKING

import attrs
import trio

from swapd.config.diff import ConfigDiff
from swapd.config.model import DEFAULT_GROUP, Config, ModelConfig
from swapd.core import eviction, policy
from swapd.core.events import (
    ModelRestart,
    ModelStateChanged,
    RequestQueued,
    RequestsChanged,
    ShuttingDown,
)
from swapd.core.keepalive import TtlOverrides
from swapd.core.matrix import Matrix
from swapd.core.memory import RAM, Footprint, budgets_of, choose_footprint, format_size
from swapd.core.oom import OutOfMemory, classify
from swapd.core.restart import CrashHistory
from swapd.core.states import OCCUPYING, RUNNING, ModelState
from swapd.errors import (
    Conflict,
    DoesNotFit,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    StartFailed,
    retry_after_for,
)
from swapd.observe import devices
from swapd.observe.bus import EventBus
from swapd.observe.devices import DeviceMemory
from swapd.supervise import memory_report, memory_watch
from swapd.supervise.instance import Launcher
from swapd.supervise.memory_watch import FootprintBook, HostProbe, MemoryProbe
from swapd.supervise.runner import Runner

if TYPE_CHECKING:
    from swapd.supervise.kvcache import KvCacheKeeper

__all__ = ["Lease", "ModelStatistics", "Supervisor"]

S = ModelState
_log = logging.getLogger(__name__)
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
#: A start that ran out of memory: its footprint is raised at least this much (docs/memory.md).
OOM_RAISE = 1.25


@attrs.define(eq=False)
class _Waiter:
    model_id: str
    arrived: float
    ticket: int  # global arrival order; ties in time never make two requests equal
    granted: trio.Event = attrs.field(factory=trio.Event)
    error: BaseException | None = None
    is_load: bool = False


@attrs.define(eq=False)
class Lease:
    """Permission to send one request to a ready model. Release it exactly once."""

    model_id: str
    proxy: str
    _supervisor: Supervisor
    released: bool = False

    def release(self) -> None:
        """End the request (idempotent). Never blocks."""
        if not self.released:
            self.released = True
            self._supervisor._release(self)


@attrs.define(eq=False)
class _Slot:
    """The supervisor's bookkeeping for one model."""

    runner: Runner
    group: str
    queue: collections.deque[_Waiter] = attrs.field(factory=collections.deque)
    in_flight: int = 0
    last_used: float = 0.0
    failures: int = 0
    retry_at: float = 0.0
    last_failure: StartFailed | None = None
    # A reload changed the process settings: restart with this spec once idle.
    next_spec: ModelConfig | None = None
    removed: bool = False  # a reload removed the model: stop it once idle, then forget it
    crashes: CrashHistory = attrs.field(factory=CrashHistory)  # kept models only
    restart: trio.CancelScope | None = None  # a scheduled restart (an unload cancels it)
    ready_since: float | None = None  # when the runner last became ready
    ready_ticket: int = 0  # the last ticket handed out then: older requests joined the load
    bound_expired: bool = False  # the starvation bound cut it off since it became ready
    pgid: int | None = None  # its process group, while it has one (and just after)
    pids: list[int] = attrs.field(factory=list)  # the group's members at the last measurement
    releasing: bool = False  # stopped; its memory is not yet reported free
    oom_retry: str | None = None  # what the start that ran out of memory led to (retrying)

    @property
    def retiring(self) -> bool:
        return self.next_spec is not None or self.removed


@attrs.frozen(kw_only=True)
class ModelStatistics:
    model: str
    group: str
    state: ModelState
    pid: int | None
    in_flight: int
    waiting: int
    launches: int
    last_error: str | None
    idle_deadline: float | None  # when TTL will unload it, in trio time
    crashes: int = 0  # recent crashes of a kept model (see core/restart.py)
    gave_up: bool = False  # a kept model crashed too often; not restarted until asked for


@attrs.frozen
class _WithLeaving:
    """The config's eviction rule, plus the models a reload removed that still finish
    their requests: they keep the conflicts of the config they came from (``before``),
    and block every model that config did not know, since nothing says they may share."""

    rule: eviction.EvictionRule
    known: frozenset[str]
    before: _WithLeaving | None = None

    def blockers(self, target: str, occupying: Set[str]) -> frozenset[str]:
        if target not in self.known:
            return frozenset(occupying) - {target}
        mine = frozenset(m for m in occupying if m in self.known)
        leaving = frozenset(occupying) - mine
        result = self.rule.blockers(target, mine)
        if leaving:
            result |= leaving if self.before is None else self.before.blockers(target, leaving)
        return result

    def compatible(self, a: str, b: str) -> bool:
        if a in self.known and b in self.known:
            return self.rule.compatible(a, b)
        return a == b


def _budget_decides_default_group(config: Config) -> Config:
    """With ``memory.budgets``, the implicit ``(default)`` group (models in no group) neither
    swaps nor is exclusive: the budget decides how many of them run together. Groups the
    config declares stay hard constraints on top (docs/memory.md)."""
    default = config.groups.get(DEFAULT_GROUP)
    if not config.memory.budgets or default is None:
        return config
    relaxed = attrs.evolve(default, swap=False, exclusive=False)
    return attrs.evolve(config, groups={**config.groups, DEFAULT_GROUP: relaxed})


async def _open_sheltered_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery that only its own cancel scope cancels (see ``Supervisor.run``)."""
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()


class Supervisor:
    """See the module docstring. Build it, then ``await nursery.start(supervisor.run)``."""

    def __init__(
        self,
        config: Config,
        launcher: Launcher,
        *,
        bus: EventBus[object] | None = None,
        max_wait: float | None = None,
        queue_limit: int | None = None,
        shutdown_timeout: float = 30.0,
        memory_probe: MemoryProbe | None = None,
        kv_cache: KvCacheKeeper | None = None,
    ) -> None:
        self.config = config
        self.kv_cache = kv_cache  # docs/kvcache.md
        self.bus: EventBus[object] = bus if bus is not None else EventBus()
        self._launcher = launcher
        self._max_wait = float(config.max_swap_wait) if max_wait is None else max_wait
        self._queue_limit = config.max_queued_requests if queue_limit is None else queue_limit
        self._shutdown_timeout = shutdown_timeout
        self._slots: dict[str, _Slot] = {}
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()
        self._moved = trio.Event()  # set (and replaced) whenever a runner changes state
        self._closing = False
        self._tickets = 0
        # How often a ready model stopped taking new requests because another model's
        # waiter reached maxSwapWait (each one can cost a launch; see core/policy.py).
        self.bound_expirations = 0
        # Per-model TTLs set by Ollama's keep_alive (swapd/web/ollama_api.py writes them;
        # core/keepalive.py says what the values mean).
        self.ttl_overrides = TtlOverrides()
        # Seconds a loading model is predicted to still need (the daemon sets it from
        # observe/progress.py): a 429 for a full wait queue says when to retry.
        self.load_eta: Callable[[str], float | None] = lambda model_id: None
        self._rule: _WithLeaving | None = None
        self._set_groups(config)
        # Memory admission (docs/memory.md): the probe is made at start when budgets exist
        # and none was given; the budgets and estimates are refreshed on every reload.
        self._probe = memory_probe
        self.footprints = FootprintBook()
        self.budgets: dict[str, int] = {}
        self._estimates: dict[str, Footprint | None] = {}
        self._measuring = False
        # Footprints raised after a start ran out of memory, by (model, cmd): a floor
        # under whatever footprint is chosen (in memory only).
        self._oom_floor: dict[tuple[str, str], Footprint] = {}
        # The last memory report published (``memory_report.py``); None without budgets.
        self.memory_report: dict[str, memory_report.DeviceReport] | None = None

    def _set_groups(self, config: Config, *, leaving: bool = False) -> None:
        """Take ``config``'s groups, eviction rule and priorities; with ``leaving``, models
        it removed still run and keep the old rule's conflicts."""
        self._persistent = {gid for gid, g in config.groups.items() if g.persistent}
        self._group_of = {m: gid for gid, g in config.groups.items() for m in g.members}
        before = self._rule if leaving else None
        rule = eviction.rule_for(_budget_decides_default_group(config))
        self._rule = _WithLeaving(rule, frozenset(config.models), before)
        self._priority = {m: eviction.priority_of(config, m) for m in config.models}

    # --- lifetime -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Supervise until cancelled, then stop every model (bounded) before returning.

        The runners and the background tasks live in a nursery that the caller's
        cancellation does not reach: here, every model is first asked to stop (within
        ``shutdown_timeout``), and only then is that nursery cancelled. Cancelled along
        with this task, a runner could close its nursery in the instant a start was
        issued (a crashed persistent model coming back), and the stop that followed
        found it closed (tests/test_supervisor_shutdown.py)."""
        async with trio.open_nursery() as outer:
            nursery = self._nursery = await outer.start(_open_sheltered_nursery)
            try:
                await self._refresh_memory(self.config)
                for model_id, spec in self.config.models.items():
                    await self._add_slot(model_id, spec)
                task_status.started(self)
                await self._schedule()
            finally:
                try:
                    with trio.CancelScope(shield=True):
                        await self._stop_everything()
                finally:
                    nursery.cancel_scope.cancel(reason="supervisor stopped")

    async def _add_slot(self, model_id: str, spec: ModelConfig) -> None:
        assert self._nursery is not None
        runner = Runner(
            model_id,
            spec,
            self._launcher,
            health_timeout=self.config.health_check_timeout,
            on_change=self._runner_changed,
            kv_cache=self.kv_cache,
        )
        await self._nursery.start(runner.run)
        self._slots[model_id] = _Slot(runner=runner, group=self._group_of[model_id])

    @property
    def closing(self) -> bool:
        """swapd is shutting down: no new requests are taken."""
        return self._closing

    def refuse_new(self) -> None:
        """Shutting down: fail waiting requests and refuse new ones (503 with Retry-After)
        at once, while requests in flight finish."""
        if not self._closing:
            self._closing = True
            self.bus.publish(ShuttingDown())
        for slot in self._slots.values():
            self._fail_queue(slot, ModelUnavailable("swapd is shutting down", retry_after=5))

    async def _stop_everything(self) -> None:
        self.refuse_new()
        with trio.move_on_after(self._shutdown_timeout):
            async with trio.open_nursery() as nursery:
                for slot in self._slots.values():
                    nursery.start_soon(slot.runner.shutdown)
        # Past the bound, leaving the runners' nurseries still kills every process group.

    async def _schedule(self) -> None:
        while True:
            self._changed = trio.Event()
            self._retire()
            plan = policy.plan(self._snapshot())
            self._count_bound_expirations(plan)
            if not plan.is_empty:
                self._carry_out(plan)
                continue
            with trio.move_on_at(plan.wake_at):
                await self._changed.wait()

    def _kick(self) -> None:
        self._changed.set()

    # --- reload -------------------------------------------------------------------------

    async def reconfigure(self, config: Config, diff: ConfigDiff) -> None:
        """Switch to ``config``; ``diff`` says what changed (see ``config.diff``).

        Returns once new models can take requests; changed and removed models are
        stopped in the background as soon as their in-flight requests end."""
        self.config = config
        leaving = bool(diff.removed) or any(slot.removed for slot in self._slots.values())
        self._set_groups(config, leaving=leaving)
        self._max_wait = float(config.max_swap_wait)
        self._queue_limit = config.max_queued_requests
        self._launcher.reconfigure(config)
        await self._refresh_memory(config)
        if self.kv_cache is not None:
            self.kv_cache.reconfigure(config)
        for model_id, slot in self._slots.items():
            slot.runner.health_timeout = config.health_check_timeout
            if model_id in config.models:
                slot.group = self._group_of[model_id]
        for model_id in diff.updated:
            slot = self._slots[model_id]
            if slot.next_spec is not None:
                slot.next_spec = config.models[model_id]
            else:
                slot.runner.spec = config.models[model_id]
        for model_id in diff.changed:
            self._slots[model_id].next_spec = config.models[model_id]
        for model_id in diff.removed:
            slot = self._slots[model_id]
            slot.removed = True
            slot.next_spec = None
            self._fail_queue(slot, ModelNotFound(f"model '{model_id}' was removed from the config"))
        for model_id in diff.added:
            existing = self._slots.get(model_id)
            if existing is not None:  # removed by an earlier reload, still draining
                existing.removed = False
                existing.next_spec = config.models[model_id]
            else:
                await self._add_slot(model_id, config.models[model_id])
        self._kick()

    def _retire(self) -> None:
        """Stop changed and removed models once idle; restart or forget them once stopped."""
        for model_id, slot in list(self._slots.items()):
            if not slot.retiring:
                continue
            runner = slot.runner
            if runner.state is S.STOPPED:
                if slot.removed:
                    del self._slots[model_id]
                    runner.close()
                else:
                    assert slot.next_spec is not None
                    runner.spec, slot.next_spec = slot.next_spec, None
                    slot.failures, slot.retry_at, slot.last_failure = 0, 0.0, None
            elif slot.in_flight == 0 and runner.state is not S.STOPPING:
                why = "removed from the config" if slot.removed else "its settings changed"
                runner.stop(why)

    # --- requests -----------------------------------------------------------------------

    async def acquire(self, model_id: str) -> Lease:
        """Wait until ``model_id`` can take a request; return the lease for it.

        Raises QueueFull (429) when too many requests already wait, StartFailed (502)
        when the model fails to start, ModelUnavailable (503) when swapd is shutting down
        or the model is backing off after failed starts. Cancelling the caller (a client
        disconnect) leaves the queue at once.
        """
        slot = self._slots.get(model_id)
        if slot is None or slot.removed:
            raise ModelNotFound(f"model '{model_id}' is not in the config")
        if slot.crashes.gave_up:  # asked for again: try afresh
            slot.crashes.reset()
        return await self._acquire(slot, model_id)

    async def _acquire(self, slot: _Slot, model_id: str) -> Lease:
        self._check_admissible(slot)
        if self._grantable_now(slot):
            # What the scheduler would decide, without the round trip through it (two
            # task switches and a snapshot of every model, per request).
            await trio.lowlevel.checkpoint_if_cancelled()
            slot.in_flight += 1
            self._requests_changed(slot)
            return Lease(model_id, slot.runner.spec.proxy, self)
        if len(slot.queue) >= self._queue_limit:
            raise QueueFull(
                f"too many requests are waiting for model '{model_id}' "
                f"({self._queue_limit}); retry later",
                retry_after=retry_after_for(self.load_eta(model_id)),
            )
        self._tickets += 1
        waiter = _Waiter(model_id, trio.current_time(), self._tickets)
        slot.queue.append(waiter)
        self.bus.publish(RequestQueued(model=model_id, depth=len(slot.queue)))
        self._kick()
        try:
            await waiter.granted.wait()
        except BaseException:
            if waiter in slot.queue:
                slot.queue.remove(waiter)
                self._requests_changed(slot)
                self._kick()
            elif waiter.error is None:  # granted in the same instant we were cancelled
                self._release_slot(slot)
            raise
        if waiter.error is not None:
            raise waiter.error
        return Lease(model_id, slot.runner.spec.proxy, self)

    def _grantable_now(self, slot: _Slot) -> bool:
        """The policy would admit a request for ``slot`` at once: its model is ready with
        room, and nobody waits anywhere (so no swap or drain is pending that a new
        request could delay, see policy.py)."""
        return (
            slot.runner.state is S.READY
            and not slot.retiring
            and slot.in_flight < slot.runner.spec.effective_concurrency_limit
            and not any(other.queue for other in self._slots.values())
        )

    def recheck(self, model_id: str) -> None:
        """A request could not connect to ``model_id``: see ``Runner.recheck``."""
        slot = self._slots.get(model_id)
        if slot is not None:
            slot.runner.recheck()

    async def load(self, model_id: str) -> None:
        """Make ``model_id`` ready (an explicit load or a preload); no request is sent."""
        lease = await self.acquire(model_id)
        lease.release()

    async def unload(self, model_id: str | None = None) -> None:
        """Stop one model, or all, now; return once they are stopped.

        In-flight requests to them are cut off. Requests still waiting start the model
        again afterwards."""
        targets = [model_id] if model_id is not None else list(self._slots)
        stopped = []
        for target in targets:
            slot = self._slots[target]
            if slot.restart is not None:
                slot.restart.cancel(reason="unloaded")  # an unload is meant to last
            runner = slot.runner
            runner.stop("unloaded")
            # Wait for *this* stop only: a request may start the model again meanwhile.
            stopped.append(runner.stopped)
        self._kick()
        for event in stopped:
            await event.wait()

    async def sleep(self, model_id: str) -> None:
        """Put an idle, ready model to sleep now; return once it is asleep.

        Raises Conflict when the model cannot sleep (no sleep mode), is not ready, or
        has requests in flight or waiting. A failed sleep stops the model instead; its
        state then says ``stopped`` and its ``last_error`` why."""
        slot = self._slots.get(model_id)
        if slot is None or slot.removed:
            raise ModelNotFound(f"model '{model_id}' is not in the config")
        runner = slot.runner
        if not runner.spec.sleep_enabled:
            raise Conflict(f"model '{model_id}' has no sleep mode configured")
        if runner.state is S.ASLEEP:
            return
        if runner.state is not S.READY:
            raise Conflict(f"model '{model_id}' is {runner.state.value}, not ready")
        if slot.in_flight or slot.queue:
            raise Conflict(
                f"model '{model_id}' is busy ({slot.in_flight} in flight, "
                f"{len(slot.queue)} waiting); try again when it is idle"
            )
        runner.sleep("requested")
        await self._wait_while(runner, S.SLEEP_PENDING)

    async def _wait_while(self, runner: Runner, state: ModelState) -> None:
        while runner.state is state:
            await self._moved.wait()

    def kill_all(self) -> None:
        """SIGKILL every model's process group now (a second Ctrl-C)."""
        for slot in self._slots.values():
            slot.runner.kill()

    def _check_admissible(self, slot: _Slot) -> None:
        if self._closing:
            raise ModelUnavailable("swapd is shutting down", retry_after=5)
        now = trio.current_time()
        if slot.retry_at > now and slot.last_failure is not None:
            wait = math.ceil(slot.retry_at - now)
            raise ModelUnavailable(
                f"model '{slot.runner.model_id}' failed to start {slot.failures} time(s) in a "
                f"row; next attempt in {wait}s. Last error: {slot.last_failure}",
                retry_after=wait,
            )

    def _release(self, lease: Lease) -> None:
        self._release_slot(self._slots[lease.model_id])

    def _release_slot(self, slot: _Slot) -> None:
        slot.in_flight -= 1
        slot.last_used = trio.current_time()
        self._requests_changed(slot)
        if self._release_matters(slot):
            self._kick()

    def _release_matters(self, slot: _Slot) -> bool:
        """Whether a request's end can change the plan: its model went idle (a TTL to
        arm, a stop or sleep waiting for the drain), it is retiring, or someone waits.
        Otherwise (a busy ready model, nobody waiting: every request under steady load)
        the scheduler is left asleep; re-planning then cost ~40 µs a request."""
        return (
            slot.in_flight == 0
            or slot.retiring
            or slot.runner.state is not S.READY
            or any(other.queue for other in self._slots.values())
        )

    def _requests_changed(self, slot: _Slot) -> None:
        self.bus.publish(
            RequestsChanged(
                model=slot.runner.model_id, in_flight=slot.in_flight, waiting=len(slot.queue)
            )
        )

    # --- carrying out plans -------------------------------------------------------------

    def _snapshot(self) -> policy.Snapshot:
        models = {}
        for model_id, slot in self._slots.items():
            queue = () if slot.retiring else slot.queue  # they wait for the new process
            oldest = queue[0].arrived if queue else None
            spec = slot.runner.spec
            state = slot.runner.state
            models[model_id] = policy.ModelView(
                model_id=model_id,
                state=state,
                in_flight=slot.in_flight,
                limit=spec.effective_concurrency_limit,
                waiting=len(queue),
                oldest_wait=oldest,
                tickets=tuple(w.ticket for w in queue),
                last_used=slot.last_used,
                ttl=self.ttl_overrides.ttl(model_id, float(max(spec.ttl, 0))),
                sleep_enabled=spec.sleep_enabled,
                retry_at=slot.retry_at,
                ready_since=slot.ready_since if state is S.READY else None,
                ready_ticket=slot.ready_ticket,
                priority=self._priority.get(model_id, 0),
                footprint=self.footprint(model_id) if self.budgets else None,
                evict_cost=self._evict_cost(model_id),
                releasing=slot.releasing,
            )
        assert self._rule is not None
        return policy.Snapshot(
            now=trio.current_time(),
            models=models,
            rule=self._rule,
            max_wait=self._max_wait,
            budgets=self.budgets,
        )

    def _count_bound_expirations(self, plan: policy.Plan) -> None:
        for model_id in plan.draining:
            slot = self._slots[model_id]
            if not slot.bound_expired:
                slot.bound_expired = True
                self.bound_expirations += 1

    def _carry_out(self, plan: policy.Plan) -> None:
        self._log_swaps(plan)
        for model_id, count in plan.admit.items():
            slot = self._slots[model_id]
            for _ in range(count):
                waiter = slot.queue.popleft()
                slot.in_flight += 1
                waiter.granted.set()
            self._requests_changed(slot)
        for model_id, message in plan.refuse.items():
            self._fail_queue(self._slots[model_id], DoesNotFit(message))
        for model_id in plan.stop:
            self._slots[model_id].runner.stop("swapped out")
        for model_id in plan.cancel:
            self._slots[model_id].runner.stop("start abandoned: nobody waits for it")
        for model_id in plan.expire:
            runner = self._slots[model_id].runner
            ttl = self.ttl_overrides.ttl(model_id, float(max(runner.spec.ttl, 0)))
            runner.stop(f"idle for its ttl of {ttl:g}s")
        for model_id in plan.sleep:
            self._slots[model_id].runner.sleep("swapped out")
        for model_id in plan.start:
            self._slots[model_id].runner.start("requested")
        for model_id in plan.wake:
            self._slots[model_id].runner.wake("requested")

    def _evict_cost(self, model_id: str) -> int | None:
        """The matrix's evict cost of ``model_id`` (memory admission evicts the cheapest
        idle models first, then the least recently used); None with groups."""
        rule = self._rule.rule if self._rule is not None else None
        return rule.cost_of(model_id) if isinstance(rule, Matrix) else None

    def _log_swaps(self, plan: policy.Plan) -> None:
        """The matrix router's INFO line for each swap committed now (llama-swap's format)."""
        rule = self._rule.rule if self._rule is not None else None
        if not isinstance(rule, Matrix):
            return
        for target, occupying in plan.swaps.items():
            _log.info("%s", rule.choose(target, occupying).describe())

    def _runner_changed(self, change: ModelStateChanged, error: StartFailed | None) -> None:
        slot = self._slots.get(change.model)
        if slot is not None:
            self._track_memory(slot, change)
            if change.new is S.READY:
                slot.ready_since = trio.current_time()
                slot.ready_ticket = self._tickets
                slot.bound_expired = False
                slot.failures = 0
                slot.last_failure = None
                slot.last_used = trio.current_time()
                slot.oom_retry = None
            elif change.new is S.STOPPED and error is not None and change.old is S.STOPPING:
                if self._retry_out_of_memory(slot):
                    self._finish_change(change)
                    return  # its requests stay queued: the scheduler starts it again
                error = self._after_oom_retry(slot, error)
                # A failed start: everyone waiting for it gets the error, and the next
                # attempt waits a little longer each time.
                slot.failures += 1
                slot.last_failure = error
                backoff = min(BACKOFF_FIRST * 2 ** (slot.failures - 1), BACKOFF_MAX)
                slot.retry_at = trio.current_time() + backoff
                self._fail_queue(slot, error)
            if change.new is S.STOPPED and error is not None and self._kept(change.model):
                self._crashed(slot, error)
        self._finish_change(change)

    def _finish_change(self, change: ModelStateChanged) -> None:
        self.bus.publish(change)
        self._moved.set()
        self._moved = trio.Event()
        self._kick()

    # --- memory ------------------------------------------------------------------------

    def _retry_out_of_memory(self, slot: _Slot) -> bool:
        """A start just failed. If the server ran out of memory (``core/oom.py``), requests
        wait for it and budgets are set: raise its footprint so admission evicts more, and
        let the scheduler start it once more (True). Only once per run of failures."""
        runner = slot.runner
        if not self.budgets or slot.oom_retry is not None or self._closing or slot.retiring:
            return False
        status = runner.last_exit
        oom = classify(None if status is None else status.returncode, runner.last_output)
        if oom is None:
            return False
        device, size = self._raise_footprint(slot, oom)
        if not slot.queue:
            return False  # nobody waits: the raised footprint serves the next start
        raised = (
            f"raised its footprint to {format_size(size)} on {device}"
            if size
            else f"nothing to raise its footprint by on {device} (no budget, none known)"
        )
        slot.oom_retry = f"out of memory while starting ({oom.evidence}); {raised} and retried once"
        _log.warning("model '%s': %s", runner.model_id, slot.oom_retry)
        return True

    def _after_oom_retry(self, slot: _Slot, error: StartFailed) -> StartFailed:
        """The error of a failed start; after an out-of-memory retry it says so."""
        note, slot.oom_retry = slot.oom_retry, None
        if note is None:
            return error
        status = slot.runner.last_exit
        again = classify(None if status is None else status.returncode, slot.runner.last_output)
        outcome = "it ran out of memory again" if again else "the retry failed too"
        return StartFailed(
            error.model,
            f"{note}, and {outcome}",
            phase=error.phase,
            exit=error.exit,
            log_tail=error.log_tail,
        )

    def _raise_footprint(self, slot: _Slot, oom: OutOfMemory) -> tuple[str, int]:
        """Raise the model's footprint on the device that ran out: to ``OOM_RAISE`` times
        what admission counted (at most the device's budget), or to the peak measured,
        whichever is larger; with nothing known, to that device's whole budget."""
        model_id, cmd = slot.runner.model_id, slot.runner.spec.cmd
        current = self.footprint(model_id) or Footprint()
        gpus = sorted(d for d in current.bytes_on if d != RAM and current.on(d))
        device = oom.device or (gpus[0] if gpus else "gpu0")
        learned = self.footprints.load(model_id, cmd)
        measured = learned.on(device) if learned is not None else 0
        budget = self.budgets.get(device)
        raised = math.ceil(current.on(device) * OOM_RAISE)
        # Not past the budget by the guess alone (that would refuse it with 507): a model
        # that needs the whole budget still gets its retry, alone on the device.
        size = max(raised if budget is None else min(raised, budget), measured)
        if size == 0:
            size = budget or 0
        floor = self._oom_floor.get((model_id, cmd), Footprint())
        self._oom_floor[model_id, cmd] = floor.peak_with(Footprint(bytes_on={device: size}))
        return device, size

    async def _refresh_memory(self, config: Config) -> None:
        """Budgets in bytes and each model's estimate, for ``config`` (blocking reads in a
        thread). Without ``memory.budgets`` nothing is probed and admission is off."""
        if not config.memory.budgets:
            self.budgets = {}
            return
        if self._probe is None:
            found = await trio.to_thread.run_sync(devices.probe)
            self._probe = HostProbe(found)
        probe = self._probe
        capacities = await trio.to_thread.run_sync(probe.capacities)
        self.budgets = budgets_of(config, capacities)
        estimates = {}
        for model_id, spec in config.models.items():
            estimates[model_id] = await trio.to_thread.run_sync(probe.estimate, spec.cmd)
        self._estimates = estimates
        if probe.measures and not self._measuring and self._nursery is not None:
            self._measuring = True
            self._nursery.start_soon(self._measure_forever)
            self._nursery.start_soon(self._report_memory_forever)

    def footprint(self, model_id: str) -> Footprint | None:
        """The footprint admission uses for ``model_id`` (None: nothing known yet)."""
        spec = self._slots[model_id].runner.spec
        learned = self.footprints.load(model_id, spec.cmd) if spec.footprint_learn else None
        chosen = choose_footprint(spec, learned, self._estimates.get(model_id))
        floor = self._oom_floor.get((model_id, spec.cmd))
        if floor is None:
            return chosen
        return floor if chosen is None else chosen.peak_with(floor)

    async def device_memory(self) -> Mapping[str, DeviceMemory]:
        """Each device's memory now (empty without budgets: no devices are probed)."""
        probe = self._probe
        if not self.budgets or probe is None:
            return {}
        return await trio.to_thread.run_sync(probe.snapshot)

    def footprints_now(self) -> dict[str, Footprint | None]:
        """Every model's footprint as admission counts it now."""
        return {model_id: self.footprint(model_id) for model_id in self._slots}

    def memory_held(self) -> dict[str, int]:
        """Bytes per budgeted device that swapd's models hold by their footprints (what
        admission counts: loaded and loading models, asleep ones' RAM)."""
        held = dict.fromkeys(self.budgets, 0)
        for model_id, slot in self._slots.items():
            state = slot.runner.state
            footprint = self.footprint(model_id)
            if footprint is None or state not in RUNNING:
                continue
            for device in held:
                if state is S.ASLEEP and device != RAM:
                    continue
                held[device] += footprint.on(device)
        return held

    def _track_memory(self, slot: _Slot, change: ModelStateChanged) -> None:
        if change.pid is not None:
            slot.pgid = change.pid
        left = change.old in OCCUPYING or change.old is S.ASLEEP
        if change.new is not S.STOPPED or not left:
            return
        probe = self._probe
        watch = self.budgets and probe is not None and probe.measures
        if watch and slot.pgid is not None and self._nursery is not None and not slot.releasing:
            slot.releasing = True
            self._nursery.start_soon(self._await_release, slot, slot.pgid, list(slot.pids))

    async def _await_release(self, slot: _Slot, pgid: int, pids: list[int]) -> None:
        """Count the stopped model as holding its memory until the devices report it free
        (at most ``RELEASE_TIMEOUT``): the next server must not start into memory that a
        dying one still holds."""
        probe = self._probe
        assert probe is not None
        try:
            with trio.move_on_after(memory_watch.RELEASE_TIMEOUT) as scope:
                # Polling: the devices offer no notification when memory is freed.
                while not await trio.to_thread.run_sync(probe.released, pgid, pids):  # noqa: ASYNC110
                    await trio.sleep(memory_watch.RELEASE_POLL)
            if scope.cancelled_caught:
                _log.warning(
                    "model '%s' stopped, but its memory was not reported free within %gs; going on",
                    slot.runner.model_id,
                    memory_watch.RELEASE_TIMEOUT,
                )
        finally:
            slot.releasing = False
            self._kick()

    async def _report_memory_forever(self) -> None:
        """Publish each device's budget and use (``MemoryReported``) when it changed, at
        most every ``REPORT_EVERY`` seconds."""
        while True:
            await trio.sleep(memory_report.REPORT_EVERY)
            if not self.budgets:
                self.memory_report = None
                continue
            devices = await self.device_memory()
            now = memory_report.device_report(self.budgets, self.memory_held(), devices)
            if memory_report.changed(self.memory_report, now):
                self.memory_report = now
                self.bus.publish(memory_report.MemoryReported(devices=now))

    async def _measure_forever(self) -> None:
        """Measure every loaded model's footprint every ``MEASURE_EVERY`` seconds and keep
        the peak per model and command line (``footprintLearn: false`` models are not
        measured). Only while budgets are set and a real probe is in use."""
        while True:
            await trio.sleep(memory_watch.MEASURE_EVERY)
            probe = self._probe
            if not self.budgets or probe is None:
                continue
            grew = False
            for model_id, slot in list(self._slots.items()):
                spec = slot.runner.spec
                loaded = slot.runner.state in (S.STARTING, S.READY, S.WAKING)
                if not loaded or not spec.footprint_learn or slot.runner.pid is None:
                    continue
                pgid = slot.runner.pid
                sample, members = await trio.to_thread.run_sync(probe.measure, pgid)
                if slot.runner.pid != pgid:
                    continue  # restarted meanwhile: the sample is of a process gone
                slot.pids = members
                grew |= self.footprints.observe(model_id, spec.cmd, sample)
            if grew:
                self._kick()

    # --- keeping persistent and preloaded models up ------------------------------------

    def _kept(self, model_id: str) -> bool:
        """Brought up without a request, so swapd brings it back after a crash."""
        persistent = self._group_of.get(model_id) in self._persistent
        return persistent or model_id in self.config.hooks.on_startup.preload

    def _crashed(self, slot: _Slot, error: StartFailed) -> None:
        if self._closing or slot.retiring or self._nursery is None:
            return
        model_id = slot.runner.model_id
        delay = slot.crashes.crashed(trio.current_time())
        count = slot.crashes.count
        if delay is None:
            self.bus.publish(
                ModelRestart(model=model_id, state="gaveUp", crashes=count, error=str(error))
            )
            return
        delay = max(delay, slot.retry_at - trio.current_time())
        self.bus.publish(
            ModelRestart(
                model=model_id, state="scheduled", crashes=count, delay=delay, error=str(error)
            )
        )
        self._nursery.start_soon(self._restart, slot, delay)

    async def _restart(self, slot: _Slot, delay: float) -> None:
        with trio.CancelScope() as slot.restart:
            await trio.sleep(delay)
            if self._slots.get(slot.runner.model_id) is not slot or slot.crashes.gave_up:
                return
            if slot.runner.state is not S.STOPPED:
                return  # a request started it meanwhile
            try:
                lease = await self._acquire(slot, slot.runner.model_id)
            except (StartFailed, ModelUnavailable, QueueFull):
                return  # a failed start is counted as a crash by _runner_changed
            lease.release()

    def _fail_queue(self, slot: _Slot, error: BaseException) -> None:
        while slot.queue:
            waiter = slot.queue.popleft()
            waiter.error = error
            waiter.granted.set()

    # --- introspection ------------------------------------------------------------------

    def runner(self, model_id: str) -> Runner:
        return self._slots[model_id].runner

    def statistics(self) -> list[ModelStatistics]:
        result = []
        for model_id, slot in self._slots.items():
            runner = slot.runner
            ttl = self.ttl_overrides.ttl(model_id, float(max(runner.spec.ttl, 0)))
            idle = slot.in_flight == 0 and not slot.queue and runner.state is S.READY
            result.append(
                ModelStatistics(
                    model=model_id,
                    group=slot.group,
                    state=runner.state,
                    pid=runner.pid,
                    in_flight=slot.in_flight,
                    waiting=len(slot.queue),
                    launches=runner.launches,
                    last_error=runner.last_error,
                    idle_deadline=slot.last_used + ttl if ttl > 0 and idle else None,
                    crashes=slot.crashes.count,
                    gave_up=slot.crashes.gave_up,
                )
            )
        return result

    def running(self) -> list[str]:
        return [m for m, s in self._slots.items() if s.runner.state in RUNNING]
