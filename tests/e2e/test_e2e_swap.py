"""Two real llama-server models in one swap group: swapd swaps them on demand.

SmolLM2 answers a factual question; the tiny random model answers gibberish of exactly
``max_tokens`` tokens. So each reply shows which server produced it, besides the
``model`` field llama-server fills in from its ``--alias``.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio
from e2e_support import PARIS_QUESTION

from swapd.supervise.lifeline import process_alive as alive
from swapd.testing import open_swapd

TIMEOUT = 180
N = 10


def swap_config(llama: Any) -> str:
    return llama.config(
        {"smollm2": llama.cmd(llama.smollm2, "smollm2"), "tiny": llama.cmd(llama.tiny, "tiny")},
        swap_group=True,
    )


def chat_body(model: str, question: str, max_tokens: int, **more: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **more,
    }


async def running(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    reply = await client.get("/running")
    assert reply.status_code == 200
    return {entry["model"]: entry for entry in reply.json()["running"]}


async def test_alternating_requests_swap_the_right_model_in(llama: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(swap_config(llama)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as client,
        ):
            pids: list[int] = []
            answers: dict[str, list[str]] = {"smollm2": [], "tiny": []}
            for model in ["smollm2", "tiny", "smollm2", "tiny"]:
                reply = await client.post(
                    "/v1/chat/completions",
                    json=chat_body(model, PARIS_QUESTION, 24 if model == "smollm2" else N),
                )
                assert reply.status_code == 200, reply.text
                data = reply.json()
                assert data["model"] == model  # llama-server's --alias: the right server
                answers[model].append(data["choices"][0]["message"]["content"])
                if model == "tiny":
                    assert data["usage"]["completion_tokens"] == N
                    assert data["choices"][0]["finish_reason"] == "length"

                # Only the model just used is running; the other one's process is gone.
                now = await running(client)
                assert list(now) == [model]
                assert now[model]["state"] == "ready"
                pid = now[model]["pid"]
                assert pid not in pids  # a fresh process on every swap
                assert all(not alive(old) for old in pids)
                assert alive(pid)
                pids.append(pid)

            assert all("Paris" in answer for answer in answers["smollm2"])
            assert not any("Paris" in answer for answer in answers["tiny"])
            # temperature 0: a restarted server gives the same answer again
            assert answers["smollm2"][0] == answers["smollm2"][1]
            assert answers["tiny"][0] == answers["tiny"][1]


async def test_a_request_for_the_other_model_waits_for_the_stream_in_flight(llama: Any) -> None:
    """The tiny model is asked for while SmolLM2 streams: SmolLM2 finishes its stream
    (through to ``[DONE]``) before swapd swaps, then the tiny model answers."""
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(swap_config(llama)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as client,
        ):
            order: list[str] = []
            streaming = trio.Event()
            events: list[str] = []

            async def stream_smollm2() -> None:
                body = chat_body(
                    "smollm2", "Count from one to twenty.", 48, stream=True, ignore_eos=True
                )
                async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                    assert reply.status_code == 200
                    async for line in reply.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line)
                            streaming.set()
                order.append("smollm2")

            async def ask_tiny() -> None:
                await streaming.wait()
                reply = await client.post("/v1/chat/completions", json=chat_body("tiny", "hi", N))
                assert reply.status_code == 200
                assert reply.json()["model"] == "tiny"
                order.append("tiny")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_smollm2)
                nursery.start_soon(ask_tiny)
            assert order == ["smollm2", "tiny"]
            assert events[-1] == "data: [DONE]"
            assert len(events) >= 48  # one event per token, none lost to the swap
            assert list(await running(client)) == ["tiny"]
