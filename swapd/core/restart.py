"""When to restart a model that must stay up, and when to give up (pure, no clock).

Models in a ``persistent`` group and models listed in ``hooks.on_startup.preload`` are
*kept*: swapd brought them up without a request, so when one crashes nobody would bring
it back. A crash schedules a restart after a back-off that doubles from ``first`` up to
``most`` seconds. ``limit`` crashes within ``window`` seconds mean the model cannot stay
up: swapd gives up (and says so in events, ``/running`` and the UI) until someone asks
for the model again. A failed restart counts as a crash.
"""

from __future__ import annotations

import collections

import attrs

__all__ = ["CrashHistory", "RestartPolicy"]


@attrs.frozen(kw_only=True)
class RestartPolicy:
    limit: int = 5
    window: float = 300.0
    first: float = 1.0
    most: float = 30.0


@attrs.define
class CrashHistory:
    policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    times: collections.deque[float] = attrs.field(factory=collections.deque)
    gave_up: bool = False

    def crashed(self, now: float) -> float | None:
        """Record a crash at ``now``: the delay before the next start, or None to give up."""
        self.times.append(now)
        while self.times and self.times[0] < now - self.policy.window:
            self.times.popleft()
        if len(self.times) >= self.policy.limit:
            self.gave_up = True
            return None
        return min(self.policy.first * 2.0 ** (len(self.times) - 1), self.policy.most)

    def reset(self) -> None:
        """Someone asked for the model: start counting afresh."""
        self.times.clear()
        self.gave_up = False

    @property
    def count(self) -> int:
        return len(self.times)
