"""In-process publish/subscribe. Publishing never blocks and never fails.

Each subscriber has its own bounded queue. When a subscriber falls behind and its queue
is full, its *oldest* item is dropped and counted (``Subscription.dropped``): a slow SSE
client loses history, never slows the supervisor or other subscribers.

Example::

    bus = EventBus()
    with bus.subscribe(maxlen=100) as sub:
        bus.publish(event)
        item = await sub.receive()
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import attrs
import trio

__all__ = ["BusStatistics", "EventBus", "Subscription"]

T = TypeVar("T")


class Subscription(Generic[T]):
    """One subscriber's bounded queue."""

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[T] = collections.deque(maxlen=maxlen)
        self._lot = trio.lowlevel.ParkingLot()
        self.dropped = 0
        self.closed = False

    def put(self, item: T) -> None:
        """Queue ``item``; if full, drop the oldest (counted in ``dropped``). Never blocks.
        A closed subscription takes nothing more."""
        if self.closed:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1  # the deque drops the oldest
        self._items.append(item)
        self._lot.unpark_all()

    def receive_nowait(self) -> T | None:
        return self._items.popleft() if self._items else None

    async def receive(self) -> T:
        """The next item; waits if none. Raises trio.EndOfChannel once closed and empty."""
        while not self._items:
            if self.closed:
                raise trio.EndOfChannel
            await self._lot.park()
        await trio.lowlevel.checkpoint()
        return self._items.popleft()

    def close(self, *, discard: bool = False) -> None:
        """End the subscription: its receiver sees EndOfChannel once the queue is drained,
        or at once with ``discard`` (what is still queued is thrown away: a stream whose
        key was revoked must not deliver another item)."""
        self.closed = True
        if discard:
            self._items.clear()
        self._lot.unpark_all()

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@attrs.frozen
class BusStatistics:
    subscribers: int
    published: int
    dropped: int
    watchers: int = 0


class EventBus(Generic[T]):
    """Fan-out of events to subscribers; see the module docstring."""

    def __init__(self) -> None:
        self._subs: list[Subscription[Any]] = []
        self._watchers: list[tuple[Callable[[T], None], tuple[type, ...] | None]] = []
        # Per event type, the watchers it goes to: a request publishes ~8 events and most
        # watchers want one or two kinds, so the filter runs once per type, not per event.
        self._routes: dict[type, list[Callable[[T], None]]] = {}
        self._published = 0
        self._dropped_closed = 0

    def publish(self, item: T) -> None:
        self._published += 1
        watchers = self._routes.get(type(item))
        if watchers is None:
            watchers = self._routes[type(item)] = [
                fn for fn, kinds in self._watchers if kinds is None or isinstance(item, kinds)
            ]
        for watcher in watchers:
            watcher(item)
        for sub in self._subs:
            sub.put(item)

    @contextmanager
    def watch(
        self, fn: Callable[[T], None], kinds: tuple[type, ...] | None = None
    ) -> Iterator[None]:
        """Call ``fn`` synchronously on every publish (of an instance of ``kinds``, when
        given), in the publisher's task.

        For cheap bookkeeping (metrics, invariant checks in tests): ``fn`` must not block
        and must not raise."""
        entry = (fn, kinds)
        self._watchers.append(entry)
        self._routes.clear()
        try:
            yield
        finally:
            self._watchers.remove(entry)
            self._routes.clear()

    @contextmanager
    def subscribe(self, maxlen: int = 1000) -> Iterator[Subscription[T]]:
        sub: Subscription[T] = Subscription(maxlen)
        self._subs.append(sub)
        try:
            yield sub
        finally:
            self._subs.remove(sub)
            self._dropped_closed += sub.dropped
            sub.close()

    def close(self) -> None:
        """End every subscription (their receivers see EndOfChannel once drained)."""
        for sub in self._subs:
            sub.close()

    def statistics(self) -> BusStatistics:
        dropped = self._dropped_closed + sum(s.dropped for s in self._subs)
        return BusStatistics(len(self._subs), self._published, dropped, len(self._watchers))
