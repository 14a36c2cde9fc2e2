"""The event bus: publishing never blocks; a slow subscriber loses its oldest items."""

from __future__ import annotations

import trio
import trio.testing

from swapd.observe.bus import EventBus


async def test_fan_out_in_order() -> None:
    bus: EventBus[int] = EventBus()
    with bus.subscribe() as a, bus.subscribe() as b:
        for i in range(5):
            bus.publish(i)
        assert [await a.receive() for _ in range(5)] == [0, 1, 2, 3, 4]
        assert [await b.receive() for _ in range(5)] == [0, 1, 2, 3, 4]


async def test_slow_subscriber_drops_oldest_and_never_blocks_the_publisher() -> None:
    bus: EventBus[int] = EventBus()
    with bus.subscribe(maxlen=3) as slow, bus.subscribe(maxlen=100) as fast:
        for i in range(10):  # publish is synchronous: it has no way to wait for a reader
            bus.publish(i)
        assert slow.dropped == 7
        assert [await slow.receive() for _ in range(3)] == [7, 8, 9]
        assert [await fast.receive() for _ in range(10)] == list(range(10))
        assert bus.statistics().dropped == 7


async def test_receivers_wake_on_publish_and_end_on_close() -> None:
    bus: EventBus[str] = EventBus()
    got: list[str] = []
    with bus.subscribe() as sub:

        async def reader() -> None:
            got.extend([item async for item in sub])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            bus.publish("a")
            bus.publish("b")
            await trio.testing.wait_all_tasks_blocked()
            bus.close()
    assert got == ["a", "b"]


async def test_watchers_run_synchronously() -> None:
    bus: EventBus[int] = EventBus()
    seen: list[int] = []
    with bus.watch(seen.append):
        bus.publish(1)
        assert seen == [1]
    bus.publish(2)
    assert seen == [1]


async def test_a_discarding_close_ends_the_receiver_at_once() -> None:
    bus: EventBus[int] = EventBus()
    with bus.subscribe() as sub:
        bus.publish(1)
        bus.publish(2)
        sub.close(discard=True)
        bus.publish(3)  # published after the close: never delivered either
        assert [item async for item in sub] == []


def test_a_watcher_with_kinds_sees_only_those_kinds_and_order_is_kept() -> None:
    bus: EventBus[object] = EventBus()
    seen: list[tuple[str, object]] = []
    with bus.watch(lambda e: seen.append(("all", e))):
        with bus.watch(lambda e: seen.append(("ints", e)), (int,)):
            for item in (1, "a", True, 2.5, 3):  # bool is an int: routed by isinstance
                bus.publish(item)
        bus.publish(4)  # the int watcher is gone: its cached route is too
    assert seen == [
        ("all", 1),
        ("ints", 1),
        ("all", "a"),
        ("all", True),
        ("ints", True),
        ("all", 2.5),
        ("all", 3),
        ("ints", 3),
        ("all", 4),
    ]
