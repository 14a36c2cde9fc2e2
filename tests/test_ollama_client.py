"""The official ``ollama`` Python client against a real swapd with demo upstreams.

Each test starts swapd on a loopback port with demo upstreams as real child processes and
talks to it only through ``ollama.AsyncClient`` (httpx on anyio, which runs on trio), as an
Ollama user's program would; raw httpx is used only to look at what the client hides
(the NDJSON lines, metrics, the upstream's own counters).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import ollama
import pytest
import trio

from swapd.daemon import Daemon
from swapd.testing import open_swapd, upstream_cmd

pytestmark = [
    # The ollama client raises on an error line in the middle of a stream (and a test may
    # leave a stream early) without closing httpx's inner async generators; trio's
    # asyncgen finalizer then warns that they were garbage collected unexhausted. Client
    # behaviour, harmless here: the response itself is closed.
    pytest.mark.filterwarnings(
        r"ignore:Async generator '(httpx|httpcore)\.[\w.]+' was garbage"
        r" collected before it had been exhausted:ResourceWarning"
    ),
]

CHUNKS = 6  # SSE content chunks per streamed reply (demo upstream's --chunks)
TOGETHER = "groups:\n  both:\n    swap: false\n    members: [m1, m2]\n"
PROMPT = [{"role": "user", "content": "hi there"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def reply_of(model: str) -> str:
    return f"hello from {model}"


def config(*models: str, head: str = "", flags: tuple[str, ...] = (), ttl: int = 0) -> str:
    lines = [*head.splitlines(), "healthCheckTimeout: 15", "models:"]
    for name in models:
        argv = ("--model", name, "--respond", reply_of(name), "--chunks", str(CHUNKS), *flags)
        lines += [f"  {name}:", f"    cmd: {upstream_cmd(*argv)}"]
        lines.append("    proxy: http://127.0.0.1:${PORT}")
        if ttl:
            lines.append(f"    ttl: {ttl}")
    return "\n".join(lines) + "\n"


@asynccontextmanager
async def ollama_swapd(
    text: str, **client_args: object
) -> AsyncIterator[tuple[Daemon, ollama.AsyncClient]]:
    async with open_swapd(text) as swapd:
        client = ollama.AsyncClient(host=swapd.url, timeout=20, **client_args)  # type: ignore[arg-type]
        try:
            yield swapd, client
        finally:
            await client.close()


async def loaded(client: ollama.AsyncClient) -> list[str]:
    return sorted(m.model or "" for m in (await client.ps()).models)


async def wait_unloaded(client: ollama.AsyncClient, model: str) -> None:
    while model in await loaded(client):  # noqa: ASYNC110 - polling what a client sees
        await trio.sleep(0.05)


# ----------------------------------------------------------------------------- models


async def test_list_show_and_ps() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1", "m2", ttl=300)) as (_, client):
            listed = await client.list()
            assert sorted(m.model or "" for m in listed.models) == ["m1", "m2"]
            assert all(m.digest and m.modified_at for m in listed.models)

            shown = await client.show("m1")
            assert shown.capabilities == ["completion", "tools"]
            assert shown.modelinfo == {"general.name": "m1"}
            assert (await client.show("m1:latest")).modelinfo == {"general.name": "m1"}

            assert await loaded(client) == []
            await client.chat(model="m1", messages=PROMPT, stream=False)
            ps = (await client.ps()).models
            assert [m.model for m in ps] == ["m1"]
            expires = ps[0].expires_at
            assert expires is not None
            left = expires - dt.datetime.now(dt.UTC)
            assert dt.timedelta(seconds=200) < left <= dt.timedelta(seconds=301)


async def test_ps_says_forever_without_ttl() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            await client.generate(model="m1", prompt="hello")
            (model,) = (await client.ps()).models
            assert model.expires_at is not None
            assert model.expires_at.year == 9999


async def test_unknown_model_is_404_in_ollamas_shape() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (swapd, client):
            for call in (
                client.chat(model="nope", messages=PROMPT),
                client.show("nope"),
                client.embed(model="nope", input="x"),
            ):
                with pytest.raises(ollama.ResponseError) as caught:
                    await call
                assert caught.value.status_code == 404
                assert "nope" in caught.value.error
            async with httpx.AsyncClient(base_url=swapd.url) as http:
                reply = await http.post("/api/chat", json={"model": "nope", "messages": PROMPT})
                assert reply.status_code == 404
                assert set(reply.json()) == {"error"}


async def test_model_management_answers_clearly() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            for call in (
                client.pull("llama3"),
                client.delete("m1"),
                client.copy("m1", "m3"),
                client.create(model="m3", from_="m1"),
            ):
                with pytest.raises(ollama.ResponseError) as caught:
                    await call
                assert caught.value.status_code == 501
                assert "config" in caught.value.error


async def test_bad_requests_are_400() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (swapd, client):
            with pytest.raises(ollama.ResponseError) as caught:
                await client.chat(model="m1", messages=PROMPT, keep_alive="soon")
            assert caught.value.status_code == 400
            assert "keep_alive" in caught.value.error
            async with httpx.AsyncClient(base_url=swapd.url) as http:
                for body in (
                    b"not json",
                    json.dumps({"model": "m1", "messages": PROMPT, "format": "yaml"}).encode(),
                    json.dumps({"messages": PROMPT}).encode(),
                ):
                    reply = await http.post("/api/chat", content=body)
                    assert reply.status_code == 400, reply.text
                    assert isinstance(reply.json()["error"], str)


# ----------------------------------------------------------------------------- chat


async def test_chat_not_streamed() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            answer = await client.chat(model="m1", messages=PROMPT, stream=False)
            assert answer.message.role == "assistant"
            assert answer.message.content == reply_of("m1")
            assert answer.model == "m1"
            assert answer.done is True
            assert answer.done_reason == "stop"
            assert answer.prompt_eval_count == 2  # the demo counts words
            assert answer.eval_count == len(reply_of("m1").split())
            assert answer.total_duration and answer.total_duration > 0
            assert answer.eval_duration and answer.eval_duration > 0
            assert answer.load_duration is not None
            assert answer.prompt_eval_duration is not None


async def test_chat_streamed_line_per_event() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            parts = [p async for p in await client.chat(model="m1", messages=PROMPT, stream=True)]
            content = [p.message.content for p in parts if not p.done]
            assert len(content) == CHUNKS  # one NDJSON line per upstream event
            assert "".join(c or "" for c in content) == reply_of("m1")
            last = parts[-1]
            assert last.done is True
            assert last.done_reason == "stop"
            assert last.eval_count == CHUNKS
            assert last.prompt_eval_count == 2
            assert last.total_duration and last.total_duration > 0


async def test_chat_stream_is_ndjson_and_usage_is_metered() -> None:
    with trio.fail_after(30):
        async with (
            ollama_swapd(config("m1")) as (swapd, _),
            httpx.AsyncClient(base_url=swapd.url) as http,
        ):
            body = {"model": "m1", "messages": PROMPT}
            async with http.stream("POST", "/api/chat", json=body) as reply:
                assert reply.headers["content-type"] == "application/x-ndjson"
                lines = [json.loads(line) async for line in reply.aiter_lines() if line]
            assert [line["done"] for line in lines] == [False] * CHUNKS + [True]
            assert all(line["created_at"].endswith("Z") for line in lines)
            metrics = (await http.get("/api/metrics")).json()
            (record,) = [m for m in metrics if m["model"] == "m1"]
            assert record["output_tokens"] == CHUNKS
            assert record["input_tokens"] == 2


async def test_generate_streamed_and_not() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            answer = await client.generate(model="m1", prompt="hello", system="be brief")
            assert answer.response == reply_of("m1")
            assert answer.done is True
            assert answer.prompt_eval_count == 3  # "be brief" + "hello" (demo counts words)
            parts = [p async for p in await client.generate(model="m1", prompt="hi", stream=True)]
            assert "".join(p.response or "" for p in parts) == reply_of("m1")
            assert len(parts) == CHUNKS + 1
            assert parts[-1].done is True
            raw = await client.generate(model="m1", prompt="Once upon", raw=True)
            assert raw.response == reply_of("m1")  # through /v1/completions


async def test_chat_with_options_and_image() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            answer = await client.chat(
                model="m1",
                messages=[{"role": "user", "content": "what is this", "images": [png]}],
                options={"temperature": 0.2, "num_predict": 64, "num_ctx": 4096, "seed": 1},
            )
            assert answer.message.content == reply_of("m1")


# ----------------------------------------------------------------------------- features


async def test_structured_output() -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            answer = await client.chat(model="m1", messages=PROMPT, format=schema)
            assert json.loads(answer.message.content or "") == {"name": reply_of("m1"), "age": 1}
            parts = [
                p.message.content or ""
                async for p in await client.chat(
                    model="m1", messages=PROMPT, format="json", stream=True
                )
            ]
            assert json.loads("".join(parts)) == {"reply": reply_of("m1")}


async def test_tool_calls_both_ways() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            answer = await client.chat(model="m1", messages=PROMPT, tools=[WEATHER_TOOL])
            (call,) = answer.message.tool_calls or []
            assert call.function.name == "get_weather"
            assert call.function.arguments == {"city": "city value", "days": 1}

            stream = await client.chat(
                model="m1", messages=PROMPT, tools=[WEATHER_TOOL], stream=True
            )
            calls = [c async for p in stream for c in (p.message.tool_calls or [])]
            assert [(c.function.name, c.function.arguments) for c in calls] == [
                ("get_weather", {"city": "city value", "days": 1})
            ]

            # The call goes back with its result; the model then answers in text.
            history = [
                *PROMPT,
                answer.message,
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            ]
            final = await client.chat(model="m1", messages=history, tools=[WEATHER_TOOL])
            assert final.message.content == reply_of("m1")
            assert not final.message.tool_calls


async def test_think_gives_thinking() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            answer = await client.chat(model="m1", messages=PROMPT, think=True)
            assert answer.message.thinking == "Thinking it over before answering."
            assert answer.message.content == reply_of("m1")
            parts = [
                p
                async for p in await client.chat(
                    model="m1", messages=PROMPT, think=True, stream=True
                )
            ]
            assert "".join(p.message.thinking or "" for p in parts) == (
                "Thinking it over before answering."
            )
            plain = await client.chat(model="m1", messages=PROMPT, think=False)
            assert plain.message.thinking is None


async def test_embed_and_embeddings() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            embedded = await client.embed(model="m1", input=["alpha", "beta"])
            assert len(embedded.embeddings) == 2
            assert all(len(v) == 8 for v in embedded.embeddings)
            assert all(math.isclose(math.hypot(*v), 1.0) for v in embedded.embeddings)
            assert embedded.embeddings[0] != embedded.embeddings[1]
            assert embedded.prompt_eval_count == 2
            one = await client.embed(model="m1", input="alpha")
            assert one.embeddings == embedded.embeddings[:1]
            old = await client.embeddings(model="m1", prompt="alpha")
            assert len(old.embedding) == 8
            norm = math.hypot(*old.embedding)
            assert [x / norm for x in old.embedding] == pytest.approx(embedded.embeddings[0])


# ----------------------------------------------------------------------------- keep_alive


async def test_keep_alive_zero_unloads_after_the_answer() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1", "m2", head=TOGETHER)) as (_, client):
            await client.chat(model="m1", messages=PROMPT)
            await client.chat(model="m2", messages=PROMPT)
            assert await loaded(client) == ["m1", "m2"]
            parts = [
                p
                async for p in await client.chat(
                    model="m1", messages=PROMPT, keep_alive=0, stream=True
                )
            ]
            assert parts[-1].done
            await wait_unloaded(client, "m1")
            assert await loaded(client) == ["m2"]
            await client.generate(model="m2", prompt="hi", keep_alive="0s")
            await wait_unloaded(client, "m2")


async def test_empty_prompt_loads_and_keep_alive_zero_unloads() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            loaded_answer = await client.generate(model="m1")
            assert loaded_answer.done_reason == "load"
            assert await loaded(client) == ["m1"]
            unloaded = await client.generate(model="m1", keep_alive=0)
            assert unloaded.done_reason == "unload"
            assert await loaded(client) == []
            chat_load = await client.chat(model="m1", messages=[])
            assert chat_load.done_reason == "load"
            assert await loaded(client) == ["m1"]


async def test_default_keep_alive_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_KEEP_ALIVE", "0")
    with trio.fail_after(30):
        async with ollama_swapd(config("m1")) as (_, client):
            await client.chat(model="m1", messages=PROMPT)
            await wait_unloaded(client, "m1")
            # A request's own keep_alive wins over the default.
            await client.chat(model="m1", messages=PROMPT, keep_alive=-1)
            assert await loaded(client) == ["m1"]


async def test_keep_alive_duration_replaces_the_configured_ttl() -> None:
    with trio.fail_after(40):
        async with ollama_swapd(config("m1", ttl=300)) as (_, client):
            await client.chat(model="m1", messages=PROMPT, keep_alive="1s")
            await wait_unloaded(client, "m1")  # long before the configured 300 s


async def test_negative_keep_alive_keeps_a_model_with_a_ttl_loaded() -> None:
    with trio.fail_after(30):
        async with ollama_swapd(config("m1", ttl=1)) as (swapd, client):
            await client.chat(model="m1", messages=PROMPT, keep_alive=-1)
            (stat,) = [s for s in swapd.services.supervisor.statistics() if s.model == "m1"]
            assert stat.idle_deadline is None  # no TTL applies any more
            (entry,) = (await client.ps()).models
            assert entry.expires_at is not None and entry.expires_at.year >= 9999
            # The next request without keep_alive keeps the override it set last.
            await client.chat(model="m1", messages=PROMPT, keep_alive="1s")
            await wait_unloaded(client, "m1")


# ----------------------------------------------------------------------------- the rest applies


async def test_api_keys_apply() -> None:
    head = "apiKeys:\n  - sk-ollama-test\n"
    with trio.fail_after(30):
        async with ollama_swapd(
            config("m1", head=head), headers={"Authorization": "Bearer sk-ollama-test"}
        ) as (swapd, client):
            answer = await client.chat(model="m1", messages=PROMPT)
            assert answer.message.content == reply_of("m1")
            anonymous = ollama.AsyncClient(host=swapd.url, timeout=20)
            with pytest.raises(ollama.ResponseError) as caught:
                await anonymous.list()
            assert caught.value.status_code == 401
            assert "API key" in caught.value.error  # Ollama's shape: the message itself
            await anonymous.close()


async def test_client_disconnect_cancels_the_upstream_request() -> None:
    slow = ("--chunk-delay", "0.5")
    with trio.fail_after(30):
        async with (
            ollama_swapd(config("m1", flags=slow)) as (swapd, _),
            httpx.AsyncClient(base_url=swapd.url) as http,
        ):
            body = {"model": "m1", "messages": PROMPT}
            async with http.stream("POST", "/api/chat", json=body) as reply:
                async for line in reply.aiter_lines():
                    assert json.loads(line)["done"] is False
                    break  # leave after the first line of six
            while True:  # the upstream sees the disconnect, long before it would end
                stats = (await http.get("/upstream/m1/stats")).json()
                if stats.get("disconnects"):
                    break
                await trio.sleep(0.05)


async def test_upstream_error_is_relayed_in_ollamas_shape() -> None:
    crash = ("--crash-after-chunks", "2")
    with trio.fail_after(30):
        async with ollama_swapd(config("m1", flags=crash)) as (_, client):
            stream = await client.chat(model="m1", messages=PROMPT, stream=True)
            with pytest.raises(ollama.ResponseError) as caught:
                async for _ in stream:
                    pass
            assert "upstream" in caught.value.error


async def test_capture_shows_the_translated_request() -> None:
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    with trio.fail_after(30):
        async with (
            ollama_swapd(config("m1", head="captureBuffer: 5")) as (swapd, client),
            httpx.AsyncClient(base_url=swapd.url) as http,
        ):
            await client.chat(
                model="m1:latest",
                messages=[{"role": "user", "content": "what is this", "images": [png]}],
                options={"temperature": 0.2, "num_predict": 64, "num_ctx": 4096, "top_k": 5},
                format="json",
                stream=False,
            )
            (record,) = (await http.get("/api/metrics")).json()
            assert record["has_capture"] is True
            capture = (await http.get(f"/api/captures/{record['id']}")).json()
            assert capture["req_path"] == "/v1/chat/completions"
            sent = json.loads(base64.b64decode(capture["req_body"]))
            assert sent == {
                "model": "m1",
                "temperature": 0.2,
                "max_tokens": 64,
                "top_k": 5,
                "stream": False,
                "response_format": {"type": "json_object"},
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this"},
                            {
                                "type": "image_url",
                                "image_url": {"url": f"data:image/png;base64,{png}"},
                            },
                        ],
                    }
                ],
            }


async def test_sync_client_in_a_thread() -> None:
    def blocking_chat(url: str) -> str | None:
        with ollama.Client(host=url, timeout=20) as client:
            return client.chat(model="m1", messages=PROMPT).message.content

    with trio.fail_after(30):
        async with open_swapd(config("m1")) as swapd:
            assert await trio.to_thread.run_sync(blocking_chat, swapd.url) == reply_of("m1")
