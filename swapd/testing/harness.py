"""A deterministic swap-order harness: a real Supervisor driving scripted, in-process models.

Use it (with pytest-trio's ``autojump_clock`` fixture) to state a scenario and check the
order in which swapd launches models and answers requests, in milliseconds of real time::

    async def test_batches_by_model(autojump_clock):
        async with open_swap_harness(CONFIG, scripts={"B": Script(start_delay=5)}) as h:
            h.request("A", at=0.0, duration=1.0)
            h.request("B", at=0.1)
            h.request("A", at=0.2)
        assert h.launches == ["A", "B"]
        assert h.completion_order == ["A", "A", "B"]

``h.request(model, at=..., duration=..., patience=...)`` schedules one client (with
``patience``, it leaves if not served in time); each ``Outcome`` says when it was granted
and finished, its error, whether it left, and the model's state when it arrived.

``CONFIG`` is ordinary swapd YAML (the ``cmd`` of each model is never run). Everything
here awaits only trio primitives, never real I/O, so the mock clock can jump safely.
The harness exits after every scheduled request has ended and the supervisor stopped.
With ``memory.budgets`` in the config, admission uses the declared ``footprint``s only
(nothing is measured, and percentage budgets limit nothing: no devices are probed).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import attrs
import trio

from swapd.config import Config, parse_config
from swapd.config.model import ModelConfig
from swapd.core.states import ModelState
from swapd.errors import StartFailed
from swapd.supervise.instance import Instance
from swapd.supervise.memory_watch import NoProbe
from swapd.supervise.procgroup import ExitStatus
from swapd.supervise.sleepwake import SleepWakeFailed
from swapd.supervise.supervisor import Supervisor

__all__ = ["FakeLauncher", "Outcome", "Script", "SwapHarness", "open_swap_harness"]


@attrs.frozen(kw_only=True)
class Script:
    """How one fake model behaves (all times in seconds of trio time)."""

    start_delay: float = 1.0  # from launch to healthy
    exit_during_start: int | None = None  # exit with this code instead of becoming healthy
    crash_after: float | None = None  # exit with code 1 this long after becoming healthy
    stop_delay: float = 0.1  # how long a stop takes
    sleep_delay: float = 0.1
    wake_delay: float = 0.1
    fail_sleep: bool = False
    fail_wake: bool = False


@attrs.frozen
class Record:
    at: float
    model: str
    what: str


class FakeInstance:
    """An ``Instance`` made of trio sleeps, recording what happens to it."""

    def __init__(self, model_id: str, script: Script, timeline: list[Record], pid: int) -> None:
        self._model_id = model_id
        self._script = script
        self._timeline = timeline
        self._pid = pid
        self._exited = trio.Event()
        self._status: ExitStatus | None = None
        self._healthy_at: float | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._pid

    def _record(self, what: str) -> None:
        self._timeline.append(Record(trio.current_time(), self._model_id, what))

    def _exit(self, code: int) -> None:
        if self._status is None:
            self._status = ExitStatus.from_returncode(code)
            self._record(f"exit {code}")
            self._exited.set()

    async def wait_healthy(self) -> None:
        await trio.sleep(self._script.start_delay)
        if self._script.exit_during_start is not None:
            self._exit(self._script.exit_during_start)
            raise StartFailed(
                self._model_id,
                "the process exited while starting",
                phase="health",
                exit=f"exit code {self._script.exit_during_start}",
                log_tail=["fake: failing on purpose"],
            )
        self._record("healthy")

    async def run_crash_timer(self) -> None:
        if self._script.crash_after is None:
            return
        await trio.sleep(self._script.start_delay + self._script.crash_after)
        if not self._stopping:
            self._exit(1)

    async def wait_exited(self) -> ExitStatus:
        await self._exited.wait()
        assert self._status is not None
        return self._status

    async def stop(self) -> ExitStatus:
        if not self._stopping and self._status is None:
            self._stopping = True
            self._record("stop")
            await trio.sleep(self._script.stop_delay)
            self._exit(0)
        return await self.wait_exited()

    def kill(self) -> None:
        self._stopping = True
        self._exit(-9)

    async def sleep(self) -> None:
        self._record("sleep")
        await trio.sleep(self._script.sleep_delay)
        if self._script.fail_sleep:
            raise SleepWakeFailed("fake sleep failure")

    async def wake(self) -> None:
        self._record("wake")
        await trio.sleep(self._script.wake_delay)
        if self._script.fail_wake:
            raise SleepWakeFailed("fake wake failure")

    def log_tail(self) -> list[str]:
        return []


class FakeLauncher:
    """Launches ``FakeInstance``s; ``timeline`` records every launch, stop, exit, sleep."""

    def __init__(self, scripts: Mapping[str, Script] | None = None) -> None:
        self.scripts = dict(scripts or {})
        self.timeline: list[Record] = []
        self._next_pid = 1000

    def reconfigure(self, config: Config) -> None:
        """Nothing to do: scripted instances use no global settings."""

    @asynccontextmanager
    async def open(self, model_id: str, spec: ModelConfig) -> AsyncIterator[Instance]:
        script = self.scripts.get(model_id, Script())
        self._next_pid += 1
        instance = FakeInstance(model_id, script, self.timeline, self._next_pid)
        self.timeline.append(Record(trio.current_time(), model_id, "launch"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(instance.run_crash_timer)
            try:
                yield instance
            finally:
                with trio.CancelScope(shield=True):
                    await instance.stop()
                nursery.cancel_scope.cancel()


@attrs.define
class Outcome:
    """What one scripted request saw."""

    name: str
    model: str
    arrived: float
    granted: float | None = None
    finished: float | None = None
    error: BaseException | None = None
    left: bool = False  # the client gave up waiting (its ``patience`` ran out)
    # The model as the request found it: state, requests in flight, requests waiting.
    found: tuple[ModelState, int, int] | None = None


class SwapHarness:
    """Schedules requests against a live Supervisor; see the module docstring."""

    def __init__(
        self, supervisor: Supervisor, launcher: FakeLauncher, nursery: trio.Nursery
    ) -> None:
        self.supervisor = supervisor
        self.launcher = launcher
        self.outcomes: list[Outcome] = []
        self._nursery = nursery
        self._pending = 0
        self._all_done = trio.Event()
        self._all_done.set()

    def request(
        self,
        model: str,
        *,
        at: float,
        duration: float = 0.1,
        name: str | None = None,
        patience: float | None = None,
    ) -> None:
        """A client asks for ``model`` at trio time ``at`` and holds it ``duration`` s;
        with ``patience``, it leaves if not served within that many seconds."""
        outcome = Outcome(name or f"{model}#{len(self.outcomes) + 1}", model, at)
        self.outcomes.append(outcome)
        self._pending += 1
        self._all_done = trio.Event()
        self._nursery.start_soon(self._client, outcome, duration, patience)

    async def _client(self, outcome: Outcome, duration: float, patience: float | None) -> None:
        try:
            await trio.sleep_until(outcome.arrived)
            stats = {s.model: s for s in self.supervisor.statistics()}
            if (found := stats.get(outcome.model)) is not None:
                outcome.found = (found.state, found.in_flight, found.waiting)
            lease = None
            try:
                with trio.move_on_after(math.inf if patience is None else patience):
                    lease = await self.supervisor.acquire(outcome.model)
            except Exception as exc:
                outcome.error = exc
                outcome.finished = trio.current_time()
                return
            if lease is None:
                outcome.left = True
                outcome.finished = trio.current_time()
                return
            outcome.granted = trio.current_time()
            try:
                await trio.sleep(duration)
            finally:
                lease.release()
            outcome.finished = trio.current_time()
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._all_done.set()

    async def wait_done(self) -> None:
        await self._all_done.wait()

    @property
    def launches(self) -> list[str]:
        return [r.model for r in self.launcher.timeline if r.what == "launch"]

    @property
    def completion_order(self) -> list[str]:
        done = [o for o in self.outcomes if o.granted is not None and o.finished is not None]
        return [o.model for o in sorted(done, key=lambda o: (o.finished, o.name))]

    def events(self, what: str | None = None) -> list[Record]:
        return [r for r in self.launcher.timeline if what is None or r.what == what]


@asynccontextmanager
async def open_swap_harness(
    config: str | Config,
    scripts: Mapping[str, Script] | None = None,
    *,
    max_wait: float | None = None,
    queue_limit: int | None = None,
) -> AsyncIterator[SwapHarness]:
    """Run a Supervisor over fake models. On exit, waits for all requests, then stops it."""
    if isinstance(config, str):
        config = parse_config(config, file="<harness>")
    launcher = FakeLauncher(scripts)
    # NoProbe: declared footprints and absolute budgets only, never real I/O (mock clock).
    supervisor = Supervisor(
        config, launcher, max_wait=max_wait, queue_limit=queue_limit, memory_probe=NoProbe()
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        async with trio.open_nursery() as clients:
            harness = SwapHarness(supervisor, launcher, clients)
            yield harness
            await harness.wait_done()
        nursery.cancel_scope.cancel(reason="harness finished")
