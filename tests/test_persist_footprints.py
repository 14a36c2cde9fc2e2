"""Learned memory footprints survive a restart: two swapd runs on one store file.

The models are demo upstreams holding real, touched host memory (``--hold-mib``) under an
absolute RAM budget. The first run learns both models' peaks (each above 96 MiB) and the
store keeps them; in the second run they are known before either model starts, so the
second model is admitted only after the first one is evicted (two do not fit in 150 MiB),
where a swapd that forgot them would start it blind next to the first.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import openai
import trio

from swapd.observe.loads import command_hash
from swapd.testing import open_swapd, upstream_cmd
from swapd.testing.server import free_port_base

MiB = 1024**2


def config(store: Path) -> str:
    models = "".join(
        f"  {name}:\n    cmd: "
        + upstream_cmd("--model", name, "--respond", f"hello from {name}", "--hold-mib", "96")
        + "\n    proxy: http://127.0.0.1:${PORT}\n"
        for name in ("a", "b")
    )
    # One port range for both runs: the port is part of the command line swapd keys on.
    return (
        f"startPort: {free_port_base()}\nhealthCheckTimeout: 60\nstore:\n  path: {store}\n"
        f"memory:\n  budgets:\n    ram: 150MiB\nmodels:\n{models}"
    )


async def running(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/running")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def footprint_of(http: httpx.AsyncClient, name: str, source: str) -> dict[str, Any]:
    """Wait until ``name``'s footprint in /running comes from ``source``."""
    while True:
        for entry in (await running(http))["running"]:
            footprint = entry.get("footprint")
            if entry["model"] == name and footprint and footprint["source"] == source:
                result: dict[str, Any] = footprint
                return result
        await trio.sleep(0.2)


async def ask(client: openai.AsyncOpenAI, name: str) -> str:
    completion = await client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "hi"}]
    )
    return completion.choices[0].message.content or ""


def clients(url: str) -> tuple[openai.AsyncOpenAI, httpx.AsyncClient]:
    return (
        openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-any", max_retries=0, timeout=90),
        httpx.AsyncClient(base_url=url, timeout=30),
    )


async def test_learned_footprints_survive_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "activity.db"
    text = config(store)
    with trio.fail_after(150):
        async with open_swapd(text) as swapd:
            cmds = {m: spec.cmd for m, spec in swapd.services.config.models.items()}
            client, http = clients(swapd.url)
            async with client, http:
                assert await ask(client, "a") == "hello from a"
                first_a = await footprint_of(http, "a", "learned")
                assert (await http.post("/api/models/unload")).status_code == 200
                assert await ask(client, "b") == "hello from b"
                first_b = await footprint_of(http, "b", "learned")
    assert first_a["bytes"]["ram"] >= 96 * MiB and first_b["bytes"]["ram"] >= 96 * MiB
    with sqlite3.connect(store) as conn:
        kept = {
            (model, cmd_hash, device): peak
            for model, cmd_hash, device, peak in conn.execute(
                "SELECT model_id, cmd_hash, device, peak_bytes FROM footprints"
            )
        }
    assert kept[("a", command_hash(cmds["a"]), "ram")] >= first_a["bytes"]["ram"]
    assert kept[("b", command_hash(cmds["b"]), "ram")] >= first_b["bytes"]["ram"]

    with trio.fail_after(150):
        async with open_swapd(text) as swapd:
            client, http = clients(swapd.url)
            async with client, http:
                assert await ask(client, "a") == "hello from a"
                # Learned before it ever ran in this swapd: straight from the store.
                entry = (await running(http))["running"][0]
                assert entry["footprint"]["source"] == "learned"
                assert entry["footprint"]["bytes"]["ram"] >= 96 * MiB
                assert await ask(client, "b") == "hello from b"  # a must leave first
                after = await running(http)
            launches = {s.model: s.launches for s in swapd.services.supervisor.statistics()}
    assert [e["model"] for e in after["running"]] == ["b"]
    assert launches == {"a": 1, "b": 1}
