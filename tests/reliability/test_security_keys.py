"""A key scoped to one model cannot reach another one by any name or path: aliases,
``setParamsByID`` IDs, ``/upstream/`` (plain, percent-encoded, dot segments, WebSocket),
selectors and profile pins. The model it must not reach is never even started."""

from __future__ import annotations

import urllib.parse

import httpx
import pytest
import trio
import trio_websocket
from ws_client import open_ws

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

ROOT = {"Authorization": "Bearer sk-root"}
BETA = {"Authorization": "Bearer sk-beta"}


def model(name: str, extra: str = "") -> str:
    return (
        f"  {name}:\n    cmd: {upstream_cmd('--model', name)}\n"
        "    proxy: http://127.0.0.1:${PORT}\n" + extra
    )


CONFIG = (
    """
apiKeys: [sk-root]
keys:
  - name: beta-only
    secret: sk-beta
    models: [beta]
models:
"""
    + model(
        "secret-model",
        "    aliases: [innocent]\n"
        "    filters:\n      setParamsByID:\n        beta-hot: {temperature: 0.1}\n",
    )
    + model("beta")
    + """
selectors:
  pick: {strategy: pin, targets: [secret-model]}
  either: {strategy: warm, targets: [secret-model, beta]}
profiles:
  sneaky:
    pins: {beta: secret-model, llm: secret-model}
"""
)


def chat(name: str) -> dict[str, object]:
    return {"model": name, "messages": [{"role": "user", "content": "hi"}]}


async def test_a_scoped_key_cannot_reach_another_model() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(CONFIG) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):

            async def refused(method: str, path: str, **kw: object) -> None:
                reply = await client.request(method, path, headers=BETA, **kw)  # type: ignore[arg-type]
                assert reply.status_code in (400, 403, 404), (path, reply.status_code)
                # only a name the client itself used may appear in the answer
                asked = urllib.parse.unquote(path) + str(kw)
                assert "secret-model" not in reply.text or "secret-model" in asked

            for name in ("secret-model", "innocent", "beta-hot", "pick", "Secret-Model"):
                await refused("POST", "/v1/chat/completions", json=chat(name))
                await refused("POST", "/api/chat", json=chat(name))
            await refused("GET", "/props?model=innocent")
            for path in (
                "/upstream/secret-model/health",
                "/upstream/innocent/health",
                "/upstream/beta-hot/health",
                "/upstream/secret%2Dmodel/health",
                "/upstream/%73ecret-model/v1/models",
                "/upstream/beta/../secret-model/health",
                "/upstream/beta/%2e%2e/secret-model/health",
            ):
                await refused("GET", path)
                await refused("POST", path, content=b"{}")
            # a WebSocket to the upstream (the key as ?api_key=)
            with pytest.raises(trio_websocket.HandshakeError):
                async with open_ws(
                    swapd.url.replace("http", "ws") + "/upstream/innocent/ws?api_key=sk-beta"
                ):
                    pass

            # the key's own model works, also through a selector whose pick is in scope
            own = await client.post("/v1/chat/completions", headers=BETA, json=chat("beta"))
            assert own.status_code == 200
            # "either" picks beta now (warm: the loaded target) — in scope
            warm = await client.post("/v1/chat/completions", headers=BETA, json=chat("either"))
            assert warm.status_code == 200

            # a profile that pins the key's own name to another model: refused, and the
            # message names only what the client asked for
            put = await client.put("/api/profiles/active", headers=ROOT, json={"name": "sneaky"})
            assert put.status_code == 200
            for name in ("beta", "llm"):
                reply = await client.post("/v1/chat/completions", headers=BETA, json=chat(name))
                assert reply.status_code == 403, name
                assert "secret-model" not in reply.text
                assert name in reply.json()["error"]["message"]
            # the scoped key cannot change the profile back itself
            put = await client.put("/api/profiles/active", headers=BETA, json={"name": ""})
            assert put.status_code == 403

            running = (await client.get("/running", headers=ROOT)).json()
            assert "secret-model" not in {m["model"] for m in running["running"]}
            models = (await client.get("/v1/models", headers=BETA)).json()["data"]
            assert "secret-model" not in str(models) and "innocent" not in str(models)
