"""The event feed over a WebSocket (``/api/events/ws``), read with trio-websocket."""

from __future__ import annotations

import gc
import json

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed
from ws_client import open_ws

from swapd.testing import open_swapd, upstream_cmd


def config(extra: str = "") -> str:
    return (
        extra + "models:\n  m1:\n"
        f"    cmd: {upstream_cmd('--model', 'm1')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )


def decode(message: str | bytes) -> tuple[str, object]:
    outer = json.loads(message)
    return outer["type"], json.loads(outer["data"])


def ws_url(http_url: str, query: str = "") -> str:
    return http_url.replace("http://", "ws://") + "/api/events/ws" + query


async def test_snapshot_then_state_changes_in_order() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config()) as swapd,
            open_ws(ws_url(swapd.url)) as ws,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            snapshot = [decode(await ws.get_message()) for _ in range(5)]
            assert [kind for kind, _ in snapshot] == [
                "logData",
                "logData",
                "modelStatus",
                "metrics",
                "inflight",
            ]
            assert dict(snapshot)["modelStatus"][0]["state"] == "stopped"  # type: ignore[index]
            reply = await client.post("/v1/chat/completions", json={"model": "m1", "messages": []})
            assert reply.status_code == 200
            seen: list[tuple[str, object]] = []
            while not any(kind == "metrics" for kind, _ in seen):
                seen.append(decode(await ws.get_message()))
    states = [data[0]["state"] for kind, data in seen if kind == "modelStatus"]  # type: ignore[index]
    # request counts refresh the status too: the states, without repeats, in order
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == [
        "starting",
        "ready",
    ]
    [metrics] = [data for kind, data in seen if kind == "metrics"]
    assert metrics[0]["model"] == "m1"  # type: ignore[index]


async def test_the_websocket_needs_the_api_key() -> None:
    handshake = {
        "connection": "upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    with trio.fail_after(30):
        async with (
            open_swapd(config("apiKeys: [sk-ws]\n")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=10) as client,
        ):
            refused = await client.get("/api/events/ws", headers=handshake)
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "authentication_error"
            async with open_ws(ws_url(swapd.url, "?api_key=sk-ws")) as ws:
                kind, _ = decode(await ws.get_message())
                assert kind == "logData"
            headers = [(b"authorization", b"Bearer sk-ws")]
            async with open_ws(ws_url(swapd.url), extra_headers=headers) as ws:
                kind, _ = decode(await ws.get_message())
                assert kind == "logData"


async def test_a_slow_subscriber_is_dropped_without_slowing_anyone() -> None:
    line = b"x" * 4096 + b"\n"
    with trio.fail_after(60):
        async with (
            open_swapd(config("logToStdout: none\n")) as swapd,
            open_ws(ws_url(swapd.url)) as slow,
            open_ws(ws_url(swapd.url), message_queue_size=10_000) as fast,
        ):
            logs = swapd.services.telemetry.logs
            for _ in range(5):  # both are connected and past their snapshots
                await fast.get_message()
            await slow.get_message()
            # 6,000 log events of 4 KiB: far more than the socket buffers and the
            # per-client queue (512) hold for a client that reads nothing. Published in
            # bursts of 25 that the fast client reads before the next, so only the
            # slow one can fall behind, however loaded the machine is.
            for _ in range(240):
                for _ in range(25):
                    logs.write_proxy(line)  # never waits for any reader
                received = 0
                while received < 25:
                    kind, data = decode(await fast.get_message())
                    if kind == "logData" and data["data"] == line.decode():  # type: ignore[index]
                        received += 1
            # The slow one is closed once it falls a queue behind; draining it ends in
            # the close frame, not in a gap.
            with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012 - drain, then close
                while True:
                    await slow.get_message()
            assert closed.value.reason.code == 1013
    del slow, fast, closed
    gc.collect()  # a socket left to the collector would fail this test here (ws_client.py)


async def test_request_counts_refresh_and_the_stream_ends_at_shutdown() -> None:
    slow = (
        "models:\n  m1:\n"
        f"    cmd: {upstream_cmd('--model', 'm1', '--chunks', '10', '--chunk-delay', '0.1')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    with trio.fail_after(30):
        async with (
            open_swapd(slow) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
            open_ws(ws_url(swapd.url)) as ws,
        ):
            for _ in range(5):
                await ws.get_message()
            reply = await client.post("/v1/chat/completions", json={"model": "m1", "stream": True})
            assert reply.status_code == 200  # a second of streaming: seen in flight
            operations: list[str] = []
            while "remove" not in operations:  # seen in flight, then done
                kind, data = decode(await ws.get_message())
                if kind == "inflight":
                    operations.append(data["operation"])  # type: ignore[index]
            assert operations[0] == "upsert"
            swapd.stop()
            with trio.fail_after(3):  # at once, not after the 5 s drain
                with pytest.raises(ConnectionClosed) as closed:  # noqa: PT012
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 1001
    del ws, closed
    gc.collect()


async def test_a_subscriber_that_falls_behind_gets_the_latest_status_not_every_one() -> None:
    """A feed nobody takes from while the model starts, serves and stops holds one
    pending state-change status, replaced by each change: draining it later gives the
    final state only, never an older state after a newer one."""
    from swapd.web import events_api

    with trio.fail_after(30):
        async with (
            open_swapd(config()) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            services = swapd.services
            shared = events_api._SharedStatus(services)
            with events_api._open_feed(services, shared, []) as (_, feed):
                reply = await client.post("/v1/chat/completions", json={"model": "m1"})
                assert reply.status_code == 200
                assert (await client.post("/api/models/unload")).status_code == 200
                messages: list[tuple[str, object]] = []
                with trio.move_on_after(2):  # everything queued, then the feed waits
                    while True:
                        messages.extend(await feed.next())
    states = [data[0]["state"] for kind, data in messages if kind == "modelStatus"]  # type: ignore[index]
    # four changes (stopped → starting → ready → stopping → stopped) were published;
    # request-count refreshes are computed when sent, so they say "stopped" too
    assert states and set(states) == {"stopped"}, states
    assert feed.queue.dropped == 0
