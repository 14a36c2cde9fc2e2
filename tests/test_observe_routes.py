"""Token metrics, Prometheus and log routes of a real swapd with demo upstreams."""

from __future__ import annotations

import httpx
import pytest
import trio
from event_feed import parse_sse
from prometheus_client.parser import text_string_to_metric_families

from swapd.testing import open_swapd, upstream_cmd

# Breaking out of a streamed response leaves httpx's own generators to the GC.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def config(**models: str) -> str:
    lines = ["models:"]
    for name, flags in models.items():
        lines += [
            f"  {name}:",
            f"    cmd: {upstream_cmd('--model', name, *flags.split(), silent=False)}",
            "    proxy: http://127.0.0.1:${PORT}",
        ]
    return "\n".join(lines) + "\n"


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "one two three"}], **extra}


async def test_token_metrics_from_plain_and_streamed_responses() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="--chunks 4")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            assert (await client.get("/api/metrics")).json() == []
            await client.post("/v1/chat/completions", json=chat("m1"))
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat("m1", stream=True)
            ) as r:
                await r.aread()
            records = (await client.get("/api/metrics")).json()
    assert [r["id"] for r in records] == [0, 1]
    for record in records:
        assert record["model"] == "m1"
        assert record["input_tokens"] > 0
        assert record["output_tokens"] > 0
        assert record["tokens_per_second"] > 0  # llama.cpp-style timings from the upstream
    assert records[1]["output_tokens"] == 4


async def test_failed_requests_are_not_recorded_as_token_metrics() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            reply = await client.post("/v1/chat/completions", json=chat("m1", x_status=500))
            assert reply.status_code == 500
            assert (await client.get("/api/metrics")).json() == []
            text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = [s for s in families["swapd_requests"].samples if s.labels["model"] == "m1"]
    assert [(s.labels["code"], s.value) for s in requests] == [("5xx", 1.0)]


async def test_prometheus_exposition_parses_and_tracks_state_and_swaps() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="", m2="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            await client.post("/v1/chat/completions", json=chat("m1"))
            await client.post("/v1/chat/completions", json=chat("m2"))
            reply = await client.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    state = {
        (s.labels["model"], s.labels["state"]): s.value
        for s in families["swapd_model_state"].samples
    }
    assert state[("m1", "stopped")] == 1
    assert state[("m2", "ready")] == 1
    assert state[("m2", "stopped")] == 0
    swaps = {
        s.labels["model"]: s.value
        for s in families["swapd_swaps"].samples
        if s.name.endswith("_total")
    }
    assert swaps == {"m1": 1.0, "m2": 1.0}
    tokens = {s.labels["model"]: s.value for s in families["swapd_output_tokens"].samples}
    assert tokens["m1"] > 0


async def test_logs_history_and_live_model_stream() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=10) as client,
        ):
            await client.post("/v1/chat/completions", json=chat("m1"))
            history = (await client.get("/logs")).text
            assert "<m1> stopped -> starting" in history
            browser = await client.get("/logs", headers={"accept": "text/html"})
            assert browser.status_code == 302
            assert (await client.get("/logs/stream/nope")).status_code == 400
            async with client.stream("GET", "/logs/stream/m1") as stream:
                assert stream.headers["x-accel-buffering"] == "no"
                received = b""
                chunks = stream.aiter_raw()
                while not (
                    b"listening on" in received and b"POST /v1/chat/completions" in received
                ):
                    received += await anext(chunks)
                # a new request's log line arrives live
                await client.post("/v1/chat/completions", json=chat("m1"))
                while received.count(b"POST /v1/chat/completions") < 2:
                    received += await anext(chunks)
            assert received.count(b"POST /v1/chat/completions") >= 2


async def test_event_stream_snapshot_then_state_changes_in_order() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=10) as client,
            client.stream("GET", "/api/events") as stream,
        ):
            assert stream.headers["content-type"] == "text/event-stream"
            assert stream.headers["x-accel-buffering"] == "no"
            chunks = stream.aiter_raw()
            raw = await anext(chunks)
            snapshot = parse_sse(raw)
            assert [kind for kind, _ in snapshot] == [
                "logData",
                "logData",
                "modelStatus",
                "metrics",
                "inflight",
            ]
            status = dict(snapshot)["modelStatus"]
            llama_swap_keys = ("id", "name", "description", "state", "unlisted", "peerID")
            assert [{k: m[k] for k in llama_swap_keys} for m in status] == [  # type: ignore[attr-defined]
                {
                    "id": "m1",
                    "name": "",
                    "description": "",
                    "state": "stopped",
                    "unlisted": False,
                    "peerID": "",
                }
            ]
            await client.post("/v1/chat/completions", json=chat("m1"))
            seen: list[tuple[str, object]] = []
            while not any(kind == "metrics" for kind, _ in seen):
                seen += parse_sse(await anext(chunks))
    states = [data[0]["state"] for kind, data in seen if kind == "modelStatus"]  # type: ignore[index]
    # request counts refresh the status too: the states, without repeats, in order
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == [
        "starting",
        "ready",
    ]
    logs = "".join(data["data"] for kind, data in seen if kind == "logData")  # type: ignore[index]
    assert "<m1> stopped -> starting" in logs
    metrics = [data for kind, data in seen if kind == "metrics"]
    assert metrics[0][0]["model"] == "m1"  # type: ignore[index]
