"""The routes llama-swap v250 added (delta spec 4.1, 4.6), over real HTTP with the demo
upstream: versionless ``/v/...``, ``/audioapi/v1/tasks/run``, ``/comfyui/`` passthrough.

What the upstream saw is read from its answers: the demo upstream serves
``/chat/completions`` (as a server without ``/v1``) and answers 404 ``not found: <method>
<path>`` for paths it does not serve, naming the path it was sent.
"""

from __future__ import annotations

import httpx
import openai
import pytest
import trio
from ws_client import open_ws

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def model(name: str) -> str:
    return f"  {name}:\n    cmd: {upstream_cmd('--model', name)}\n    proxy: http://127.0.0.1:${{PORT}}\n"


async def activity_paths(client: httpx.AsyncClient, count: int) -> list[str]:
    for _ in range(100):  # rows are committed in batches
        rows = (await client.get("/api/metrics/activity", params={"order": "asc"})).json()["data"]
        if len(rows) >= count:
            break
        await trio.sleep(0.1)
    return [r["req_path"] for r in rows]


async def test_versionless_and_audio_routes_strip_their_prefix() -> None:
    with trio.fail_after(60):
        async with open_swapd("models:\n" + model("m")) as swapd:
            sdk = openai.AsyncOpenAI(base_url=f"{swapd.url}/v", api_key="none")
            reply = await sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            await sdk.close()
            async with httpx.AsyncClient(base_url=swapd.url, timeout=30) as client:
                embeddings = await client.post("/v/embeddings", json={"model": "m", "input": "x"})
                audio = await client.post(AUDIO, json={"model": "m", "task": "tts"})
                unknown = await client.post(AUDIO, json={"model": "ghost"})
                paths = await activity_paths(client, 4)
    assert reply.choices[0].message.content  # served by the upstream's /chat/completions
    assert embeddings.status_code == 404 and "POST /embeddings" in embeddings.text
    assert audio.status_code == 404 and "POST /v1/tasks/run" in audio.text
    assert unknown.status_code == 404 and "ghost" in unknown.text
    assert paths == ["/v/chat/completions", "/v/embeddings", AUDIO, AUDIO]


AUDIO = "/audioapi/v1/tasks/run"


async def test_comfyui_passthrough_to_the_reserved_model() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd("models:\n" + model("comfyui_auto")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            early = await client.get("/comfyui/pid")
            redirect_get = await client.get("/comfyui", params={"a": "1"})
            redirect_post = await client.post("/comfyui")
            index = await client.get("/comfyui/")  # the one path that may start it
            pid = await client.get("/comfyui/pid")
            running = (await client.get("/running")).json()["running"]
            not_served = await client.get("/comfyui/no/such/page")
            rows = (await client.get("/api/metrics/activity")).json()["data"]
    assert early.status_code == 409
    assert "model comfyui_auto is not loaded; only /comfyui/ can start it" in early.text
    assert (redirect_get.status_code, redirect_get.headers["location"]) == (301, "/comfyui/?a=1")
    assert (redirect_post.status_code, redirect_post.headers["location"]) == (308, "/comfyui/")
    assert index.status_code == 200
    assert pid.status_code == 200 and pid.json()["pid"] == running[0]["pid"]
    assert [r["model"] for r in running] == ["comfyui_auto"]
    assert not_served.status_code == 404 and "GET /no/such/page" in not_served.text
    assert rows == []  # /comfyui/ is not recorded


async def test_comfyui_without_the_reserved_model_is_404() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd("models:\n" + model("m")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            answer = await client.get("/comfyui/")
    assert answer.status_code == 404 and "local model comfyui_auto not found" in answer.text


async def raw_upgrade(base: str, path: str) -> bytes:
    """A WebSocket upgrade by hand, for its refusal (trio_websocket leaves the socket of a
    rejected handshake to the garbage collector, a ResourceWarning in a later test)."""
    port = int(base.rsplit(":", 1)[1])
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = b""
        while b"can start it" not in answer and len(answer) < 65536:
            chunk = await stream.receive_some()
            if not chunk:
                break
            answer += chunk
    return answer


async def test_comfyui_websocket_is_relayed_once_the_model_is_ready() -> None:
    from test_upstream_websocket import wait_listening, ws_model

    with trio.fail_after(60):
        async with open_swapd("models:\n" + ws_model("comfyui_auto")) as swapd:
            url = swapd.url.replace("http://", "ws://") + "/comfyui/ws?clientId=1"
            rejected = await raw_upgrade(swapd.url, "/comfyui/ws")
            async with httpx.AsyncClient(base_url=swapd.url, timeout=30) as client:
                assert (await client.get("/running")).json()["running"] == []  # not started
                assert (await client.post("/api/models/load/comfyui_auto")).status_code == 200
            port = swapd.services.config.models["comfyui_auto"].port
            assert port is not None
            await wait_listening(port)
            async with open_ws(url) as ws:
                await ws.send_message("ping")
                echoed = await ws.get_message()
    assert rejected.startswith(b"HTTP/1.1 409")
    assert b"only /comfyui/ can start it" in rejected
    assert echoed == "/ws?clientId=1: ping"  # the upstream saw the path without /comfyui
