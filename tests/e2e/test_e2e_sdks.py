"""The official ``openai`` and ``anthropic`` SDKs through swapd to a real ``llama-server``.

The tiny random model makes token counts exact: it never stops on its own, so every reply
has exactly ``max_tokens`` tokens and ``finish_reason: "length"``; with ``temperature: 0``
the same prompt always gives the same text, streamed or not. SmolLM2 shows the answer is a
real one. The async clients run on trio; the blocking client runs in a worker thread.
"""

from __future__ import annotations

import math
from typing import Any

import anthropic
import openai
import pytest
import trio
from e2e_support import PARIS_QUESTION
from openai.types.chat import ChatCompletionMessageParam

from swapd.testing import open_swapd

pytestmark = [
    # The SDKs stop reading at ``data: [DONE]`` without closing their inner async
    # generators (see tests/test_sdk_clients.py); harmless, the body was read to its end.
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|anthropic|httpx2|httpcore2)\.[\w.]+' was garbage"
        r" collected before it had been exhausted:ResourceWarning"
    ),
]

TIMEOUT = 120  # generous: CPU inference on a shared 2-core machine
N = 12  # max_tokens for the tiny model
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello model, tell me"}]
FRANCE: list[ChatCompletionMessageParam] = [{"role": "user", "content": PARIS_QUESTION}]


def tiny_and_smollm2(llama: Any) -> str:
    return llama.config(
        {
            "tiny": llama.cmd(llama.tiny, "tiny", "--embeddings", "--pooling", "mean"),
            "smollm2": llama.cmd(llama.smollm2, "smollm2"),
        }
    )


def async_openai(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-none", max_retries=0, timeout=60)


def extra(obj: Any) -> dict[str, Any]:
    """Fields llama.cpp adds to OpenAI shapes (``timings``), kept by the SDK's models."""
    return dict(obj.model_extra or {})


def assert_timings(timings: dict[str, Any], predicted: int) -> None:
    assert timings["predicted_n"] == predicted
    assert timings["prompt_n"] + timings["cache_n"] > 0
    assert timings["predicted_ms"] > 0
    assert timings["predicted_per_second"] > 0


async def test_openai_async_chat_stream_completions_embeddings(llama: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(tiny_and_smollm2(llama)) as swapd,
            async_openai(swapd.url) as client,
        ):
            chat = await client.chat.completions.create(
                model="tiny", messages=HELLO, max_tokens=N, temperature=0
            )
            choice = chat.choices[0]
            assert choice.finish_reason == "length"
            assert choice.message.role == "assistant"
            assert choice.message.content
            assert choice.message.content.isascii()
            assert chat.usage is not None
            assert chat.usage.completion_tokens == N
            assert chat.usage.prompt_tokens > 5  # the ChatML-wrapped prompt
            assert chat.model == "tiny"  # llama-server's --alias
            assert chat.system_fingerprint == llama.fingerprint
            assert_timings(extra(chat)["timings"], N)

            # The same prompt streamed: one chunk per token, the same text, then usage.
            stream = await client.chat.completions.create(
                model="tiny",
                messages=HELLO,
                max_tokens=N,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with stream:
                chunks = [chunk async for chunk in stream]
            assert chunks[0].choices[0].delta.role == "assistant"
            pieces = [c.choices[0].delta.content for c in chunks if c.choices]
            assert len([p for p in pieces if p]) == N
            assert "".join(p for p in pieces if p) == choice.message.content
            finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
            assert [c.choices[0].finish_reason for c in finals] == ["length"]
            assert chunks[-1].choices == []
            assert chunks[-1].usage is not None
            assert chunks[-1].usage.completion_tokens == N
            assert_timings(extra(chunks[-1])["timings"], N)

            # Legacy completions, plain and streamed.
            text = await client.completions.create(
                model="tiny", prompt="the model server", max_tokens=N, temperature=0
            )
            assert text.object == "text_completion"
            assert text.choices[0].finish_reason == "length"
            assert text.usage is not None
            assert text.usage.completion_tokens == N
            assert_timings(extra(text)["timings"], N)
            streamed = await client.completions.create(
                model="tiny", prompt="the model server", max_tokens=N, temperature=0, stream=True
            )
            async with streamed:
                text_chunks = [chunk async for chunk in streamed]
            assert "".join(c.choices[0].text for c in text_chunks if c.choices) == (
                text.choices[0].text
            )
            assert_timings(extra(text_chunks[-1])["timings"], N)

            # Embeddings (the tiny model runs with --embeddings --pooling mean).
            first = await client.embeddings.create(model="tiny", input=["hello world", "swap"])
            again = await client.embeddings.create(model="tiny", input=["hello world", "swap"])
            vectors = [item.embedding for item in first.data]
            assert [item.index for item in first.data] == [0, 1]
            assert [len(v) for v in vectors] == [64, 64]  # the tiny model's n_embd
            assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-3) for v in vectors)
            assert vectors[0] != vectors[1]
            assert [item.embedding for item in again.data] == vectors
            assert first.usage.prompt_tokens > 0


