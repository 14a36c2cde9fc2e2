"""Following one ``Runner``'s state changes in tests (its ``on_change`` hook)."""

from __future__ import annotations

import trio

from swapd.core.events import ModelStateChanged
from swapd.core.states import ModelState
from swapd.supervise.runner import Runner


class Moves:
    """Every state change of a runner, and a way to wait for a state."""

    def __init__(self, seen: list[object]) -> None:
        self.seen = seen
        self.moved = trio.Event()

    def on_change(self, change: ModelStateChanged, _error: object) -> None:
        self.seen.append(change)
        self.moved.set()
        self.moved = trio.Event()

    async def reach(self, runner: Runner, state: ModelState) -> None:
        while runner.state is not state:
            await self.moved.wait()
