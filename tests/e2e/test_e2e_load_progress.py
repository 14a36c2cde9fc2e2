"""Load progress with the real llama-server: the readings on ``/api/events`` move through
the server's own stages to ready without going back, and after three loads the
prediction is close to the next real load."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from swapd.testing import open_swapd

# Leaving /api/events mid-stream leaves httpcore's generators to the collector.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

TIMEOUT = 240


async def load_and_watch(client: httpx.AsyncClient, model: str) -> list[dict[str, Any]]:
    """Load ``model`` with a request; the ``loadProgress`` data seen until it is ready."""
    readings: list[dict[str, Any]] = []
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    async with client.stream("GET", "/api/events") as stream, trio.open_nursery() as nursery:

        async def ask() -> None:
            reply = await client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text

        buffer = b""
        async for chunk in stream.aiter_raw():
            if not buffer and not readings:  # the snapshot arrived: the feed is live
                nursery.start_soon(ask)
            buffer += chunk
            *blocks, buffer = buffer.split(b"\n\n")
            for block in blocks:
                outer = json.loads(block.split(b"data:", 1)[1])
                if outer["type"] == "loadProgress":
                    readings.append(json.loads(outer["data"]))
            if readings and readings[-1]["stage"] == "ready":
                break
    return readings


def smollm2_config(llama: Any) -> str:
    # -lv 4: llama-server's info lines name every stage (the default shows only three).
    return llama.config({"smollm2": llama.cmd(llama.smollm2, "smollm2", "-lv", "4")})


async def load_repeatedly(llama: Any, times: int) -> list[list[dict[str, Any]]]:
    """The readings of ``times`` loads of SmolLM2, unloaded after each."""
    loads: list[list[dict[str, Any]]] = []
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(smollm2_config(llama)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=90) as client,
        ):
            for _ in range(times):
                loads.append(await load_and_watch(client, "smollm2"))
                assert (await client.post("/api/models/unload/smollm2")).status_code == 200
    return loads


async def test_progress_moves_through_llama_servers_stages_to_ready(llama: Any) -> None:
    loads = await load_repeatedly(llama, 2)
    for readings in loads:
        fractions = [r["fraction"] for r in readings]
        assert fractions == sorted(fractions)
        assert readings[-1]["stage"] == "ready"
        assert readings[-1]["percent"] == 100
        assert all(r["fraction"] < 1 for r in readings[:-1])
        stages = [r["stage"] for r in readings]
        assert {"opening", "warming_up", "ready"} <= set(stages)
        order = ["starting", "opening", "loading_weights", "allocating", "warming_up"]
        order += ["listening", "ready"]
        ranks = [order.index(s) for s in stages]
        assert ranks == sorted(ranks)  # llama.cpp's stages come in order
    assert loads[0][0]["predictionBasis"] == "default"
    assert loads[1][0]["predictionBasis"] == "history"
    assert loads[1][0]["predicted"] == loads[0][-1]["elapsed"]


def test_after_three_loads_the_prediction_is_within_25_percent(llama: Any) -> None:
    # A plain test running trio itself: pytest-trio drops the reason of a skip.
    loads = trio.run(load_repeatedly, llama, 4)
    durations = [readings[-1]["elapsed"] for readings in loads]
    if max(durations) > 1.25 * min(durations):
        # The claim is about a model whose loads take about the same time; on a machine
        # busy enough that four identical loads differ by more than 25 % (SmolLM2 loads in
        # ~0.4 s, so 0.1 s of scheduling jitter is already 25 %), no prediction from three
        # of them can promise 25 % for the fourth.
        pytest.skip(f"this machine's load times vary too much to check: {durations}")
    learned = durations[:3]
    first_reading = loads[3][0]
    predicted = first_reading["predicted"]
    took = durations[3]
    assert first_reading["predictionBasis"] == "history"
    # The prediction is a median of the learned loads (rounded to 10 ms).
    assert min(learned) - 0.01 <= predicted <= max(learned) + 0.01, (predicted, durations)
    assert abs(predicted - took) <= 0.25 * took, (predicted, durations)
