"""The official ``openai`` and ``anthropic`` Python SDKs against a real swapd.

Each test starts swapd on a loopback port with demo upstreams as real child processes,
then talks to it only through an SDK client, as a user's program would. The async clients
run on trio directly (the SDKs' HTTP layer goes through anyio, which supports trio); the
blocking sync client runs in a worker thread. Retries are off so a failure shows at once.
"""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
import trio
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from swapd.testing import open_swapd, upstream_cmd

pytestmark = [
    # The openai SDK stops reading its SSE event generators at ``data: [DONE]`` (it breaks
    # out of ``async for`` and drains the body) without closing the inner async generators
    # (``openai._streaming.AsyncStream._iter_events``, ``SSEDecoder.aiter_bytes``, httpx2's
    # ``Response.aiter_bytes``, httpcore2's ``PoolByteStream.__aiter__``); trio's asyncgen
    # finalizer then warns that they were garbage collected unexhausted. SDK behaviour,
    # harmless here: the response was read to the end.
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(openai|httpx2|httpcore2)\.[\w.]+' was garbage"
        r" collected before it had been exhausted:ResourceWarning"
    ),
]

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi there"}]
A_PROMPT: list[MessageParam] = [{"role": "user", "content": "hi there"}]
CHUNKS = 6  # SSE content chunks per streamed reply (demo upstream's --chunks)


def reply_of(model: str) -> str:
    return f"hello from {model}"


def config(*models: str, head: str = "") -> str:
    """``models`` in the default group; each demo upstream answers ``hello from <name>``.

    ``open_swapd`` gives it a random free ``startPort`` range, so that several test runs
    on one machine do not hand the same ``${PORT}`` to their models.
    """
    lines = [*head.splitlines(), "healthCheckTimeout: 15", "models:"]
    for name in models:
        flags = ("--model", name, "--respond", reply_of(name), "--chunks", str(CHUNKS))
        lines.append(f"  {name}:")
        lines.append(f"    cmd: {upstream_cmd(*flags)}")
        lines.append("    proxy: http://127.0.0.1:${PORT}")
    return "\n".join(lines) + "\n"


def async_openai(url: str, api_key: str = "sk-anything") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=20)


def async_anthropic(url: str, api_key: str = "sk-anything") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=url, api_key=api_key, max_retries=0, timeout=20)


# ---------------------------------------------------------------------------- openai async


async def test_openai_async_chat_completion() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd, async_openai(swapd.url) as client:
            completion = await client.chat.completions.create(model="m1", messages=PROMPT)
            assert completion.choices[0].message.content == reply_of("m1")
            assert completion.choices[0].message.role == "assistant"
            assert completion.choices[0].finish_reason == "stop"
            assert completion.model == "m1"
            assert completion.usage is not None
            assert completion.usage.total_tokens > 0


async def test_openai_async_streaming_chat() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd, async_openai(swapd.url) as client:
            stream = await client.chat.completions.create(model="m1", messages=PROMPT, stream=True)
            async with stream:
                chunks = [chunk async for chunk in stream]
            pieces = [c.choices[0].delta.content for c in chunks if c.choices]
            content = [p for p in pieces if p]
            assert "".join(content) == reply_of("m1")
            assert len(content) == CHUNKS  # one SDK chunk per upstream SSE event
            assert chunks[0].choices[0].delta.role == "assistant"
            assert chunks[-1].choices[0].finish_reason == "stop"


async def test_openai_async_embeddings_are_deterministic() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd, async_openai(swapd.url) as client:
            first = await client.embeddings.create(model="m1", input=["alpha", "beta"])
            again = await client.embeddings.create(model="m1", input=["alpha", "beta"])
            vectors = [item.embedding for item in first.data]
            assert [item.index for item in first.data] == [0, 1]
            assert [len(v) for v in vectors] == [8, 8]
            assert all(isinstance(x, float) for v in vectors for x in v)
            assert vectors[0] != vectors[1]
            assert [item.embedding for item in again.data] == vectors


async def test_openai_async_completions() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd, async_openai(swapd.url) as client:
            completion = await client.completions.create(model="m1", prompt="Once upon")
            assert completion.choices[0].text == reply_of("m1")
            assert completion.usage is not None
            assert completion.usage.total_tokens > 0


async def test_openai_async_models_list() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1", "m2")) as swapd, async_openai(swapd.url) as client:
            page = await client.models.list()
            assert sorted(model.id for model in page.data) == ["m1", "m2"]
            assert {model.object for model in page.data} == {"model"}
            listed = [model.id async for model in client.models.list()]  # auto-pagination
            assert sorted(listed) == ["m1", "m2"]


# ----------------------------------------------------------------------------- openai sync


