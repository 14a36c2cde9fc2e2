"""Sleep and wake with a real llama-server.

llama-server has no HTTP endpoint to put it to sleep (vLLM's ``/sleep`` and ``/wake_up``
are what swapd's ``sleepEndpoints``/``wakeEndpoints`` drive; see examples/vllm-sleep.yaml).
Its equivalent is its own idle sleep, ``--sleep-idle-seconds N``: after N idle seconds it
frees the model and its context, keeping the process and port, and the next request
reloads the model before answering. Through swapd that must be invisible: the model stays
``ready`` in the same process, and the answer after the wake is the answer before it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from e2e_support import QUESTION

from swapd.testing import open_swapd

TIMEOUT = 120


async def is_sleeping(client: httpx.AsyncClient) -> bool:
    props = await client.get("/upstream/smollm2/props")  # answered without waking it
    assert props.status_code == 200
    return bool(props.json()["is_sleeping"])


# Leaving the endless log stream early leaves httpx's generators unexhausted; harmless.
@pytest.mark.filterwarnings(
    r"ignore:Async generator '(httpx|httpcore)\.[\w.]+' was garbage collected:ResourceWarning"
)
async def test_llama_server_idle_sleep_and_wake_through_swapd(llama: Any) -> None:
    cmd = llama.cmd(llama.smollm2, "smollm2", "--sleep-idle-seconds", "1")
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(llama.config({"smollm2": cmd})) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as client,
        ):
            first = await client.post("/v1/chat/completions", json=QUESTION)
            assert first.status_code == 200
            answer = first.json()["choices"][0]["message"]["content"]
            assert "Paris" in answer
            (before,) = (await client.get("/running")).json()["running"]

            with trio.fail_after(30):
                while not await is_sleeping(client):  # noqa: ASYNC110 - polled by HTTP
                    await trio.sleep(0.25)
            # llama-server said so in its own log, which swapd keeps per model.
            with trio.fail_after(10):
                async with client.stream("GET", "/logs/stream/smollm2") as logs:
                    async for line in logs.aiter_lines():
                        if "server is entering sleeping state" in line:
                            break

            woken = await client.post("/v1/chat/completions", json=QUESTION)
            assert woken.status_code == 200
            assert woken.json()["choices"][0]["message"]["content"] == answer
            assert not await is_sleeping(client)
            (after,) = (await client.get("/running")).json()["running"]
            assert after["pid"] == before["pid"]  # the same process: a wake, not a restart
            assert after["state"] == "ready"
