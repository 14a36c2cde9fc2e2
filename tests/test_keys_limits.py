"""Per-key limits over HTTP (docs/keys.md): requests in flight, requests per minute and a
daily token budget counted from the upstream's reported usage; 429 with Retry-After in
the route's error dialect; other keys are not affected."""

from __future__ import annotations

import httpx
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def config(limits: str) -> str:
    slow = upstream_cmd("--model", "m", "--chunks", "6", "--chunk-delay", "0.3")
    return f"""
apiKeys: [sk-root]
keys:
  - name: limited
    secret: sk-limited
{limits}
models:
  m:
    cmd: {slow}
    proxy: http://127.0.0.1:${{PORT}}
"""


LIMITED = {"Authorization": "Bearer sk-limited"}
ROOT = {"Authorization": "Bearer sk-root"}


def chat(**extra: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi there"}], **extra}


async def test_requests_per_minute() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config("    requestsPerMinute: 2")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            for _ in range(2):
                ok = await client.post("/v1/chat/completions", headers=LIMITED, json=chat())
                assert ok.status_code == 200
            over = await client.post("/v1/chat/completions", headers=LIMITED, json=chat())
            assert over.status_code == 429
            assert 1 <= int(over.headers["retry-after"]) <= 60
            assert over.json()["error"]["type"] == "rate_limit_error"
            assert "limited" in over.json()["error"]["message"]
            anthropic = await client.post(
                "/v1/messages",
                headers=LIMITED,
                json={
                    "model": "m",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
            assert anthropic.status_code == 429
            assert anthropic.json()["type"] == "error"
            assert "retry-after" in anthropic.headers
            # another key is not limited
            other = await client.post("/v1/chat/completions", headers=ROOT, json=chat())
            assert other.status_code == 200


async def test_concurrent_requests() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config("    maxConcurrent: 1")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            request = client.build_request(
                "POST", "/v1/chat/completions", headers=LIMITED, json=chat(stream=True)
            )
            first = await client.send(request, stream=True)
            try:
                assert first.status_code == 200
                second = await client.post("/v1/chat/completions", headers=LIMITED, json=chat())
                assert second.status_code == 429
                assert second.headers["retry-after"] == "1"
                body = b"".join([chunk async for chunk in first.aiter_bytes()])
                assert b"[DONE]" in body
            finally:
                await first.aclose()
            # the first one is over: the next one is admitted
            third = await client.post("/v1/chat/completions", headers=LIMITED, json=chat())
            assert third.status_code == 200


async def test_daily_token_budget() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config("    dailyTokens: 3")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            first = await client.post("/v1/chat/completions", headers=LIMITED, json=chat())
            assert first.status_code == 200
            assert first.json()["usage"]["total_tokens"] >= 3
            # the usage is counted once the request is completely over (its row is written)
            for _ in range(400):
                if (await client.get("/api/metrics/activity", headers=ROOT)).json()["data"]:
                    break
                await trio.sleep(0.05)
            over = await client.post("/v1/chat/completions", headers=LIMITED, json=chat())
            assert over.status_code == 429
            # until the next UTC midnight
            assert 1 <= int(over.headers["retry-after"]) <= 86400
            other = await client.post("/v1/chat/completions", headers=ROOT, json=chat())
            assert other.status_code == 200
