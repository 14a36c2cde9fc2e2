"""A reload changes a key's scope at once, without restarting anything: the new scope
applies to the next request, running models keep their process, and an event stream
opened under the old scope ends (docs/keys.md)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from swapd.config import load_config
from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

ROOT = {"Authorization": "Bearer sk-root"}
SCOPED = {"Authorization": "Bearer sk-scoped"}


def config(models: str, role: str = "inference") -> str:
    lines = ["apiKeys: [sk-root]", "keys:", "  - name: scoped", "    secret: sk-scoped"]
    lines += [f"    models: {models}", f"    role: {role}", "models:"]
    for name in ("a", "b"):
        lines += [
            f"  {name}:",
            f"    cmd: {upstream_cmd('--model', name)}",
            "    proxy: http://127.0.0.1:${PORT}",
        ]
    lines += ["groups:", "  both: {swap: false, members: [a, b]}"]
    return "\n".join(lines) + "\n"


def chat(name: str) -> dict[str, object]:
    return {"model": name, "messages": [{"role": "user", "content": "hi"}]}


async def pids(client: httpx.AsyncClient) -> dict[str, int]:
    running = (await client.get("/running", headers=ROOT)).json()["running"]
    return {m["model"]: m["pid"] for m in running}


async def test_reload_changes_a_scope_without_restarting(tmp_path: Path) -> None:
    path = tmp_path / "swapd.yaml"
    path.write_text(config("[a]", role="observer"), encoding="utf-8")
    with trio.fail_after(60):
        async with (
            open_swapd(load_config(str(path))) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=httpx.Timeout(20, read=None)) as client,
            trio.open_nursery() as nursery,
        ):
            assert (
                await client.post("/v1/chat/completions", headers=SCOPED, json=chat("a"))
            ).status_code == 200
            assert (
                await client.post("/v1/chat/completions", headers=SCOPED, json=chat("b"))
            ).status_code == 403
            assert (
                await client.post("/v1/chat/completions", headers=ROOT, json=chat("b"))
            ).status_code == 200
            before = await pids(client)
            assert set(before) == {"a", "b"}

            # an observer of all models holds the activity feed open; scope changes end it
            path.write_text(config('["*"]', role="observer"), encoding="utf-8")
            assert (await client.post("/api/config/reload", headers=ROOT)).json()["ok"] is True
            ended = trio.Event()
            opened = trio.Event()

            async def watch() -> None:
                async with client.stream("GET", "/api/events", headers=SCOPED) as reply:
                    assert reply.status_code == 200
                    opened.set()
                    async for _ in reply.aiter_raw():
                        pass
                ended.set()

            nursery.start_soon(watch)
            await opened.wait()

            path.write_text(config("[b]"), encoding="utf-8")
            reply = await client.post("/api/config/reload", headers=ROOT)
            assert reply.json()["ok"] is True
            await ended.wait()  # the stream opened under the old scope is over

            assert (
                await client.post("/v1/chat/completions", headers=SCOPED, json=chat("b"))
            ).status_code == 200
            refused = await client.post("/v1/chat/completions", headers=SCOPED, json=chat("a"))
            assert refused.status_code == 403
            # the role changed too: the observer routes are closed now
            assert (await client.get("/api/events", headers=SCOPED)).status_code == 403
            models = (await client.get("/v1/models", headers=SCOPED)).json()["data"]
            assert [m["id"] for m in models] == ["b"]
            assert await pids(client) == before  # nothing restarted