async def test_openai_async_smollm2_answers(llama: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(tiny_and_smollm2(llama)) as swapd,
            async_openai(swapd.url) as client,
        ):
            chat = await client.chat.completions.create(
                model="smollm2", messages=FRANCE, max_tokens=24, temperature=0
            )
            answer = chat.choices[0].message.content or ""
            assert "Paris" in answer
            assert chat.model == "smollm2"

            stream = await client.chat.completions.create(
                model="smollm2", messages=FRANCE, max_tokens=24, temperature=0, stream=True
            )
            async with stream:
                pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            assert "".join(pieces) == answer


async def test_openai_sync_client_in_a_thread(llama: Any) -> None:
    def blocking(url: str) -> tuple[str, str]:
        with openai.OpenAI(
            base_url=url + "/v1", api_key="sk-none", max_retries=0, timeout=60
        ) as client:
            chat = client.chat.completions.create(
                model="smollm2", messages=FRANCE, max_tokens=24, temperature=0
            )
            with client.chat.completions.create(
                model="tiny", messages=HELLO, max_tokens=N, temperature=0, stream=True
            ) as stream:
                pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
            embedded = client.embeddings.create(model="tiny", input="hello")
            assert len(embedded.data[0].embedding) == 64
            completion = client.completions.create(
                model="tiny", prompt="hello", max_tokens=N, temperature=0
            )
            assert completion.usage is not None
            assert completion.usage.completion_tokens == N
            return chat.choices[0].message.content or "", "".join(pieces)

    with trio.fail_after(TIMEOUT):
        async with open_swapd(tiny_and_smollm2(llama)) as swapd:
            answer, streamed = await trio.to_thread.run_sync(blocking, swapd.url)
    assert "Paris" in answer
    assert streamed
    assert streamed.isascii()


async def test_anthropic_messages_create_and_stream(llama: Any) -> None:
    question: list[anthropic.types.MessageParam] = [{"role": "user", "content": PARIS_QUESTION}]
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(tiny_and_smollm2(llama)) as swapd,
            anthropic.AsyncAnthropic(
                base_url=swapd.url, api_key="sk-none", max_retries=0, timeout=60
            ) as client,
        ):
            message = await client.messages.create(
                model="smollm2", max_tokens=24, messages=question, extra_body={"temperature": 0}
            )
            assert message.role == "assistant"
            assert message.content[0].type == "text"
            assert "Paris" in message.content[0].text
            assert message.stop_reason in ("end_turn", "max_tokens")
            assert message.usage.input_tokens > 5
            assert message.usage.output_tokens > 0

            async with client.messages.stream(
                model="smollm2", max_tokens=24, messages=question, extra_body={"temperature": 0}
            ) as stream:
                pieces = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            assert "".join(pieces) == message.content[0].text
            assert final.content[0].type == "text"
            assert final.content[0].text == message.content[0].text
            assert final.stop_reason == message.stop_reason

            # The tiny model never stops on its own: exactly max_tokens, stop_reason says so.
            tiny = await client.messages.create(
                model="tiny",
                max_tokens=N,
                messages=[{"role": "user", "content": "hello"}],
                extra_body={"temperature": 0},
            )
            assert tiny.stop_reason == "max_tokens"
            assert tiny.usage.output_tokens == N
