"""Token metrics as llama-swap v250 reads them (delta spec section 5): vLLM's ``metrics``,
speculative-decoding draft counts, usage gathered across Responses-API and Anthropic stream
events, ``duration_ms``. Unit tests feed recorded response bodies to the tap; the HTTP test
runs the demo upstream with ``--draft`` and reads the activity row back.

The bodies are written in the shapes the servers document: vLLM's per-request ``metrics``
(``time_to_first_token_ms``, ``mean_itl_ms``, ``speculative_decoding`` with
``--per-request-spec-decode-metrics``), llama-server's ``timings`` with ``draft_n`` and
``draft_n_accepted``, OpenAI's Responses-API events and Anthropic's Messages events.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import trio

from swapd.observe.metrics import TokenMetrics, UsageTap
from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def tap_body(body: bytes, *, sse: bool, chunk: int = 7) -> TokenMetrics:
    tap = UsageTap(
        content_type="text/event-stream" if sse else "application/json",
        content_encoding=None,
        path="/v1/chat/completions",
    )
    for at in range(0, len(body), chunk):  # small chunks: keys split across them
        tap.feed(body[at : at + chunk])
    record = tap.finish(model="m", status=200, started=0.0, first_byte_at=0.1, ended=2.0)
    assert record is not None
    return record


def sse(*events: dict[str, object], done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


VLLM_JSON = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 200},
    },
    "metrics": {
        "time_to_first_token_ms": 250.0,
        "mean_itl_ms": 12.5,
        "speculative_decoding": {"num_draft_tokens": 420, "num_accepted_draft_tokens": 311},
    },
}


def test_vllm_metrics_give_speeds_and_draft_counts() -> None:
    record = tap_body(json.dumps(VLLM_JSON).encode(), sse=False)
    assert (record.input_tokens, record.output_tokens, record.cache_tokens) == (1200, 300, 200)
    assert record.prompt_per_second == 4000.0  # (1200 - 200) / 0.25 s
    assert record.tokens_per_second == 80.0  # 1000 / 12.5 ms
    assert (record.draft_tokens, record.draft_acc_tokens) == (420, 311)


def test_vllm_draft_counts_need_both_fields() -> None:
    body = {**VLLM_JSON, "metrics": {"speculative_decoding": {"num_draft_tokens": 9}}}
    record = tap_body(json.dumps(body).encode(), sse=False)
    assert (record.draft_tokens, record.draft_acc_tokens) == (-1, -1)
    assert record.prompt_per_second == -1.0  # no time to first token: not reported


def test_vllm_streamed_metrics_are_read_from_the_last_event() -> None:
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "x"}}]}
    final = {"choices": [], "usage": VLLM_JSON["usage"], "metrics": VLLM_JSON["metrics"]}
    record = tap_body(sse(chunk, chunk, final), sse=True)
    assert (record.draft_tokens, record.draft_acc_tokens) == (420, 311)
    assert record.tokens_per_second == 80.0


def test_llama_cpp_timings_draft_counts() -> None:
    timings = {
        "prompt_n": 20,
        "prompt_ms": 100.0,
        "prompt_per_second": 200.0,
        "predicted_n": 64,
        "predicted_ms": 1600.0,
        "predicted_per_second": 40.0,
        "draft_n": 48,
        "draft_n_accepted": 30,
    }
    chunk = {"choices": [{"delta": {"content": "x"}}]}
    record = tap_body(sse(chunk, {"choices": [], "timings": timings}), sse=True)
    assert (record.draft_tokens, record.draft_acc_tokens) == (48, 30)
    assert (record.input_tokens, record.output_tokens) == (20, 64)
    assert record.duration_ms == 1700  # prompt_ms + predicted_ms
    without = tap_body(json.dumps({"timings": {"prompt_n": 3}}).encode(), sse=False)
    assert (without.draft_tokens, without.draft_acc_tokens) == (-1, -1)


def test_responses_api_usage_in_response_completed() -> None:
    created = {"type": "response.created", "response": {"id": "r", "status": "in_progress"}}
    delta = {"type": "response.output_text.delta", "delta": "hello"}
    usage = {
        "input_tokens": 37,
        "input_tokens_details": {"cached_tokens": 16},
        "output_tokens": 11,
        "total_tokens": 48,
    }
    completed = {"type": "response.completed", "response": {"id": "r", "usage": usage}}
    record = tap_body(sse(created, delta, delta, completed, done=False), sse=True)
    assert (record.input_tokens, record.output_tokens, record.cache_tokens) == (37, 11, 16)


def test_anthropic_usage_combines_message_start_and_message_delta() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 8},
        },
    }
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}}
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 15},
    }
    record = tap_body(sse(start, delta, end, {"type": "message_stop"}, done=False), sse=True)
    assert (record.input_tokens, record.output_tokens, record.cache_tokens) == (25, 15, 8)
    # a later zero does not erase an earlier count
    zero = {"type": "message_delta", "usage": {"input_tokens": 0, "output_tokens": 15}}
    record = tap_body(sse(start, zero, done=False), sse=True)
    assert (record.input_tokens, record.output_tokens) == (25, 15)


async def test_draft_counts_and_duration_reach_the_activity_row() -> None:
    cmd = upstream_cmd("--model", "m", "--draft", "8", "--chunks", "4")
    config = f"models:\n  m:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    with trio.fail_after(60):
        async with open_swapd(config) as swapd:
            client = openai.AsyncOpenAI(base_url=f"{swapd.url}/v1", api_key="none")
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            await client.close()
            async with httpx.AsyncClient(base_url=swapd.url) as http:
                for _ in range(100):  # rows are committed in batches
                    rows = (await http.get("/api/metrics/activity")).json()["data"]
                    if rows:
                        break
                    await trio.sleep(0.1)
    assert text
    (row,) = rows
    tokens = row["tokens"]
    assert (tokens["draft_tokens"], tokens["draft_acc_tokens"]) == (8, 4)  # --draft 8: half taken
    assert tokens["output_tokens"] == 4
    assert isinstance(row["duration_ms"], int) and row["duration_ms"] >= 0
