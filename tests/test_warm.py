"""``models.<id>.warm``: swapd loads a model again by itself, over real HTTP with demo
upstreams and short TTLs. ``afterTtl`` reloads a model its TTL unloaded, but only once
nothing is busy: a model with a request in flight is never swapped out for it.
``onUiOpen`` loads the marked models when the web UI is opened. Bounded with
``fail_after``; no timing assertions."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def model(name: str, *extra: str, flags: tuple[str, ...] = ()) -> str:
    cmd = upstream_cmd("--model", name, "--respond", f"hi from {name}", *flags)
    lines = [f"  {name}:", f"    cmd: {cmd}", "    proxy: http://127.0.0.1:${PORT}", *extra]
    return "\n".join(lines) + "\n"


async def states(client: httpx.AsyncClient) -> dict[str, Any]:
    running = (await client.get("/running")).json()["running"]
    return {e["model"]: e for e in running}


async def wait_for(client: httpx.AsyncClient, check: Any) -> dict[str, Any]:
    while True:
        now = await states(client)
        if check(now):
            return now
        await trio.sleep(0.05)


async def test_a_model_its_ttl_unloaded_is_loaded_again() -> None:
    text = "models:\n" + model("w", "    ttl: 1", "    warm: {afterTtl: true}")
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            assert (await client.post("/api/models/load/w")).status_code == 200
            first_pid = (await states(client))["w"]["pid"]
            # The TTL stops it; warm loads it again: a new process, ready, no request sent.
            await wait_for(
                client,
                lambda s: "w" in s and s["w"]["state"] == "ready" and s["w"]["pid"] != first_pid,
            )
            keeper = swapd.services.warm
            assert keeper is not None
            while keeper.warmed < 1:  # noqa: ASYNC110 - in-process count; load() returns after ready
                await trio.sleep(0.05)


async def test_warming_waits_while_another_model_is_busy() -> None:
    # w and b may run together. w's TTL unloads it while b serves a slow request: w is
    # loaded again only once b's request has ended.
    text = (
        "groups:\n  g:\n    swap: false\n    exclusive: false\n    members: [w, b]\n"
        "models:\n" + model("w", "    ttl: 1", "    warm: {afterTtl: true}") + model("b")
    )
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            trio.open_nursery() as nursery,
        ):
            assert (await client.post("/api/models/load/b")).status_code == 200
            assert (await client.post("/api/models/load/w")).status_code == 200
            served = trio.Event()

            async def ask_b() -> None:
                body = {
                    "model": "b",
                    "messages": [{"role": "user", "content": "hi"}],
                    "x_first_delay_ms": 4000,  # the demo answers after 4 s
                }
                reply = await client.post("/v1/chat/completions", json=body)
                assert reply.status_code == 200, reply.text
                served.set()

            nursery.start_soon(ask_b)
            await wait_for(client, lambda s: s["b"]["inFlight"] == 1)
            busy = await wait_for(client, lambda s: "w" not in s)  # its TTL stopped it
            seen_while_busy: list[dict[str, Any]] = []
            while not served.is_set():
                seen_while_busy.append(await states(client))
                await trio.sleep(0.1)
            after = await wait_for(client, lambda s: "w" in s and s["w"]["state"] == "ready")
    assert busy["b"]["inFlight"] == 1
    for snapshot in seen_while_busy:
        if snapshot["b"]["inFlight"]:
            assert "w" not in snapshot, snapshot  # not warmed while b was busy
    assert after["b"]["state"] == "ready"  # nothing was swapped out


async def test_opening_the_ui_loads_the_marked_models() -> None:
    text = "models:\n" + model("u", "    warm: {onUiOpen: true}") + model("n")
    with trio.fail_after(60):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            assert await states(client) == {}
            page = await client.get("/ui/")
            assert page.status_code == 200
            now = await wait_for(client, lambda s: "u" in s and s["u"]["state"] == "ready")
            assert "n" not in now  # not marked: not loaded
            reply = await client.post(
                "/v1/chat/completions",
                json={"model": "u", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert reply.json()["choices"][0]["message"]["content"] == "hi from u"
