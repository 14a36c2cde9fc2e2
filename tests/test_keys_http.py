"""Scoped API keys over HTTP (docs/keys.md): roles by route families, model patterns and
aliases, peers, hashed and file-based secrets, the model list, the error dialects, the
key name on activity rows."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import httpx
import openai
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def model(name: str, extra: str = "") -> str:
    return (
        f"  {name}:\n    cmd: {upstream_cmd('--model', name)}\n"
        "    proxy: http://127.0.0.1:${PORT}\n" + extra
    )


def chat(name: str) -> dict[str, object]:
    return {"model": name, "messages": [{"role": "user", "content": "hi"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def config(tmp_path: Path) -> str:
    key_file = tmp_path / "olly.key"
    key_file.write_text("sk-olly\n")
    hashed = hashlib.sha256(b"sk-hashed").hexdigest()
    models = model("alpha", "    aliases: [first]\n") + model("beta", "    aliases: [bee]\n")
    return f"""
apiKeys: [sk-root]
keys:
  - name: alice
    secret: sk-alice
    models: ["al*"]
  - name: olly
    secretFile: {key_file}
    role: observer
  - name: obs-beta
    sha256: {hashed}
    role: observer
    models: [beta]
  - name: boss
    secret: sk-boss
    role: admin
    models: [beta]
  - name: peerish
    secret: sk-peer
    models: [far/gpt-x]
models:
{models}
peers:
  far:
    proxy: http://127.0.0.1:9
    models: [gpt-x, gpt-y]
