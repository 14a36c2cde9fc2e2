"""Load progress over real HTTP: the demo upstream prints llama-server-like stage lines
while it loads slowly; swapd publishes ``loadProgress`` on ``/api/events`` and tells a
``sendLoadingState`` client the stage and percentage. Bounded with ``fail_after``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def config(*flags: str, loading_state: bool = False) -> str:
    cmd = upstream_cmd("--model", "s", "--respond", "hello from s", *flags)
    head = "sendLoadingState: true\n" if loading_state else ""
    return (
        f"{head}healthCheckTimeout: 30\nmodels:\n  s:\n    cmd: {cmd}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )


def chat(**extra: object) -> dict[str, object]:
    return {"model": "s", "messages": [{"role": "user", "content": "hi"}], **extra}


async def load_and_watch(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Load model ``s`` with a request; the ``loadProgress`` data seen until it is ready."""
    readings: list[dict[str, Any]] = []
    async with client.stream("GET", "/api/events") as stream, trio.open_nursery() as nursery:

        async def ask() -> None:
            reply = await client.post("/v1/chat/completions", json=chat())
            assert reply.status_code == 200, reply.text

        buffer = b""
        started = False
        async for chunk in stream.aiter_raw():
            if not started:  # the snapshot has arrived: the feed is live
                nursery.start_soon(ask)
                started = True
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                outer = json.loads(block.split(b"data:", 1)[1])
                if outer["type"] == "loadProgress":
                    readings.append(json.loads(outer["data"]))
            if readings and readings[-1]["stage"] == "ready":
                break
    return readings


async def test_progress_events_move_through_the_stages_to_ready() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config("--loading-delay", "3", "--load-stages")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            first = await load_and_watch(client)
            assert (await client.post("/api/models/unload/s")).status_code == 200
            second = await load_and_watch(client)

    assert {r["model"] for r in first} == {"s"}
    fractions = [r["fraction"] for r in first]
    assert fractions == sorted(fractions)
    stages = [r["stage"] for r in first]
    assert stages[-1] == "ready"
    assert first[-1]["percent"] == 100
    assert all(r["percent"] <= 99 for r in first[:-1])
    # the stage lines the demo printed were read from its output, in order
    shown = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert [s for s in shown if s != "starting"] == [
        "opening",
        "loading_weights",
        "allocating",
        "warming_up",
        "listening",
        "ready",
    ][: len(shown) - shown.count("starting")]
    assert {"opening", "warming_up", "ready"} <= set(stages)
    assert any(not r["isEstimate"] for r in first[:-1])  # backed by the server's output
    assert first[0]["predictionBasis"] == "default"

    # The second load is predicted from the first one's duration.
    assert second[0]["predictionBasis"] == "history"
    took = first[-1]["elapsed"]
    assert second[0]["predicted"] == pytest.approx(took, abs=0.05)
    assert [r["fraction"] for r in second] == sorted(r["fraction"] for r in second)


async def test_a_silent_server_gets_estimated_progress() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config("--loading-delay", "2")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            readings = await load_and_watch(client)
    assert readings[-1]["stage"] == "ready"
    loading = readings[:-1]
    assert loading, "no reading while the model loaded"
    assert all(r["stage"] == "starting" and r["isEstimate"] for r in loading)
    assert all(0 <= r["fraction"] < 1 for r in loading)
    assert [r["fraction"] for r in readings] == sorted(r["fraction"] for r in readings)


async def test_loading_state_chunks_say_the_stage_and_percentage() -> None:
    text = config("--loading-delay", "3", "--load-stages", loading_state=True)
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            client.stream("POST", "/v1/chat/completions", json=chat(stream=True)) as reply,
        ):
            assert reply.status_code == 200
            raw = b"".join([chunk async for chunk in reply.aiter_raw()])
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    lines = [line for line in reasoning.splitlines() if "%" in line]
    assert any(line.startswith("warming up: ") for line in lines), reasoning
    assert any(line.startswith("opening the model file: ") for line in lines), reasoning
    percents = [int(line.split("%")[0].rsplit(" ", 1)[-1].lstrip("~")) for line in lines]
    assert percents == sorted(percents)
    assert all(p <= 99 for p in percents)
    assert "Done!" in reasoning
    assert content == "hello from s"
