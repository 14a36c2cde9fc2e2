"""``Retry-After`` from the load prediction: a request refused with 429 because the wait
queue of a loading model is full is told to come back when the load should be done
(real HTTP, demo upstream loading slowly), and the rule itself (``retry_after_for``)."""

from __future__ import annotations

import math

import httpx
import pytest
import trio

from swapd.errors import retry_after_for
from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def test_retry_after_rounds_the_time_left_up_to_whole_seconds() -> None:
    assert retry_after_for(3.1) == 4
    assert retry_after_for(3.0) == 3
    assert retry_after_for(0.2) == 1  # never 0: "now" would be refused again
    assert retry_after_for(0.0) == 1
    assert retry_after_for(None) == 1  # not loading, or past the prediction
    assert retry_after_for(None, default=5) == 5
    assert retry_after_for(math.nan) == 1


def chat() -> dict[str, object]:
    return {"model": "s", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_full_queue_while_loading_says_when_the_load_should_end() -> None:
    cmd = upstream_cmd("--model", "s", "--respond", "hi", "--loading-delay", "6")
    text = (
        "healthCheckTimeout: 30\nmaxQueuedRequests: 1\nmodels:\n"
        f"  s:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    )
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            trio.open_nursery() as nursery,
        ):

            async def first() -> None:
                reply = await client.post("/v1/chat/completions", json=chat())
                assert reply.status_code == 200, reply.text

            nursery.start_soon(first)
            while True:  # the first request waits for the load
                running = (await client.get("/running")).json()["running"]
                if any(e["model"] == "s" and e["waiting"] >= 1 for e in running):
                    break
                await trio.sleep(0.05)
            refused = await client.post("/v1/chat/completions", json=chat())
    assert refused.status_code == 429, refused.text
    retry = int(refused.headers["retry-after"])
    # First load: predicted at the 15 s default, so well over the old constant 1 s, and
    # never more than the prediction itself.
    predicted = 15
    assert 1 < retry <= predicted
