"""Captures through a real swapd: what the upstream got and sent back, credentials redacted."""

from __future__ import annotations

import base64
import gzip
import json

import httpx
import pytest
import trio

from swapd.observe.captures import CaptureRecorder
from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

KEY = "sk-capture-test-key"


def config(capture_mb: int = 1, keys: bool = True) -> str:
    lines = [f"captureBuffer: {capture_mb}"]
    if keys:
        lines.append(f"apiKeys: [{KEY}]")
    lines += [
        "models:",
        "  m1:",
        f"    cmd: {upstream_cmd('--model', 'm1', '--respond', 'captured words')}",
        "    proxy: http://127.0.0.1:${PORT}",
        "    filters:",
        "      setParams:",
        "        temperature: 0.25",
    ]
    return "\n".join(lines) + "\n"


def chat(**extra: object) -> dict[str, object]:
    return {"model": "m1", "messages": [{"role": "user", "content": "hello there"}], **extra}


def b64(text: str | None) -> bytes:
    assert text is not None
    return base64.b64decode(text)


async def test_a_plain_exchange_is_captured_with_credentials_redacted() -> None:
    auth = {"authorization": f"Bearer {KEY}", "cookie": "session=secret-cookie"}
    with trio.fail_after(30):
        async with (
            open_swapd(config()) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20, headers=auth) as client,
        ):
            reply = await client.post(
                "/v1/chat/completions", json=chat(), headers={"x-trace": "abc"}
            )
            assert reply.status_code == 200
            [record] = (await client.get("/api/metrics")).json()
            assert record["has_capture"] is True
            capture = (await client.get(f"/api/captures/{record['id']}")).json()

            assert (await client.get("/api/captures/12345")).status_code == 404
            bad = await client.get("/api/captures/abc")
            assert bad.status_code == 400
            assert bad.json()["error"]["message"] == "invalid capture ID"
            assert (
                await client.get("/api/captures/0", headers={"authorization": ""})
            ).status_code == 401

    assert capture["id"] == record["id"]
    assert capture["req_path"] == "/v1/chat/completions"
    sent = json.loads(b64(capture["req_body"]))
    assert sent["temperature"] == 0.25  # what the upstream got: after the filters
    assert sent["messages"][0]["content"] == "hello there"
    headers = capture["req_headers"]
    assert headers["X-Trace"] == "abc"
    assert headers["Cookie"] == "[REDACTED]"
    assert "Authorization" not in headers  # swapd's own key never reaches the upstream
    answer = json.loads(b64(capture["resp_body"]))
    assert answer["choices"][0]["message"]["content"] == "captured words"
    assert capture["resp_headers"]["Content-Type"].startswith("application/json")
    assert KEY not in json.dumps(capture)


async def test_a_compressed_response_is_stored_decompressed() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(keys=False)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            reply = await client.post(
                "/v1/chat/completions",
                json=chat(),
                headers={"accept-encoding": "gzip", "x-gzip": "1"},
            )
            assert reply.status_code == 200
            assert reply.headers["content-encoding"] == "gzip"  # passed through untouched
            [record] = (await client.get("/api/metrics")).json()
            capture = (await client.get(f"/api/captures/{record['id']}")).json()
    assert "Content-Encoding" not in capture["resp_headers"]
    answer = json.loads(b64(capture["resp_body"]))
    assert answer["choices"][0]["message"]["content"] == "captured words"


async def test_a_stream_is_captured_whole() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(keys=False)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            reply = await client.post("/v1/chat/completions", json=chat(stream=True))
            assert reply.status_code == 200
            [record] = (await client.get("/api/metrics")).json()
            capture = (await client.get(f"/api/captures/{record['id']}")).json()
    body = b64(capture["resp_body"])
    assert body == reply.content
    assert body.rstrip().endswith(b"data: [DONE]")


async def test_captures_off_by_zero_buffer() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(capture_mb=0, keys=False)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
            [record] = (await client.get("/api/metrics")).json()
            assert record["has_capture"] is False
            assert (await client.get(f"/api/captures/{record['id']}")).status_code == 404


def recorder(limit: int, resp_headers: list[tuple[str, str]]) -> CaptureRecorder:
    return CaptureRecorder(
        limit,
        req_path="/v1/chat/completions",
        req_headers=[("content-type", "application/json")],
        req_body=b'{"model":"m"}',
        resp_headers=resp_headers,
    )


def test_recorder_drops_an_exchange_larger_than_the_budget() -> None:
    rec = recorder(1000, [("content-type", "text/plain")])
    for _ in range(20):
        rec.feed(b"x" * 100)
    assert rec.overflowed
    assert rec.build() is None


def test_recorder_decodes_gzip_and_refuses_a_bomb() -> None:
    packed = gzip.compress(b"y" * 900)
    rec = recorder(950, [("content-encoding", "gzip")])
    rec.feed(packed)
    # 900 bytes of body + 20 of path + 13 of request body + 28 of headers: over 950
    assert rec.build() is None
    rec = recorder(10_000, [("content-encoding", "gzip")])
    rec.feed(packed)
    capture = rec.build()
    assert capture is not None
    assert capture.resp_body == b"y" * 900
    bomb = gzip.compress(b"\0" * 5_000_000)
    rec = recorder(100_000, [("content-encoding", "gzip")])
    rec.feed(bomb)
    assert rec.build() is None  # decoding stops at the budget
    rec = recorder(100_000, [("content-encoding", "gzip")])
    rec.feed(b"not gzip at all")
    assert rec.build() is None
