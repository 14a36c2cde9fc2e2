"""The official ``ollama`` client through swapd's Ollama API to a real ``llama-server``.

The tiny random model makes counts exact: it never stops on its own, so every answer has
``num_predict`` tokens and ``done_reason: "length"``, and with ``temperature: 0`` the same
prompt gives the same text streamed or not. SmolLM2 shows the answers are real ones, and
that a JSON schema given as ``format`` constrains the output (llama-server turns it into a
grammar). Tool calls are not checked here: a 135M model does not call tools reliably.
"""

from __future__ import annotations

import json
import math
from typing import Any

import ollama
import pytest
import trio
from e2e_support import PARIS_QUESTION

from swapd.testing import open_swapd

pytestmark = [
    # The ollama client leaves httpx's inner async generators to the GC when a stream
    # ends; harmless, the body was read to its end (see tests/test_ollama_client.py).
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(httpx|httpcore)\.[\w.]+' was garbage"
        r" collected before it had been exhausted:ResourceWarning"
    ),
]

TIMEOUT = 120  # generous: CPU inference on a shared 2-core machine
N = 12  # num_predict for the tiny model
HELLO = [{"role": "user", "content": "hello model, tell me"}]
FRANCE = [{"role": "user", "content": PARIS_QUESTION}]
EXACT = {"temperature": 0, "num_predict": N, "num_ctx": 99999}  # num_ctx: ignored


def tiny_and_smollm2(llama: Any) -> str:
    return llama.config(
        {
            "tiny": llama.cmd(llama.tiny, "tiny", "--embeddings", "--pooling", "mean"),
            "smollm2": llama.cmd(llama.smollm2, "smollm2"),
        }
    )


async def loaded(client: ollama.AsyncClient) -> list[str]:
    return sorted(m.model or "" for m in (await client.ps()).models)


async def test_ollama_chat_generate_embed_on_the_tiny_model(llama: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_swapd(tiny_and_smollm2(llama)) as swapd:
            client = ollama.AsyncClient(host=swapd.url, timeout=60)
            listed = await client.list()
            assert sorted(m.model or "" for m in listed.models) == ["smollm2", "tiny"]

            chat = await client.chat(model="tiny", messages=HELLO, options=EXACT)
            assert chat.done is True
            assert chat.done_reason == "length"
            assert chat.message.content
            assert chat.eval_count == N
            assert chat.prompt_eval_count and chat.prompt_eval_count > 5  # the templated prompt
            assert chat.eval_duration and chat.eval_duration > 0  # llama.cpp's timings
            assert chat.prompt_eval_duration is not None
            assert chat.total_duration and chat.total_duration >= chat.eval_duration
            assert await loaded(client) == ["tiny"]

            # The same prompt streamed: one line per token, the same text, then done.
            parts = [
                p
                async for p in await client.chat(
                    model="tiny", messages=HELLO, options=EXACT, stream=True
                )
            ]
            tokens = [p.message.content for p in parts if not p.done]
            assert len([t for t in tokens if t]) == N
            assert "".join(t or "" for t in tokens) == chat.message.content
            assert parts[-1].done is True
            assert parts[-1].eval_count == N
            assert parts[-1].done_reason == "length"

            text = await client.generate(model="tiny", prompt="the model server", options=EXACT)
            assert text.eval_count == N
            raw = await client.generate(
                model="tiny", prompt="the model server", raw=True, options=EXACT
            )
            assert raw.eval_count == N  # through /v1/completions

            embedded = await client.embed(model="tiny", input=["hello world", "swap"])
            assert [len(v) for v in embedded.embeddings] == [64, 64]  # the tiny model's n_embd
            assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-3) for v in embedded.embeddings)
            assert embedded.embeddings[0] != embedded.embeddings[1]
            assert embedded.prompt_eval_count and embedded.prompt_eval_count > 0

            await client.chat(model="tiny", messages=HELLO, options=EXACT, keep_alive=0)
            while "tiny" in await loaded(client):  # noqa: ASYNC110 - what a client sees
                await trio.sleep(0.1)
            await client.close()


async def test_ollama_smollm2_answers_and_follows_a_schema(llama: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_swapd(tiny_and_smollm2(llama)) as swapd:
            client = ollama.AsyncClient(host=swapd.url, timeout=60)
            options = {"temperature": 0, "num_predict": 24}
            answer = await client.chat(model="smollm2", messages=FRANCE, options=options)
            assert "Paris" in (answer.message.content or "")
            assert answer.eval_count and 0 < answer.eval_count <= 24

            streamed = [
                p.message.content or ""
                async for p in await client.chat(
                    model="smollm2", messages=FRANCE, options=options, stream=True
                )
            ]
            assert "Paris" in "".join(streamed)

            generated = await client.generate(
                model="smollm2", prompt=PARIS_QUESTION, options=options
            )
            assert "Paris" in (generated.response or "")

            schema = {
                "type": "object",
                "properties": {"capital": {"type": "string", "maxLength": 20}},
                "required": ["capital"],
            }
            shaped = await client.chat(
                model="smollm2",
                messages=FRANCE,
                format=schema,
                options={"temperature": 0, "num_predict": 48},
            )
            value = json.loads(shaped.message.content or "")
            assert isinstance(value["capital"], str)
            await client.close()