async def test_openai_sync_client_in_a_thread() -> None:
    def blocking_chat(url: str) -> str | None:
        with openai.OpenAI(
            base_url=url + "/v1", api_key="sk-anything", max_retries=0, timeout=20
        ) as client:
            completion = client.chat.completions.create(model="m1", messages=PROMPT)
            return completion.choices[0].message.content

    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd:
            content = await trio.to_thread.run_sync(blocking_chat, swapd.url)
            assert content == reply_of("m1")


# ------------------------------------------------------------------------- anthropic async


async def test_anthropic_async_messages_create() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd, async_anthropic(swapd.url) as client:
            message = await client.messages.create(model="m1", max_tokens=64, messages=A_PROMPT)
            assert message.content[0].type == "text"
            assert message.content[0].text == reply_of("m1")
            assert message.role == "assistant"
            assert message.stop_reason == "end_turn"
            assert message.usage.input_tokens > 0
            assert message.usage.output_tokens > 0


async def test_anthropic_async_messages_stream() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd, async_anthropic(swapd.url) as client:
            async with client.messages.stream(
                model="m1", max_tokens=64, messages=A_PROMPT
            ) as stream:
                pieces = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            assert "".join(pieces) == reply_of("m1")
            assert len(pieces) == CHUNKS
            assert final.content[0].type == "text"
            assert final.content[0].text == reply_of("m1")
            assert final.stop_reason == "end_turn"
            assert final.usage.output_tokens > 0


async def test_anthropic_async_count_tokens() -> None:
    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd, async_anthropic(swapd.url) as client:
            counted = await client.messages.count_tokens(model="m1", messages=A_PROMPT)
            assert counted.input_tokens > 0


# ---------------------------------------------------------------------------------- errors


async def test_unknown_model_is_not_found_with_close_matches() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config("llama3", "qwen2")) as swapd,
            async_openai(swapd.url) as oai,
            async_anthropic(swapd.url) as ant,
        ):
            with pytest.raises(openai.NotFoundError) as caught:
                await oai.chat.completions.create(model="llama-3", messages=PROMPT)
            assert caught.value.status_code == 404
            assert "did you mean: llama3?" in caught.value.message
            assert isinstance(caught.value.body, dict)
            assert caught.value.body["type"] == "invalid_request_error"

            with pytest.raises(anthropic.NotFoundError) as caught_a:
                await ant.messages.create(model="llama-3", max_tokens=8, messages=A_PROMPT)
            assert caught_a.value.status_code == 404
            assert "did you mean: llama3?" in caught_a.value.message
            assert isinstance(caught_a.value.body, dict)
            assert caught_a.value.body["error"]["type"] == "not_found_error"


async def test_api_keys_through_the_sdks() -> None:
    text = config("m1", head="apiKeys: [sk-right]")
    with trio.fail_after(30):
        async with open_swapd(text) as swapd:
            async with async_openai(swapd.url, api_key="sk-wrong") as wrong:
                with pytest.raises(openai.AuthenticationError) as caught:
                    await wrong.chat.completions.create(model="m1", messages=PROMPT)
                assert caught.value.status_code == 401
                with pytest.raises(openai.AuthenticationError):
                    await wrong.models.list()
            async with async_anthropic(swapd.url, api_key="sk-wrong") as wrong_a:
                with pytest.raises(anthropic.AuthenticationError) as caught_a:
                    await wrong_a.messages.create(model="m1", max_tokens=8, messages=A_PROMPT)
                assert caught_a.value.status_code == 401

            # openai sends ``Authorization: Bearer``, anthropic sends ``x-api-key``
            async with async_openai(swapd.url, api_key="sk-right") as right:
                completion = await right.chat.completions.create(model="m1", messages=PROMPT)
                assert completion.choices[0].message.content == reply_of("m1")
            async with async_anthropic(swapd.url, api_key="sk-right") as right_a:
                message = await right_a.messages.create(model="m1", max_tokens=8, messages=A_PROMPT)
                assert message.content[0].type == "text"
                assert message.content[0].text == reply_of("m1")


# -------------------------------------------------------------------------------- swapping


async def test_alternating_models_swap_through_the_sdks() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config("m1", "m2")) as swapd,
            async_openai(swapd.url) as oai,
            async_anthropic(swapd.url) as ant,
        ):
            for model in ("m1", "m2", "m1", "m2"):
                completion = await oai.chat.completions.create(model=model, messages=PROMPT)
                assert completion.choices[0].message.content == reply_of(model)
            for model in ("m1", "m2"):
                message = await ant.messages.create(model=model, max_tokens=8, messages=A_PROMPT)
                assert message.content[0].type == "text"
                assert message.content[0].text == reply_of(model)
            stream = await oai.chat.completions.create(model="m1", messages=PROMPT, stream=True)
            async with stream:
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            assert text == reply_of("m1")
            async with httpx.AsyncClient(base_url=swapd.url) as admin:
                running = (await admin.get("/running")).json()["running"]
            assert [r["model"] for r in running] == ["m1"]  # m2 was stopped for m1
