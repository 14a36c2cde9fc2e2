"""Token metrics (reference 8.1/8.2, with the section-14 fixes) and the Prometheus exposition."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import time
import zlib
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from swapd.observe.metrics import (
    CounterFamily,
    GaugeFamily,
    Histogram,
    HistogramFamily,
    MetricsStore,
    SwapdMetrics,
    TokenMetrics,
    UsageTap,
    render_prometheus,
)

SSE = "text/event-stream"
JSON = "application/json"
T0 = 1_000.0  # the request started; the first byte arrives at T0+1, the end is at T0+1.5


def tap_record(
    body: bytes | list[bytes],
    *,
    content_type: str = JSON,
    encoding: str | None = None,
    path: str = "/v1/chat/completions",
    status: int = 200,
    first_byte: bool = True,
    **limits: int,
) -> TokenMetrics | None:
    tap = UsageTap(content_type=content_type, content_encoding=encoding, path=path, **limits)
    for chunk in [body] if isinstance(body, bytes) else body:
        tap.feed(chunk)
    return tap.finish(
        model="m",
        status=status,
        started=T0,
        first_byte_at=T0 + 1 if first_byte else None,
        ended=T0 + 1.5,
        timestamp=1.0,
    )


def fields(rec: TokenMetrics | None) -> tuple[Any, ...]:
    assert rec is not None
    return (
        rec.cache_tokens,
        rec.input_tokens,
        rec.output_tokens,
        rec.prompt_per_second,
        rec.tokens_per_second,
        rec.duration_ms,
    )


MINIMAL = (-1, 0, 0, -1.0, -1.0, 500)
TIMINGS = {
    "cache_n": 3,
    "prompt_n": 25,
    "predicted_n": 10,
    "prompt_per_second": 250.5,
    "predicted_per_second": 40.0,
    "prompt_ms": 100.4,
    "predicted_ms": 250.3,
}
TIMED = (3, 25, 10, 250.5, 40.0, 350)
OPENAI_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 7,
    "prompt_tokens_details": {"cached_tokens": 4},
}


def sse(*events: Any, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    if done:
        lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def deflate(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(wbits=wbits)
    return c.compress(data) + c.flush()


LLAMA_JSON = js({"choices": [], "usage": OPENAI_USAGE, "timings": TIMINGS})
OPENAI_SSE = sse(
    {"choices": [{"delta": {"content": "hi"}}]},
    {"choices": [{"delta": {"content": " usage timings"}}]},  # mentions the words, not keys
    {"choices": [], "usage": OPENAI_USAGE},
)
LLAMA_SSE = sse(
    {"choices": [{"delta": {"content": "x"}}]},
    {"choices": [], "usage": OPENAI_USAGE, "timings": TIMINGS},
)
ANTHROPIC_SSE = (
    b"event: message_start\n"
    + b'data: {"type":"message_start","message":{"id":"m1","usage":'
    + b'{"input_tokens":30,"cache_read_input_tokens":5,"output_tokens":1}}}\n\n'
    + b"event: content_block_delta\n"
    + b'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}\n\n'
    + b"event: message_delta\n"
    + b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    + b'"usage":{"output_tokens":15}}\n\n'
    + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)

CASES: list[tuple[str, dict[str, Any], tuple[Any, ...] | None]] = [
    ("llama.cpp JSON: timings win", {"body": LLAMA_JSON}, TIMED),
    ("OpenAI usage only", {"body": js({"usage": OPENAI_USAGE})}, (4, 12, 7, -1.0, -1.0, 500)),
    (
        "Anthropic JSON usage",
        {
            "body": js(
                {"usage": {"input_tokens": 9, "output_tokens": 2, "cache_read_input_tokens": 1}}
            )
        },
        (1, 9, 2, -1.0, -1.0, 500),
    ),
    ("no usage in JSON", {"body": js({"choices": []})}, MINIMAL),
    ("invalid JSON", {"body": b"{nope"}, MINIMAL),
    (
        "SSE usage in last data line",
        {"body": OPENAI_SSE, "content_type": SSE},
        (4, 12, 7, -1.0, -1.0, 500),
    ),
    (
        "SSE timings win",
        {"body": LLAMA_SSE, "content_type": "text/event-stream; charset=utf-8"},
        TIMED,
    ),
    ("SSE without usage", {"body": sse({"choices": []}), "content_type": SSE}, MINIMAL),
    (
        "SSE last line without newline",
        {"body": OPENAI_SSE.rstrip(), "content_type": SSE},
        (4, 12, 7, -1.0, -1.0, 500),
    ),
    (
        "SSE CRLF lines",
        {"body": OPENAI_SSE.replace(b"\n", b"\r\n"), "content_type": SSE},
        (4, 12, 7, -1.0, -1.0, 500),
    ),
    (
        "Anthropic SSE cut after message_start",
        {"body": ANTHROPIC_SSE.split(b"event: content_block_delta")[0], "content_type": SSE},
        (5, 30, 1, -1.0, -1.0, 500),
    ),
    ("Anthropic SSE", {"body": ANTHROPIC_SSE, "content_type": SSE}, (5, 30, 15, -1.0, -1.0, 500)),
    ("gzip", {"body": gzip.compress(LLAMA_JSON), "encoding": "gzip"}, TIMED),
    (
        "gzip SSE",
        {"body": gzip.compress(LLAMA_SSE), "encoding": "gzip", "content_type": SSE},
        TIMED,
    ),
    (
        "gzip, two members",
        {"body": gzip.compress(LLAMA_JSON[:9]) + gzip.compress(LLAMA_JSON[9:]), "encoding": "gzip"},
        TIMED,
    ),
    (
        "zlib deflate (RFC 9110)",
        {"body": deflate(LLAMA_JSON, zlib.MAX_WBITS), "encoding": "deflate"},
        TIMED,
    ),
    (
        "raw deflate (llama-swap's)",
        {"body": deflate(LLAMA_JSON, -zlib.MAX_WBITS), "encoding": "Deflate"},
        TIMED,
    ),
    (
        "deflate, 1-byte chunks",
        {"body": [bytes([b]) for b in deflate(LLAMA_JSON, zlib.MAX_WBITS)], "encoding": "deflate"},
        TIMED,
    ),
    ("invalid gzip", {"body": b"not gzip at all", "encoding": "gzip"}, MINIMAL),
    ("truncated gzip", {"body": gzip.compress(LLAMA_JSON)[:-9], "encoding": "gzip"}, MINIMAL),
    ("invalid deflate", {"body": b"\xff\xff\xff\xff", "encoding": "deflate"}, MINIMAL),
    ("unknown encoding is plain", {"body": LLAMA_JSON, "encoding": "br"}, TIMED),
    (
        "empty body: minimal, duration 0",
        {"body": b"", "first_byte": False},
        (-1, 0, 0, -1.0, -1.0, 0),
    ),
    (
        "empty gzip body",
        {"body": b"", "encoding": "gzip", "first_byte": False},
        (-1, 0, 0, -1.0, -1.0, 0),
    ),
    (
        "/infill array: last element's timings",
        {"body": js([{"timings": {"prompt_n": 1}}, {"timings": TIMINGS}]), "path": "/infill"},
        TIMED,
    ),
    ("/infill empty array", {"body": b"[]", "path": "/infill"}, MINIMAL),
    ("array elsewhere", {"body": js([{"timings": TIMINGS}])}, MINIMAL),
    ("JSON over the cap gives up", {"body": LLAMA_JSON, "max_json": 50}, MINIMAL),
    (
        "gzip JSON over the cap gives up",
        {"body": gzip.compress(LLAMA_JSON), "encoding": "gzip", "max_json": 50},
        MINIMAL,
    ),
    (
        "SSE line over max_line is skipped",
        {"body": LLAMA_SSE, "content_type": SSE, "max_line": 60},
        MINIMAL,
    ),
    ("non-200", {"body": LLAMA_JSON, "status": 500}, None),
    ("non-200 without body", {"body": b"", "status": 404, "first_byte": False}, None),
]


@pytest.mark.parametrize(("kwargs", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tap(kwargs: dict[str, Any], expected: tuple[Any, ...] | None) -> None:
    rec = tap_record(**kwargs)
    if expected is None:
        assert rec is None
    else:
        assert fields(rec) == expected
        assert rec is not None
        assert (rec.id, rec.model, rec.timestamp, rec.has_capture) == (-1, "m", 1.0, False)


def test_finish_twice_is_a_bug() -> None:
    tap = UsageTap(content_type=JSON, content_encoding=None, path="/")
    tap.finish(model="m", status=200, started=0, first_byte_at=None, ended=1)
    with pytest.raises(RuntimeError):
        tap.finish(model="m", status=200, started=0, first_byte_at=None, ended=1)


def test_long_stream_keeps_little() -> None:
    """A long stream does not accumulate: the tap holds one partial line and the last event."""
    tap = UsageTap(content_type=SSE, content_encoding=None, path="/")
    delta = sse({"choices": [{"delta": {"content": "x" * 100}}]}, done=False)
    for _ in range(20_000):  # ~2.6 MB
        tap.feed(delta)
    tap.feed(LLAMA_SSE)
    assert len(tap._body) == 0
    rec = tap.finish(model="m", status=200, started=0, first_byte_at=0, ended=1)
    assert fields(rec) == TIMED


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(
    body=st.sampled_from([OPENAI_SSE, LLAMA_SSE, ANTHROPIC_SSE]),
    encoding=st.sampled_from([None, "gzip", "deflate", "raw"]),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_chunking_gives_the_same_record(
    body: bytes, encoding: str | None, cuts: list[int]
) -> None:
    if encoding == "gzip":
        wire = gzip.compress(body)
    elif encoding == "deflate":
        wire = deflate(body, zlib.MAX_WBITS)
    elif encoding == "raw":
        wire, encoding = deflate(body, -zlib.MAX_WBITS), "deflate"
    else:
        wire = body
    whole = tap_record(wire, content_type=SSE, encoding=encoding)
    chunked = tap_record(_split(wire, cuts), content_type=SSE, encoding=encoding)
    assert whole == chunked
    assert fields(whole) != MINIMAL


def test_duration_never_negative_or_before_start() -> None:
    tap = UsageTap(content_type=JSON, content_encoding=None, path="/")
    rec = tap.finish(model="m", status=200, started=10.0, first_byte_at=5.0, ended=10.25)
    assert rec is not None
    assert rec.duration_ms == 250


def test_as_json_shape() -> None:
    rec = TokenMetrics(
        id=3,
        timestamp=1_700_000_000.25,
        model="m1",
        input_tokens=25,
        output_tokens=10,
        tokens_per_second=10.0,
        duration_ms=30,
        has_capture=True,
    )
    out = rec.as_json()
    assert list(out) == [
        "id", "timestamp", "model", "cache_tokens", "input_tokens", "output_tokens",
        "prompt_per_second", "tokens_per_second", "duration_ms", "has_capture",
    ]  # fmt: skip
    assert (out["cache_tokens"], out["prompt_per_second"]) == (-1, -1)
    assert out["tokens_per_second"] == 10
    assert isinstance(out["tokens_per_second"], int)
    when = dt.datetime.fromisoformat(out["timestamp"])
    assert when.tzinfo is not None
    assert when.timestamp() == 1_700_000_000.25
    assert ".25" in out["timestamp"]


@pytest.mark.parametrize(
    ("tz", "expected"),
    [
        ("UTC0", "2023-11-14T22:13:20Z"),
        ("CET-1", "2023-11-14T23:13:20+01:00"),
        ("<-0330>3:30", "2023-11-14T18:43:20-03:30"),
    ],
)
def test_timestamp_uses_the_local_offset(
    monkeypatch: pytest.MonkeyPatch, tz: str, expected: str
) -> None:
    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        stamp = TokenMetrics(id=0, timestamp=1_700_000_000.0, model="m").as_json()["timestamp"]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert stamp == expected


def test_store_keeps_newest_with_ids_unchanged() -> None:
    store = MetricsStore(max_records=3)
    assert store.records() == []
    stats = store.statistics()
    assert (stats.records, stats.total_recorded, stats.mean_tokens_per_second) == (0, 0, None)
    base = TokenMetrics(id=-1, timestamp=0.0, model="m")
    added = [
        store.add(attrs.evolve(base, output_tokens=i, tokens_per_second=float(i))) for i in range(5)
    ]
    assert [r.id for r in added] == [0, 1, 2, 3, 4]
    assert store.records() == added[2:]
    assert [r.output_tokens for r in store.records()] == [2, 3, 4]
    stats = store.statistics()
    assert (stats.records, stats.total_recorded, stats.output_tokens) == (3, 5, 9)
    assert stats.mean_tokens_per_second == 3.0
    assert stats.mean_prompt_per_second is None


def test_store_of_zero_keeps_nothing_but_counts() -> None:
    store = MetricsStore(max_records=0)
    assert store.add(TokenMetrics(id=-1, timestamp=0.0, model="m")).id == 0
    assert store.records() == []


# --------------------------------------------------------------------------------------------
# Prometheus


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}


def test_render_round_trips() -> None:
    tricky = 'a "quoted"\\ value\nwith newline'
    hist = Histogram([1, 5, 10])
    for v in (0.5, 3, 3, 7, 100, float("nan")):
        hist.observe(v)
    text = render_prometheus(
        [
            CounterFamily(
                "c", "A counter\nwith \\ help.", (((("model", tricky), ("code", "2xx")), 3.0),)
            ),
            GaugeFamily("g", "A gauge.", (((), 2.5), ((("x", "1"),), -1.0))),
            HistogramFamily("h", "A histogram.", hist.buckets, (hist.series((("model", "m"),)),)),
        ]
    )
    fams = parse(text)
    assert {n: f.type for n, f in fams.items()} == {"c": "counter", "g": "gauge", "h": "histogram"}
    assert fams["c"].documentation == "A counter\nwith \\ help."
    assert samples(fams["c"]) == {("c_total", (("code", "2xx"), ("model", tricky))): 3.0}
    assert samples(fams["g"]) == {("g", ()): 2.5, ("g", (("x", "1"),)): -1.0}
    m = (("model", "m"),)
    assert samples(fams["h"]) == {
        ("h_bucket", (("le", "1.0"), *m)): 1,
        ("h_bucket", (("le", "5.0"), *m)): 3,
        ("h_bucket", (("le", "10.0"), *m)): 4,
        ("h_bucket", (("le", "+Inf"), *m)): 5,
        ("h_sum", m): 113.5,
        ("h_count", m): 5,
    }


def test_render_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="metric name"):
        render_prometheus([GaugeFamily("bad-name", "x")])
    with pytest.raises(ValueError, match="label name"):
        render_prometheus([GaugeFamily("g", "x", (((("bad-label", "v"),), 1.0),))])
    with pytest.raises(ValueError, match="increasing"):
        Histogram([5, 1])
    assert render_prometheus([]) == ""


def test_swapd_metrics() -> None:
    metrics = SwapdMetrics(known_states=["stopped", "starting", "ready"])
    timed = TokenMetrics(
        id=0,
        timestamp=0.0,
        model="a",
        input_tokens=25,
        output_tokens=10,
        prompt_per_second=250.5,
        tokens_per_second=40.0,
    )
    minimal = TokenMetrics(id=1, timestamp=0.0, model="a")
    metrics.observe_request("a", 200, timed, 0.3)
    metrics.observe_request("a", 200, minimal, 0.2)
    metrics.observe_request("a", 503, None, 0.01)
    metrics.observe_request('b"\n', 429, None, 0.01)
    metrics.observe_start("a", 4.0)
    metrics.observe_start("a", 12.0)
    metrics.observe_crash("a")
    metrics.set_state("a", "starting")
    metrics.set_state("a", "ready")
    metrics.set_state("b", "weird")
    metrics.set_queue_depth("a", 2)
    fams = parse(render_prometheus(metrics.families()))
    a = (("model", "a"),)
    assert samples(fams["swapd_requests"]) == {
        ("swapd_requests_total", (("code", "2xx"), *a)): 2,
        ("swapd_requests_total", (("code", "5xx"), *a)): 1,
        ("swapd_requests_total", (("code", "4xx"), ("model", 'b"\n'))): 1,
    }
    assert samples(fams["swapd_input_tokens"]) == {("swapd_input_tokens_total", a): 25}
    assert samples(fams["swapd_output_tokens"]) == {("swapd_output_tokens_total", a): 10}
    gen = samples(fams["swapd_generation_tokens_per_second"])
    assert gen[("swapd_generation_tokens_per_second_bucket", (("le", "25.0"), *a))] == 0
    assert gen[("swapd_generation_tokens_per_second_bucket", (("le", "50.0"), *a))] == 1
    assert gen[("swapd_generation_tokens_per_second_count", a)] == 1  # -1 rates are not observed
    dur = samples(fams["swapd_request_duration_seconds"])
    assert dur[("swapd_request_duration_seconds_count", a)] == 3
    assert samples(fams["swapd_swaps"]) == {("swapd_swaps_total", a): 2}
    swap = samples(fams["swapd_swap_duration_seconds"])
    assert swap[("swapd_swap_duration_seconds_bucket", (("le", "5.0"), *a))] == 1
    assert swap[("swapd_swap_duration_seconds_sum", a)] == 16.0
    assert samples(fams["swapd_upstream_crashes"]) == {("swapd_upstream_crashes_total", a): 1}
    assert samples(fams["swapd_queue_depth"]) == {("swapd_queue_depth", a): 2}
    assert samples(fams["swapd_model_state"]) == {
        ("swapd_model_state", (*a, ("state", "stopped"))): 0,
        ("swapd_model_state", (*a, ("state", "starting"))): 0,
        ("swapd_model_state", (*a, ("state", "ready"))): 1,
        ("swapd_model_state", (("model", "b"), ("state", "weird"))): 1,
    }


def test_empty_swapd_metrics_still_declares_families() -> None:
    fams = parse(render_prometheus(SwapdMetrics().families()))
    assert "swapd_requests" in fams
    assert all(not f.samples for f in fams.values())


def test_rendering_leaves_prometheus_clients_global_registry_alone() -> None:
    from prometheus_client import REGISTRY

    before = {m.name for m in REGISTRY.collect()}
    metrics = SwapdMetrics(known_states=["stopped"])
    metrics.set_state("a", "stopped")
    text = render_prometheus(metrics.families())
    assert 'swapd_model_state{model="a",state="stopped"} 1.0' in text
    assert {m.name for m in REGISTRY.collect()} == before
    assert not any(m.name.startswith("swapd") for m in REGISTRY.collect())