"""


async def status(client: httpx.AsyncClient, key: str, method: str, path: str, **kw: object) -> int:
    reply = await client.request(method, path, headers=bearer(key), **kw)  # type: ignore[arg-type]
    return reply.status_code


async def test_roles_open_their_route_families(tmp_path: Path) -> None:
    routes = [
        ("GET", "/v1/models", {}),
        ("GET", "/running", {}),
        ("GET", "/api/metrics/activity", {}),
        ("GET", "/metrics", {}),
        ("GET", "/api/config", {}),
        ("POST", "/api/models/unload", {}),
        ("POST", "/api/config/reload", {}),
    ]
    expected = {
        # inference: model routes and the list only
        "sk-alice": [200, 403, 403, 403, 403, 403, 403],
        # observer of every model: plus the read-only routes
        "sk-olly": [200, 200, 200, 200, 403, 403, 403],
        # observer of one model: the read-only routes, filtered to its model
        "sk-hashed": [200, 200, 200, 200, 403, 403, 403],
        # admin: everything (its model scope still limits inference)
        "sk-boss": [200, 200, 200, 200, 200, 200, None],
        "sk-root": [200, 200, 200, 200, 200, 200, None],
    }
    with trio.fail_after(60):
        async with (
            open_swapd(config(tmp_path)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            for key, statuses in expected.items():
                seen = [await status(client, key, m, p, **kw) for m, p, kw in routes]
                for got, want in zip(seen, statuses, strict=True):
                    # reload without a config file answers an error, but not 401/403
                    assert got == want if want is not None else got not in (401, 403), (
                        key,
                        seen,
                    )
            assert await status(client, "sk-nobody", "GET", "/v1/models") == 401
            forbidden = await client.post("/api/models/unload", headers=bearer("sk-alice"))
            assert forbidden.json()["error"]["type"] == "permission_error"


async def test_model_list_and_inference_follow_the_scope(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="swapd.requests")
    with trio.fail_after(60):
        async with (
            open_swapd(config(tmp_path)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):

            async def ids(key: str) -> list[str]:
                reply = await client.get("/v1/models", headers=bearer(key))
                return sorted(m["id"] for m in reply.json()["data"])

            assert await ids("sk-alice") == ["alpha"]
            assert await ids("sk-hashed") == ["beta"]
            assert await ids("sk-peer") == ["gpt-x"]
            assert await ids("sk-olly") == ["alpha", "beta", "gpt-x", "gpt-y"]

            # a glob on the ID, and the alias of an allowed model
            sdk = openai.AsyncOpenAI(base_url=f"{swapd.url}/v1", api_key="sk-alice")
            done = await sdk.chat.completions.create(
                model="first", messages=[{"role": "user", "content": "hi"}]
            )
            assert done.choices[0].message.content
            # another model: 403 naming the model asked for, and no other model
            with pytest.raises(openai.PermissionDeniedError) as refused:
                await sdk.chat.completions.create(
                    model="bee", messages=[{"role": "user", "content": "hi"}]
                )
            text = str(refused.value.body)
            assert "bee" in text and "beta" not in text and "alpha" not in text
            await sdk.close()

            # Anthropic dialect on /v1/messages
            reply = await client.post(
                "/v1/messages",
                headers=bearer("sk-alice"),
                json={
                    "model": "beta",
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "x"}],
                },
            )
            assert reply.status_code == 403
            assert reply.json()["type"] == "error"
            assert reply.json()["error"]["type"] == "permission_error"
            # Ollama dialect on /api/chat
            reply = await client.post("/api/chat", headers=bearer("sk-alice"), json=chat("beta"))
            assert reply.status_code == 403
            assert "beta" in reply.json()["error"]
            tags = await client.get("/api/tags", headers=bearer("sk-alice"))
            assert [m["name"] for m in tags.json()["models"]] == ["alpha"]
            shown = await client.post(
                "/api/show", headers=bearer("sk-alice"), json={"model": "bee"}
            )
            assert shown.status_code == 403
            assert "bee" in shown.json()["error"] and "beta" not in shown.text
            ps = await client.get("/api/ps", headers=bearer("sk-hashed"))
            assert "alpha" not in ps.text  # alpha is loaded, but not this key's model
            # multipart and query routes
            reply = await client.get("/props?model=beta", headers=bearer("sk-alice"))
            assert reply.status_code == 403
            reply = await client.post(
                "/v1/audio/transcriptions?model=beta",
                headers=bearer("sk-alice"),
                files={"file": ("a.wav", b"RIFF")},
            )
            assert reply.status_code == 403

            # peers: `<peer>/<model>` allows only that model (the peer itself is down: 502)
            peer = await client.post(
                "/v1/chat/completions", headers=bearer("sk-peer"), json=chat("far/gpt-x")
            )
            assert peer.status_code == 502
            bare = await client.post(
                "/v1/chat/completions", headers=bearer("sk-peer"), json=chat("gpt-x")
            )
            assert bare.status_code == 502
            other = await client.post(
                "/v1/chat/completions", headers=bearer("sk-peer"), json=chat("gpt-y")
            )
            assert other.status_code == 403
            local = await client.post(
                "/v1/chat/completions", headers=bearer("sk-peer"), json=chat("alpha")
            )
            assert local.status_code == 403

            # activity rows carry the key name, and a scoped observer sees its models only
            await client.post("/v1/chat/completions", headers=bearer("sk-boss"), json=chat("beta"))
            while True:  # rows are written once the request is completely over
                rows = (await client.get("/api/metrics/activity", headers=bearer("sk-root"))).json()
                names = {(r["key_name"], r["model"], r["resp_status_code"]) for r in rows["data"]}
                if ("boss", "beta", 200) in names:
                    break
                await trio.sleep(0.05)
            assert ("alice", "alpha", 200) in names
            assert ("boss", "beta", 200) in names
            assert "sk-alice" not in str(rows) and "sk-boss" not in str(rows)
            # Prometheus: labelled by key name (from the config), never by secret
            text = (await client.get("/metrics", headers=bearer("sk-root"))).text
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
            }
            alice_ok = ("swapd_key_requests_total", (("code", "2xx"), ("key", "alice")))
            assert samples[alice_ok] >= 1
            assert samples["swapd_key_requests_total", (("code", "4xx"), ("key", "alice"))] >= 1
            assert samples["swapd_key_tokens_total", (("key", "alice"),)] > 0
            assert "sk-alice" not in text
            # the request log line names the key
            lines = [r.getMessage() for r in caplog.records if r.name == "swapd.requests"]
            assert "POST /v1/chat/completions key=alice status=200" in lines
            assert not any("sk-" in line for line in lines)
            mine = (await client.get("/api/metrics/activity", headers=bearer("sk-hashed"))).json()
            assert mine["data"] and {r["model"] for r in mine["data"]} == {"beta"}
            stats = await client.get("/api/metrics/stats", headers=bearer("sk-hashed"))
            assert stats.json()["total_requests"] == len(mine["data"])
