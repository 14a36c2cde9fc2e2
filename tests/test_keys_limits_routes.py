"""Per-key limits cover every model request (docs/keys.md): a ``sendLoadingState`` stream
and Ollama's ``/api/chat``, ``/api/generate`` and ``/api/embed`` count against
``maxConcurrent`` and ``requestsPerMinute``, and their tokens against ``dailyTokens``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd

pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

ROOT = {"Authorization": "Bearer sk-root"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def config(*flags: str, loading_state: bool = False) -> str:
    cmd = upstream_cmd("--model", "m", "--chunks", "6", "--chunk-delay", "0.2", *flags)
    head = "sendLoadingState: true\nhealthCheckTimeout: 30\n" if loading_state else ""
    return f"""{head}
apiKeys: [sk-root]
keys:
  - name: conc
    secret: sk-conc
    maxConcurrent: 1
    requestsPerMinute: 2
  - name: budget
    secret: sk-budget
    dailyTokens: 3
models:
  m:
    cmd: {cmd}
    proxy: http://127.0.0.1:${{PORT}}
"""


def chat(**extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi there"}], **extra}


async def row_of(client: httpx.AsyncClient, key: str, path: str) -> dict[str, Any]:
    """The activity row of ``key``'s request to ``path`` (written once it is over)."""
    while True:
        rows = (await client.get("/api/metrics/activity", headers=ROOT)).json()["data"]
        mine = [r for r in rows if r["key_name"] == key and r["req_path"] == path]
        if mine:
            return mine[0]
        await trio.sleep(0.05)


async def test_a_loading_state_stream_counts_against_the_limits() -> None:
    with trio.fail_after(90):
        async with (
            open_swapd(config("--loading-delay", "1", loading_state=True)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            conc = bearer("sk-conc")
            request = client.build_request(
                "POST", "/v1/chat/completions", headers=conc, json=chat(stream=True)
            )
            first = await client.send(request, stream=True)
            try:
                assert first.status_code == 200
                chunks = first.aiter_bytes()
                seen = b""
                while b"loading model m" not in seen:  # the loading stream has begun
                    seen += await anext(chunks)
                # while it waits for the load: the key's one request in flight
                second = await client.post("/v1/chat/completions", headers=conc, json=chat())
                assert second.status_code == 429
                assert second.headers["retry-after"] == "1"
                body = seen + b"".join([chunk async for chunk in chunks])
                assert b"Done!" in body and b"[DONE]" in body
            finally:
                await first.aclose()
            # the loading stream was the first of two requests this minute
            assert (
                await client.post("/v1/chat/completions", headers=conc, json=chat())
            ).status_code == 200
            over = await client.post("/v1/chat/completions", headers=conc, json=chat())
            assert over.status_code == 429
            assert 1 <= int(over.headers["retry-after"]) <= 60

            # its tokens: recorded on its row and in the token metrics, counted for the key
            await client.post("/api/models/unload", headers=ROOT)
            budget = bearer("sk-budget")
            async with client.stream(
                "POST", "/v1/chat/completions", headers=budget, json=chat(stream=True)
            ) as streamed:
                assert streamed.status_code == 200
                body = b"".join([chunk async for chunk in streamed.aiter_bytes()])
            assert b"loading model m" in body and b"[DONE]" in body
            row = await row_of(client, "budget", "/v1/chat/completions")
            assert row["model"] == "m" and row["tokens"]["output_tokens"] > 0
            records = (await client.get("/api/metrics", headers=ROOT)).json()
            assert any(r["output_tokens"] > 0 for r in records)
            refused = await client.post("/v1/chat/completions", headers=budget, json=chat())
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["retry-after"]) <= 86400


async def test_ollama_routes_count_against_the_limits() -> None:
    with trio.fail_after(90):
        async with (
            open_swapd(config()) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            conc = bearer("sk-conc")
            # a streamed /api/chat holds the key's one request in flight
            request = client.build_request(
                "POST", "/api/chat", headers=conc, json=chat(stream=True)
            )
            first = await client.send(request, stream=True)
            try:
                assert first.status_code == 200
                lines = first.aiter_lines()
                assert '"message"' in await anext(lines)
                for path, body in (
                    ("/api/generate", {"model": "m", "prompt": "hi"}),
                    ("/api/embed", {"model": "m", "input": "hi"}),
                ):
                    refused = await client.post(path, headers=conc, json=body)
                    assert refused.status_code == 429, path
                    assert "conc" in refused.json()["error"]  # Ollama's error shape
                    assert refused.headers["retry-after"] == "1"
                rest = [json.loads(line) async for line in lines if line]
                assert rest[-1]["done"] is True
            finally:
                await first.aclose()
            # it was the first of two requests this minute
            embedded = await client.post(
                "/api/embed", headers=conc, json={"model": "m", "input": "hi"}
            )
            assert embedded.status_code == 200
            over = await client.post("/api/embed", headers=conc, json={"model": "m", "input": "x"})
            assert over.status_code == 429

            # tokens of an Ollama request count toward the daily budget (its activity row
            # carries the usage the relay read)
            sdk = ollama.AsyncClient(host=swapd.url, headers=bearer("sk-budget"))
            answer = await sdk.chat(model="m", messages=[{"role": "user", "content": "hi"}])
            assert answer.message.content
            row = await row_of(client, "budget", "/api/chat")
            assert row["model"] == "m" and row["tokens"]["output_tokens"] > 0
            with pytest.raises(ollama.ResponseError) as refused_budget:
                await sdk.generate(model="m", prompt="hi")
            assert refused_budget.value.status_code == 429
            # another key is not limited
            other = await client.post("/api/chat", headers=ROOT, json=chat(stream=False))
            assert other.status_code == 200
