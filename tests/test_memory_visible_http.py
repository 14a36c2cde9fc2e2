"""Footprints and device memory where clients look: ``/v1/models`` (``meta.swapd``),
the event stream's ``modelStatus`` entries and its ``memory`` event. Real demo upstreams
holding real memory, over loopback HTTP (SSE read with httpx)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from test_memory_http import ask, config, model, openai_client

from swapd.testing import open_swapd

# Leaving an endless SSE body early leaves httpx's inner async generators to the collector.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
MiB = 1024**2
DECLARED = {"bytes": {"ram": 96 * MiB}, "source": "declared"}


async def events_until(http: httpx.AsyncClient, kind: str, want: Any) -> list[Any]:
    """Read ``/api/events`` until a ``kind`` message for which ``want(data)`` holds; return
    every ``kind`` message seen."""
    seen: list[Any] = []
    buffer = b""
    async with http.stream("GET", "/api/events") as reply:
        async for chunk in reply.aiter_raw():
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                if b"data:" not in block:
                    continue  # a keep-alive comment
                envelope = json.loads(block.split(b"data:", 1)[1])
                if envelope["type"] == kind:
                    seen.append(json.loads(envelope["data"]))
                    if want(seen[-1]):
                        return seen
    raise AssertionError("the event stream ended")


async def test_footprints_and_device_memory_are_visible() -> None:
    text = config("200MiB", model("a", 64, "96MiB"), model("b", 64, "96MiB"))
    with trio.fail_after(120):
        async with (
            open_swapd(text) as swapd,
            openai_client(swapd.url) as client,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as http,
        ):
            models = {m.id: m for m in (await client.models.list()).data}
            assert await ask(client, "a") == "hello from a"
            statuses = await events_until(
                http, "modelStatus", lambda entries: entries[0]["state"] == "ready"
            )
            reports = await events_until(
                http, "memory", lambda r: r["devices"]["ram"]["held"] == 96 * MiB
            )
    for name in ("a", "b"):
        extra = models[name].model_extra or {}
        assert extra["meta"]["swapd"]["footprint"] == DECLARED
    entries = {e["id"]: e for e in statuses[-1]}
    assert entries["a"]["footprint"] == DECLARED and entries["b"]["footprint"] == DECLARED
    ram = reports[-1]["devices"]["ram"]
    assert ram["budget"] == 200 * MiB and ram["budgetFree"] == 104 * MiB
    assert ram["total"] > 0 and ram["used"] > 0 and ram["free"] >= 0


async def test_without_budgets_nothing_is_added() -> None:
    text = "models:\n" + model("a", 0, None)
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            openai_client(swapd.url) as client,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as http,
        ):
            [listed] = (await client.models.list()).data
            [status] = await events_until(http, "modelStatus", lambda entries: True)
    assert "meta" not in (listed.model_extra or {})
    assert status[0]["footprint"] is None
