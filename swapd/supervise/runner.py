"""One model's lifetime: its process, its state, and the operations that move it.

A ``Runner`` lives in its own nursery (started by the supervisor with ``nursery.start``).
It does what it is told — start, stop, sleep, wake — each operation in its own task and
under its own cancel scope, and reports every state change through ``on_change``. It
never decides *when* to do anything: that is the supervisor's job.

Rules:
- the state moves only through ``core.states.apply``;
- at most one start, sleep or wake runs at a time; ``stop`` cancels it and takes over;
- a stop always completes (shielded) and ends only when the process group is gone;
- the process lives in its own task (``_life``) for exactly one launch, so whatever
  happens to the operations, leaving the nursery tears the process down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import trio

from swapd.config.model import ModelConfig
from swapd.core.events import ModelStateChanged
from swapd.core.states import Event, ModelState, apply
from swapd.errors import StartFailed
from swapd.supervise import health
from swapd.supervise.instance import Instance, Launcher
from swapd.supervise.procgroup import ExitStatus
from swapd.supervise.sleepwake import SleepWakeFailed

if TYPE_CHECKING:
    from swapd.supervise.kvcache import KvCacheKeeper

__all__ = ["RECHECK_GRACE", "Runner", "RunnerStatistics"]

S = ModelState
E = Event

#: How long a ready model that refused a connection has to accept a new one before it is
#: stopped (a server restarting its listener gets this long).
RECHECK_GRACE = 2.0


@attrs.frozen(kw_only=True)
class RunnerStatistics:
    model: str
    state: ModelState
    pid: int | None
    launches: int
    last_error: str | None


class Runner:
    """Carries out lifecycle operations for one model; see the module docstring."""

    def __init__(
        self,
        model_id: str,
        spec: ModelConfig,
        launcher: Launcher,
        *,
        health_timeout: float,
        on_change: Callable[[ModelStateChanged, StartFailed | None], None],
        kv_cache: KvCacheKeeper | None = None,
    ) -> None:
        self.model_id = model_id
        self.spec = spec
        self.state = S.STOPPED
        self.launches = 0
        self.last_error: str | None = None
        self._launcher = launcher
        self.health_timeout = health_timeout
        self._on_change = on_change
        self._nursery: trio.Nursery | None = None
        self._instance: Instance | None = None
        self._op: trio.CancelScope | None = None
        self._life_done = trio.Event()
        self._life_done.set()
        self._settled = trio.Event()  # set whenever the state is stopped/shutdown
        self._settled.set()
        self._pending_error: StartFailed | None = None
        self._rechecking: Instance | None = None
        self.kv_cache = kv_cache  # saves/restores llama-server slots (docs/kvcache.md)
        self._shutting_down = False
        # How the last process ended and what it printed last (out-of-memory detection).
        self.last_exit: ExitStatus | None = None
        self.last_output: list[str] = []

    def __repr__(self) -> str:
        pid = f" pid {self._instance.pid}" if self._instance else ""
        return f"<Runner {self.model_id} {self.state.value}{pid}>"

    @property
    def pid(self) -> int | None:
        return self._instance.pid if self._instance else None

    def log_tail(self) -> list[str]:
        return self._instance.log_tail() if self._instance else []

    def statistics(self) -> RunnerStatistics:
        return RunnerStatistics(
            model=self.model_id,
            state=self.state,
            pid=self.pid,
            launches=self.launches,
            last_error=self.last_error,
        )

    async def run(self, *, task_status: trio.TaskStatus[Runner] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the runner's nursery until cancelled; ``started()`` passes the runner."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    # --- commands (sync: they change state now and start the work) ----------------------

    def start(self, reason: str) -> None:
        self._move(E.START, reason)
        self._settled = trio.Event()
        self._spawn(self._start_op, self._new_op())

    def stop(self, reason: str) -> None:
        """Stop now. Cancels a start, sleep or wake in progress. No-op when not running."""
        if self.state in (S.STOPPED, S.STOPPING, S.SHUTDOWN):
            return
        if self._op is not None:
            self._op.cancel(reason=reason)
            self._op = None
        # At swapd's shutdown the process is torn down alongside: no save is attempted.
        save_kv_cache = self.state is S.READY and not self._shutting_down
        self._move(E.STOP, reason)
        self._spawn(self._stop_op, reason, save_kv_cache)

    def sleep(self, reason: str) -> None:
        self._move(E.SLEEP, reason)
        self._spawn(self._sleep_op, self._new_op())

    def wake(self, reason: str) -> None:
        self._move(E.WAKE, reason)
        self._spawn(self._wake_op, self._new_op())

    def recheck(self) -> None:
        """A request could not connect to this ready model: try new connections to its
        port and stop it if none succeeds within ``RECHECK_GRACE``, so the next request
        starts it afresh instead of meeting the same refusal until its TTL."""
        instance = self._instance
        if self.state is not S.READY or instance is None or self._rechecking is instance:
            return
        self._rechecking = instance
        self._spawn(self._recheck_op, instance)

    def kill(self) -> None:
        """Kill the process group at once; the stop then completes on its own."""
        if self._instance is not None:
            self._instance.kill()

    def close(self) -> None:
        """End ``run`` (the model left the config). Only once no process is left."""
        assert self.state in (S.STOPPED, S.SHUTDOWN)
        assert self._life_done.is_set()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel(reason=f"{self.model_id} removed")

    async def shutdown(self) -> None:
        """Stop if running, wait until stopped, then refuse to start again."""
        self._shutting_down = True
        self.stop("shutdown")
        await self._settled.wait()
        if self.state is S.STOPPED:
            self._move(E.SHUTDOWN, "shutdown")

    @property
    def stopped(self) -> trio.Event:
        """Set once the current (or last) process is gone; a new start makes a new one."""
        return self._settled

    # --- operations ---------------------------------------------------------------------

    def _new_op(self) -> trio.CancelScope:
        """The cancel scope of the start, sleep or wake being spawned, made now: a stop in
        the same instant, before the operation's task first runs, must cancel it (it used
        to find no operation, let the start run on beside the next one, and leave the
        model stuck in ``stopping``)."""
        self._op = trio.CancelScope()
        return self._op

    def _spawn(self, fn: Callable[..., object], *args: object) -> None:
        assert self._nursery is not None, "Runner.run() is not running"
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    def _move(self, event: Event, reason: str, error: StartFailed | None = None) -> None:
        old = self.state
        self.state = apply(old, event)
        if self.state in (S.STOPPED, S.SHUTDOWN):
            self._settled.set()
        if error is not None:
            self.last_error = str(error)
        change = ModelStateChanged(
            model=self.model_id,
            old=old,
            new=self.state,
            reason=reason,
            error=str(error) if error else None,
            pid=self.pid,
            at=trio.current_time(),
        )
        self._on_change(change, error)

    async def _start_op(self, scope: trio.CancelScope) -> None:
        assert self._nursery is not None
        with scope:
            try:
                await trio.lowlevel.checkpoint()  # stopped before it ran: launch nothing
                instance = await self._nursery.start(self._life)
                with trio.fail_after(self.health_timeout):
                    await instance.wait_healthy()
                await self._restore_kv_cache(instance)
            except StartFailed as exc:
                self._start_failed(exc, scope)
                return
            except trio.TooSlowError:
                self._start_failed(
                    StartFailed(
                        self.model_id,
                        f"not healthy after {self.health_timeout:g}s",
                        phase="health",
                        log_tail=self.log_tail()[-5:],
                    ),
                    scope,
                )
                return
        if scope.cancelled_caught or self._op is not scope or self.state is not S.STARTING:
            return  # a stop took over
        self._op = None
        self._move(E.HEALTHY, "healthy")

    def _start_failed(self, error: StartFailed, scope: trio.CancelScope) -> None:
        if self._op is not scope:
            return  # a stop took over
        self._op = None
        if self.state is not S.STARTING:
            return
        self._pending_error = error
        self._move(E.FAILED, f"start failed ({error.phase})")
        self._spawn(self._stop_op, "start failed")

    async def _recheck_op(self, instance: Instance) -> None:
        try:
            with trio.move_on_after(RECHECK_GRACE):
                await health.wait_accepting(self.spec.proxy)
                return
        finally:
            self._rechecking = None
        if self.state is S.READY and self._instance is instance:
            self.stop(f"not accepting connections on its port for {RECHECK_GRACE:g}s")

    async def _life(self, *, task_status: trio.TaskStatus[Instance]) -> None:
        done = self._life_done = trio.Event()
        status: ExitStatus | None = None
        instance: Instance | None = None
        try:
            async with self._launcher.open(self.model_id, self.spec) as instance:
                self._instance = instance
                self.launches += 1
                task_status.started(instance)
                status = await instance.wait_exited()
        finally:
            if self._instance is instance:
                self._instance = None
            if instance is not None:  # read once the launcher closed it: output drained
                self.last_exit, self.last_output = status, instance.log_tail()
            done.set()
        assert status is not None
        self._exited(status)

    def _exited(self, status: ExitStatus) -> None:
        # Stops and failed starts are finished by their own operation.
        if self.state in (S.READY, S.ASLEEP, S.SLEEP_PENDING, S.WAKING):
            if self._op is not None:
                self._op.cancel(reason="the process exited")
                self._op = None
            error = StartFailed(
                self.model_id,
                "the process exited unexpectedly",
                phase="running",
                exit=status.describe(),
            )
            self._move(E.EXITED, f"exited unexpectedly ({status.describe()})", error)

    async def _restore_kv_cache(self, instance: Instance) -> None:
        """Healthy and not yet ready: load the slots saved at the last stop (bounded, never
        fails the start) - unless restoring killed the server (a damaged file)."""
        if self.kv_cache is None or not self.spec.kv_cache.enabled:
            return
        await self.kv_cache.restore_slots(self.model_id, self.spec)
        if self._instance is not instance:
            raise StartFailed(
                self.model_id,
                "the process exited while its saved KV cache was restored",
                phase="kvcache",
                log_tail=instance.log_tail()[-5:],
            )

    async def _save_kv_cache(self) -> None:
        """About to stop a ready model: save its slots first (bounded by saveTimeout)."""
        if self.kv_cache is not None and self._instance is not None:
            await self.kv_cache.save_slots(self.model_id, self.spec)

    async def _stop_op(self, reason: str, save_kv_cache: bool = False) -> None:
        with trio.CancelScope(shield=True):
            if save_kv_cache:
                await self._save_kv_cache()
            instance = self._instance
            if instance is not None:
                await instance.stop()
            await self._life_done.wait()
        error, self._pending_error = self._pending_error, None
        if self.state is S.STOPPING:
            self._move(E.REAPED, reason, error)

    async def _sleep_op(self, scope: trio.CancelScope) -> None:
        await self._http_op(scope, S.SLEEP_PENDING, "sleep", E.SLEPT, "asleep", E.SLEEP_FAILED)

    async def _wake_op(self, scope: trio.CancelScope) -> None:
        # A failed wake falls back to a cold start: once stopped, the waiting requests
        # start the model again.
        await self._http_op(scope, S.WAKING, "wake", E.WOKE, "awake", E.WAKE_FAILED)

    async def _http_op(
        self,
        scope: trio.CancelScope,
        during: ModelState,
        what: str,
        done: Event,
        done_reason: str,
        failed: Event,
    ) -> None:
        """Run the sleep or wake calls; on failure, stop the process."""
        failure: str | None = None
        with scope:
            try:
                assert self._instance is not None
                await (self._instance.sleep() if what == "sleep" else self._instance.wake())
            except SleepWakeFailed as exc:
                failure = str(exc)
        if scope.cancelled_caught or self._op is not scope or self.state is not during:
            return  # a stop or an exit took over
        self._op = None
        if failure is None:
            self._move(done, done_reason)
        else:
            self.last_error = f"{what} failed: {failure}"
            self._move(failed, self.last_error)
            self._spawn(self._stop_op, f"{what} failed")
