"""Requests in flight over the event feed, and ``POST /api/inflight/<id>/cancel``: the
client gets a clear error, the upstream sees the disconnect, the slot is freed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection
from ws_client import open_ws

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def config(model: str, *flags: str) -> str:
    return (
        "models:\n"
        f"  {model}:\n"
        f"    cmd: {upstream_cmd('--model', model, *flags)}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/api/events/ws"


async def next_inflight(ws: WebSocketConnection) -> dict[str, Any]:
    while True:
        envelope = json.loads(await ws.get_message())
        if envelope["type"] == "inflight":
            data: dict[str, Any] = json.loads(envelope["data"])
            return data


async def entry_with_model(ws: WebSocketConnection, model: str) -> dict[str, Any]:
    """The first upsert of a request for ``model``."""
    while True:
        op = await next_inflight(ws)
        if op["operation"] == "upsert" and op["request"]["model"] == model:
            request: dict[str, Any] = op["request"]
            return request


async def test_cancelling_a_stream_ends_it_with_an_error_and_disconnects_the_upstream() -> None:
    text = config("s", "--chunks", "100", "--chunk-delay", "0.1")
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            open_ws(ws_url(swapd.url)) as ws,
        ):
            first = await next_inflight(ws)
            assert first == {"operation": "snapshot", "requests": []}
            body = {"model": "s", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            headers = {"authorization": "Bearer secret", "x-session-id": "abc"}
            async with client.stream(
                "POST", "/v1/chat/completions", json=body, headers=headers
            ) as reply:
                chunks = reply.aiter_raw()
                received = await anext(chunks)
                entry = await entry_with_model(ws, "s")
                cancel = await client.post(f"/api/inflight/{entry['id']}/cancel")
                assert cancel.json() == {"msg": "ok"}
                async for chunk in chunks:
                    received += chunk
            again = await client.post(f"/api/inflight/{entry['id']}/cancel")
            for _ in range(50):  # the upstream notices at its next write (0.1 s apart)
                stats = (await client.get("/upstream/s/stats")).json()
                if stats["disconnects"]:
                    break
                await trio.sleep(0.1)
            running = (await client.get("/running")).json()["running"]
            removed = await next_inflight(ws)
            while removed["operation"] != "remove":
                removed = await next_inflight(ws)
            for _ in range(100):  # the row is committed within the store's batch interval
                rows = (await client.get("/api/metrics/activity")).json()
                if any(r["model"] == "s" for r in rows["data"]):
                    break
                await trio.sleep(0.1)
    assert entry["req_path"] == "/v1/chat/completions"
    assert entry["method"] == "POST"
    assert entry["req_headers"]["authorization"] == "[REDACTED]"
    assert entry["req_headers"]["x-session-id"] == "abc"
    assert entry["remote_ip"] == "127.0.0.1"
    assert received.endswith(b"data: [DONE]\n\n")
    assert b"the request was cancelled" in received
    assert received.count(b'"content"') < 100  # cut short, not finished
    assert again.status_code == 404
    assert again.json()["error"]["message"] == "inflight request not found"
    assert stats["disconnects"] == 1  # the upstream saw the disconnect
    assert running[0]["inFlight"] == 0  # the slot is free
    assert removed == {"operation": "remove", "id": entry["id"]}
    [row] = [r for r in rows["data"] if r["model"] == "s"]
    assert row["error_msg"] == f"cancelled through POST /api/inflight/{entry['id']}/cancel"


async def test_cancelling_a_request_that_waits_for_its_model_answers_an_error() -> None:
    text = config("slow", "--start-delay", "30")
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            open_ws(ws_url(swapd.url)) as ws,
            trio.open_nursery() as nursery,
        ):
            replies: list[httpx.Response] = []

            async def ask() -> None:
                body = {"model": "slow", "messages": []}
                replies.append(await client.post("/v1/chat/completions", json=body))

            nursery.start_soon(ask)
            entry = await entry_with_model(ws, "slow")
            assert (await client.post(f"/api/inflight/{entry['id']}/cancel")).status_code == 200
            with trio.fail_after(10):  # at once, not after the 30 s load
                while not replies:
                    await next_inflight(ws)
    [reply] = replies
    assert reply.status_code == 503
    assert reply.json()["error"]["message"] == (
        f"the request was cancelled (POST /api/inflight/{entry['id']}/cancel)"
    )
