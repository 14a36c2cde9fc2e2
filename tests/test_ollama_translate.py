"""Unit tests of the pure Ollama translation: requests, answers, keep_alive, expiry."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math

import pytest

from swapd.core.keepalive import TtlOverrides, parse_keep_alive
from swapd.core.states import ModelState
from swapd.supervise.supervisor import ModelStatistics
from swapd.web import ollama_models
from swapd.web.ollama_answer import (
    SseDecoder,
    StreamTranslator,
    Timing,
    chat_answer,
    embed_answer,
    error_message,
    generate_answer,
    stats,
)
from swapd.web.ollama_translate import (
    chat_request,
    embed_request,
    embeddings_request,
    generate_request,
    map_options,
)

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(16)).decode()


def now() -> str:
    return "2026-01-01T00:00:00Z"


# ----------------------------------------------------------------------------- requests


def test_chat_request_defaults_to_streaming_with_usage() -> None:
    up = chat_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert up.path == "/v1/chat/completions"
    assert up.body == {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert up.stream


def test_chat_request_not_streamed() -> None:
    up = chat_request({"model": "m", "messages": [], "stream": False})
    assert up.body["stream"] is False
    assert "stream_options" not in up.body


def test_options_map_to_openai_and_llama_server_names() -> None:
    options = {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
        "num_predict": 128,
        "stop": ["\n\n"],
        "repeat_penalty": 1.1,
        "presence_penalty": 0.2,
        "frequency_penalty": 0.3,
        "min_p": 0.05,
        "num_keep": 4,
        "num_ctx": 8192,
        "num_gpu": 99,
        "use_mmap": True,
    }
    assert map_options(options) == {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
        "max_tokens": 128,
        "stop": ["\n\n"],
        "repeat_penalty": 1.1,
        "presence_penalty": 0.2,
        "frequency_penalty": 0.3,
        "min_p": 0.05,
        "n_keep": 4,
    }


@pytest.mark.parametrize("value", [-1, -2])
def test_unlimited_num_predict_sets_no_limit(value: int) -> None:
    assert map_options({"num_predict": value}) == {}


def test_a_single_stop_string_becomes_a_list() -> None:
    assert map_options({"stop": "END"}) == {"stop": ["END"]}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", {"type": "json_object"}),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}},
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "response",
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                    "strict": True,
                },
            },
        ),
    ],
)
def test_format_becomes_response_format(fmt: object, expected: object) -> None:
    up = chat_request({"model": "m", "messages": [], "format": fmt})
    assert up.body["response_format"] == expected


def test_empty_format_is_no_format() -> None:
    assert "response_format" not in chat_request({"model": "m", "format": ""}).body


def test_images_become_image_url_parts_with_their_type() -> None:
    message = {"role": "user", "content": "what is it", "images": [PNG, JPEG]}
    up = chat_request({"model": "m", "messages": [message]})
    assert up.body["messages"][0]["content"] == [
        {"type": "text", "text": "what is it"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
    ]


def test_an_image_that_is_not_base64_is_refused() -> None:
    with pytest.raises(ValueError, match="base64"):
        chat_request({"model": "m", "messages": [{"role": "user", "images": ["not base64!"]}]})


def test_tools_pass_and_tool_calls_get_ids_their_answers_take() -> None:
    tool = {"function": {"name": "f", "parameters": {"type": "object"}}}
    history = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "f", "arguments": {"x": 1}}},
                {"function": {"name": "g", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "one", "tool_name": "f"},
        {"role": "tool", "content": "two", "tool_name": "g"},
    ]
    up = chat_request({"model": "m", "messages": history, "tools": [tool]})
    assert up.body["tools"] == [{**tool, "type": "function"}]
    assistant, first, second = up.body["messages"][1:]
    assert assistant["tool_calls"] == [
        {"id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
        {"id": "call_1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]
    assert first == {"role": "tool", "content": "one", "tool_call_id": "call_0"}
    assert second == {"role": "tool", "content": "two", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("think", "fields"),
    [
        (True, {"chat_template_kwargs": {"enable_thinking": True}}),
        (False, {"chat_template_kwargs": {"enable_thinking": False}}),
        (
            "high",
            {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "high"},
        ),
    ],
)
def test_think(think: object, fields: dict[str, object]) -> None:
    body = chat_request({"model": "m", "messages": [], "think": think}).body
    assert {k: body[k] for k in fields} == fields


def test_generate_request_is_a_system_and_a_user_message() -> None:
    up = generate_request(
        {"model": "m", "prompt": "hello", "system": "be brief", "images": [PNG], "stream": False}
    )
    assert up.path == "/v1/chat/completions"
    assert up.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hello"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
    ]


def test_raw_generate_uses_completions() -> None:
    up = generate_request({"model": "m", "prompt": "<s>Once", "raw": True})
    assert up.path == "/v1/completions"
    assert up.body["prompt"] == "<s>Once"
    assert "messages" not in up.body


def test_embed_requests() -> None:
    assert embed_request({"model": "e", "input": ["a", "b"], "dimensions": 4}).body == {
        "model": "e",
        "input": ["a", "b"],
        "dimensions": 4,
    }
    assert embeddings_request({"model": "e", "prompt": "a"}).body == {"model": "e", "input": "a"}


@pytest.mark.parametrize(
    ("call", "body", "message"),
    [
        (chat_request, {"messages": []}, "model"),
        (chat_request, {"model": "m", "messages": "hi"}, "messages"),
        (chat_request, {"model": "m", "format": "yaml"}, "format"),
        (chat_request, {"model": "m", "options": [1]}, "options"),
        (chat_request, {"model": "m", "think": "lots"}, "think"),
        (chat_request, {"model": "m", "tools": [{"name": "f"}]}, "tool"),
        (chat_request, {"model": "m", "messages": [{"content": "x"}]}, "role"),
        (generate_request, {"model": "m", "prompt": "a", "suffix": "b"}, "suffix"),
        (generate_request, {"model": "m", "prompt": 3}, "prompt"),
        (embed_request, {"model": "m", "input": []}, "input"),
        (embed_request, {"model": "m", "input": "a", "dimensions": 0}, "dimensions"),
        (embeddings_request, {"model": "m"}, "prompt"),
    ],
)
def test_bad_requests_say_what_is_wrong(
    call: object, body: dict[str, object], message: str
) -> None:
    assert callable(call)
    with pytest.raises(ValueError, match=message):
        call(body)


# ----------------------------------------------------------------------------- answers


def sse(*events: object) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n"
        for e in events
    )


def chunk(
    delta: dict[str, object], finish: str | None = None, **extra: object
) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


def test_sse_decoder_splits_events_across_chunk_boundaries() -> None:
    data = sse({"a": 1}, {"b": 2}, b"[DONE]").replace(b"\n", b"\r\n")
    decoder = SseDecoder()
    events = []
    for i in range(len(data)):
        events += decoder.feed(data[i : i + 1])
    assert events == ['{"a": 1}', '{"b": 2}', "[DONE]"]
    assert decoder.close() == []


def test_sse_decoder_close_flushes_an_unterminated_event() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"a": 1}') == []
    assert decoder.close() == ['{"a": 1}']


def test_stream_translator_chat_lines() -> None:
    translator = StreamTranslator("chat", "m", now, think=None)
    lines = []
    for event in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "hmm"}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop", timings={"prompt_n": 3, "prompt_ms": 2.0, "predicted_ms": 10.0}),
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ):
        lines += translator.event(json.dumps(event))
    assert translator.event("[DONE]") == []
    lines += translator.finish(Timing(started=1.0, answered=1.5, first=1.6, ended=2.0))
    assert [line["message"] for line in lines] == [
        {"role": "assistant", "content": "", "thinking": "hmm"},
        {"role": "assistant", "content": "Hel"},
        {"role": "assistant", "content": "lo"},
        {"role": "assistant", "content": ""},
    ]
    assert [line["done"] for line in lines] == [False, False, False, True]
    done = lines[-1]
    assert done["done_reason"] == "stop"
    assert done["created_at"] == now()
    assert done["total_duration"] == 1_000_000_000
    assert done["load_duration"] == 500_000_000
    assert done["prompt_eval_count"] == 3
    assert done["prompt_eval_duration"] == 2_000_000
    assert done["eval_count"] == 2
    assert done["eval_duration"] == 10_000_000


def test_stream_translator_joins_tool_call_fragments() -> None:
    translator = StreamTranslator("chat", "m", now, think=None)
    events = [
        chunk(
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    ]
    assert [line for e in events for line in translator.event(json.dumps(e))] == []
    (line,) = translator.event(json.dumps(chunk({}, "tool_calls")))
    assert line["message"]["tool_calls"] == [
        {"id": "c1", "function": {"index": 0, "name": "f", "arguments": {"city": "Paris"}}}
    ]
    (done,) = translator.finish(Timing(started=0.0, ended=1.0))
    assert done["done_reason"] == "stop"


def test_stream_translator_refuses_tool_arguments_that_are_not_json() -> None:
    translator = StreamTranslator("chat", "m", now, think=None)
    fragment = {"index": 0, "function": {"name": "f", "arguments": "{oops"}}
    translator.event(json.dumps(chunk({"tool_calls": [fragment]})))
    with pytest.raises(ValueError, match="not JSON"):
        translator.event(json.dumps(chunk({}, "tool_calls")))


def test_stream_translator_generate_and_completions_text() -> None:
    translator = StreamTranslator("generate", "m", now, think=False)
    lines = translator.event(json.dumps(chunk({"content": "a", "reasoning_content": "x"})))
    lines += translator.event(json.dumps({"choices": [{"text": "b", "finish_reason": "length"}]}))
    lines += translator.finish(Timing(started=0.0, ended=0.5))
    assert [(line["response"], line["done"]) for line in lines] == [
        ("a", False),
        ("b", False),
        ("", True),
    ]
    assert "thinking" not in lines[0]  # think: false drops the reasoning
    assert lines[-1]["done_reason"] == "length"


def test_stream_translator_error_event_raises_its_message() -> None:
    translator = StreamTranslator("chat", "m", now, think=None)
    event = {"error": {"message": "the upstream stopped", "type": "server_error"}}
    with pytest.raises(ValueError, match="the upstream stopped"):
        translator.event(json.dumps(event))


def test_stats_fall_back_to_swapds_clock_without_timings() -> None:
    counts = stats(
        {"prompt_tokens": 5, "completion_tokens": 7},
        None,
        Timing(started=10.0, answered=11.0, first=11.25, ended=12.0),
    )
    assert counts == {
        "total_duration": 2_000_000_000,
        "load_duration": 1_000_000_000,
        "prompt_eval_count": 5,
        "prompt_eval_duration": 250_000_000,
        "eval_count": 7,
        "eval_duration": 750_000_000,
    }


def test_chat_answer_with_tool_calls_and_thinking() -> None:
    message = {
        "role": "assistant",
        "content": "",
        "reasoning_content": "let me see",
        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    }
    answer = {
        "choices": [{"message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    out = chat_answer(answer, "m:latest", now(), None, Timing(started=0.0, ended=1.0))
    assert out["model"] == "m:latest"
    assert out["message"] == {
        "role": "assistant",
        "content": "",
        "thinking": "let me see",
        "tool_calls": [{"id": "c", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}],
    }
    assert out["done"] is True
    assert out["eval_count"] == 2


def test_generate_answer_from_completions() -> None:
    answer = {"choices": [{"text": "once", "finish_reason": "stop"}]}
    out = generate_answer(answer, "m", now(), None, Timing(started=0.0, ended=1.0))
    assert out["response"] == "once"
    assert out["done_reason"] == "stop"


def test_embed_answer_normalizes_in_order() -> None:
    answer = {
        "data": [{"index": 1, "embedding": [0.0, 2.0]}, {"index": 0, "embedding": [3.0, 4.0]}],
        "usage": {"prompt_tokens": 2},
    }
    out = embed_answer(answer, "e", Timing(started=0.0, answered=0.5, ended=1.0))
    assert out["embeddings"] == [[0.6, 0.8], [0.0, 1.0]]
    assert out["prompt_eval_count"] == 2
    assert out["load_duration"] == 500_000_000


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"error": {"message": "bad thing"}}', "bad thing"),
        (b'{"error": "plain"}', "plain"),
        (b"upstream exploded", "upstream exploded"),
    ],
)
def test_error_message(body: bytes, message: str) -> None:
    assert error_message(body) == message


# ----------------------------------------------------------------------------- keep_alive


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (300, 300.0),
        (2.5, 2.5),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("300", 300.0),
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        (-1, math.inf),
        ("-1m", math.inf),
        ("-1", math.inf),
    ],
)
def test_parse_keep_alive(value: object, seconds: float) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", "m", True, None, [1]])
def test_parse_keep_alive_refuses_nonsense(value: object) -> None:
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value)


def test_ttl_overrides_speak_swapds_ttl_convention() -> None:
    table = TtlOverrides()
    assert table.ttl("m", 60.0) == 60.0  # no override: the config's TTL
    table.set("m", 300.0)
    assert table.ttl("m", 60.0) == 300.0
    table.set("m", math.inf)
    assert table.ttl("m", 60.0) == 0.0  # never unload when idle
    table.set("m", 0.0)
    assert 0 < table.ttl("m", 60.0) < 0.01  # as soon as possible
    table.set("m", None)
    assert table.ttl("m", 60.0) == 60.0
    assert table.get("m") is None


# ----------------------------------------------------------------------------- ps expiry


def stat(*, idle_deadline: float | None, in_flight: int = 0) -> ModelStatistics:
    return ModelStatistics(
        model="m",
        group="g",
        state=ModelState.READY,
        pid=1,
        in_flight=in_flight,
        waiting=0,
        launches=1,
        last_error=None,
        idle_deadline=idle_deadline,
    )


WALL = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_expires_at_from_the_ttl() -> None:
    # Idle since t=90 with a 60 s TTL; now t=100: 50 s left.
    expires = ollama_models.expires_at(
        stat(idle_deadline=150.0), 60.0, 60.0, last_answer=None, now=100.0, wall=WALL
    )
    assert expires == WALL + dt.timedelta(seconds=50)
    # A keep-alive of 300 s on the same idle model.
    expires = ollama_models.expires_at(
        stat(idle_deadline=150.0), 60.0, 300.0, last_answer=None, now=100.0, wall=WALL
    )
    assert expires == WALL + dt.timedelta(seconds=290)


def test_expires_at_busy_or_forever() -> None:
    busy = stat(idle_deadline=None, in_flight=1)
    assert ollama_models.expires_at(
        busy, 60.0, 60.0, last_answer=None, now=100.0, wall=WALL
    ) == WALL + dt.timedelta(seconds=60)
    assert (
        ollama_models.expires_at(busy, 0.0, 0.0, last_answer=None, now=100.0, wall=WALL)
        == ollama_models.FOREVER
    )
