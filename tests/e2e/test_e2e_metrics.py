"""llama.cpp's ``timings`` land in swapd's token metrics, for streamed and plain responses
(and an Anthropic stream's split ``usage``); the SSE stream reaches the client framed
exactly as llama-server wrote it."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from swapd.testing import open_swapd

TIMEOUT = 120
N = 16
CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "hello server, stream some tokens"}],
    "max_tokens": N,
    "temperature": 0,
}


def sse_events(body: str) -> list[str]:
    """The ``data:`` payloads of an event stream, checking its framing on the way."""
    assert body.endswith("\n\n"), body[-80:]
    events = []
    for block in body[:-2].split("\n\n"):
        lines = [line for line in block.split("\n") if not line.startswith(":")]  # pings
        assert len(lines) == 1, block
        assert lines[0].startswith("data: "), block
        events.append(lines[0].removeprefix("data: "))
    return events


async def records(client: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """The last ``count`` metrics records, once there are that many (a streamed exchange
    is recorded when swapd has passed its last byte on, a moment after the client)."""
    while True:
        found = (await client.get("/api/metrics")).json()
        if len(found) >= count:
            return list(found[-count:])
        await trio.sleep(0.05)


def assert_record_matches(record: dict[str, Any], timings: dict[str, Any]) -> None:
    assert record["model"] == "tiny"
    assert record["input_tokens"] == timings["prompt_n"]
    assert record["output_tokens"] == timings["predicted_n"]
    assert record["cache_tokens"] == timings["cache_n"]
    assert math.isclose(record["tokens_per_second"], timings["predicted_per_second"])
    assert math.isclose(record["prompt_per_second"], timings["prompt_per_second"])
    assert record["duration_ms"] == int(timings["prompt_ms"] + timings["predicted_ms"])


async def test_timings_land_in_api_metrics_streamed_and_plain(llama: Any) -> None:
    config = llama.config({"tiny": llama.cmd(llama.tiny, "tiny")})
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as client,
        ):
            # 1. plain JSON
            plain = await client.post("/v1/chat/completions", json=CHAT)
            assert plain.status_code == 200
            assert plain.headers["content-type"].startswith("application/json")
            plain_timings = plain.json()["timings"]
            assert plain_timings["predicted_n"] == N
            (record,) = await records(client, 1)
            assert_record_matches(record, plain_timings)

            # 2. the same prompt streamed (without include_usage: timings ride on the
            #    finish_reason chunk), so llama.cpp's prompt cache is hit this time
            async with client.stream(
                "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
            ) as reply:
                assert reply.status_code == 200
                assert reply.headers["content-type"].startswith("text/event-stream")
                body = (await reply.aread()).decode()
            events = sse_events(body)
            assert events[-1] == "[DONE]"
            chunks = [json.loads(event) for event in events[:-1]]
            assert all(c["object"] == "chat.completion.chunk" for c in chunks)
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            assert text == plain.json()["choices"][0]["message"]["content"]
            assert len(chunks) == N + 2  # role, one per token, finish
            assert chunks[-1]["choices"][0]["finish_reason"] == "length"
            stream_timings = chunks[-1]["timings"]
            assert stream_timings["predicted_n"] == N
            assert stream_timings["cache_n"] > 0  # the repeated prompt came from the cache
            _, record = await records(client, 2)
            assert_record_matches(record, stream_timings)

            # 3. streamed legacy completion: usage and timings on the last event
            async with client.stream(
                "POST",
                "/v1/completions",
                json={"model": "tiny", "prompt": "swap the model", "max_tokens": N, "stream": True},
            ) as reply:
                events = sse_events((await reply.aread()).decode())
            assert events[-1] == "[DONE]"
            last = json.loads(events[-2])
            assert last["usage"]["completion_tokens"] == N
            _, _, record = await records(client, 3)
            assert_record_matches(record, last["timings"])

            # 4. an Anthropic stream: llama-server sends usage only (input tokens in
            #    message_start, output in message_delta) and no timings, so the record
            #    has the tokens and "unknown" (-1) speeds
            async with client.stream(
                "POST",
                "/v1/messages",
                json={
                    "model": "tiny",
                    "max_tokens": N,
                    "stream": True,
                    "messages": [{"role": "user", "content": "proxy the stream"}],
                },
            ) as reply:
                body = (await reply.aread()).decode()
            assert body.startswith("event: message_start\ndata: {")
            payloads = [
                json.loads(line.removeprefix("data: "))
                for line in body.splitlines()
                if line.startswith("data: ")
            ]
            assert payloads[-1] == {"type": "message_stop"}
            start, delta = payloads[0], payloads[-2]
            assert delta["type"] == "message_delta"
            _, _, _, record = await records(client, 4)
            assert record["input_tokens"] == start["message"]["usage"]["input_tokens"] > 0
            assert record["output_tokens"] == delta["usage"]["output_tokens"] == N
            assert record["tokens_per_second"] == record["prompt_per_second"] == -1

            # The Prometheus counters add them up.
            text_format = (await client.get("/metrics")).text
            samples = {
                (s.name, s.labels.get("model")): s.value
                for family in text_string_to_metric_families(text_format)
                for s in family.samples
            }
            assert samples[("swapd_output_tokens_total", "tiny")] == 4 * N
