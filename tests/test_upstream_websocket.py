"""WebSockets through ``/upstream/<model>/`` and ``compat.ignoreWebsockets``, with a real
WebSocket model server as a child process (tests/children/ws_echo.py)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket
from ws_client import open_ws

from swapd.testing import open_swapd

ECHO = Path(__file__).parent / "children" / "ws_echo.py"


def ws_model(name: str, extra: str = "") -> str:
    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(ECHO))} ${{PORT}}"
    text = f"  {name}:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    return (
        text + "    checkEndpoint: none\n" + "".join(f"    {line}\n" for line in extra.splitlines())
    )


async def wait_listening(port: int) -> None:
    """checkEndpoint none: the model is 'ready' at spawn; wait until it really listens."""
    for _ in range(200):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
            continue
        await stream.aclose()
        return
    raise AssertionError(f"nothing listens on {port}")


async def test_a_websocket_is_relayed_to_the_model() -> None:
    with trio.fail_after(40):
        async with open_swapd("models:\n" + ws_model("live")) as swapd:
            port = swapd.services.config.models["live"].port
            assert port is not None
            async with httpx.AsyncClient(base_url=swapd.url) as client:
                assert (await client.post("/api/models/load/live")).status_code == 200
            await wait_listening(port)
            url = swapd.url.replace("http://", "ws://") + "/upstream/live/ws/chat?x=1"
            async with open_ws(url) as ws:
                await ws.send_message("hello")
                assert await ws.get_message() == "/ws/chat?x=1: hello"


async def test_ignored_websockets_cannot_start_the_model() -> None:
    config = "models:\n" + ws_model("comfy", "compat: {ignoreWebsockets: true}")
    with trio.fail_after(40):
        async with open_swapd(config) as swapd:
            url = swapd.url.replace("http://", "ws://") + "/upstream/comfy/ws"
            with pytest.raises(trio_websocket.ConnectionRejected) as info:
                async with open_ws(url):
                    pass
            assert info.value.status_code == 409
            assert b"ignored websocket requests cannot start it" in (info.value.body or b"")
            async with httpx.AsyncClient(base_url=swapd.url) as client:
                running = (await client.get("/running")).json()["running"]
                assert running == []  # the upgrade did not load it
                await client.post("/api/models/load/comfy")
            port = swapd.services.config.models["comfy"].port
            assert port is not None
            await wait_listening(port)
            async with open_ws(url) as ws:  # ready: passes
                await ws.send_message("ping")
                assert await ws.get_message() == "/ws: ping"
