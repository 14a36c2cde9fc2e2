"""Profiles (``GET /api/profiles``, ``PUT /api/profiles/active``) and peer namespaces
(``<peer>/<model>``) over real HTTP, with demo upstreams as real child processes."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def model(name: str) -> str:
    return (
        f"  {name}:\n    cmd: {upstream_cmd('--model', name, '--debug-fields')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )


def chat(name: str, **extra: object) -> dict[str, object]:
    return {"model": name, "messages": [{"role": "user", "content": "hi"}], **extra}


PROFILES = """
profiles:
  coding:
    description: Coding routing
    pins:
      llm-code: b
      a: ~
  plain:
    pins: {llm-code: a}
"""


async def test_profiles_api_and_pins_route_requests() -> None:
    config = "models:\n" + model("a") + model("b") + PROFILES
    with trio.fail_after(40):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            listing = (await client.get("/api/profiles")).json()
            assert listing == {
                "active": None,
                "profiles": [
                    {
                        "id": "coding",
                        "description": "Coding routing",
                        "pins": {"a": "", "llm-code": "b"},
                    },
                    {"id": "plain", "description": "", "pins": {"llm-code": "a"}},
                ],
            }
            before = await client.post("/v1/chat/completions", json=chat("llm-code"))
            assert before.status_code == 404  # no profile active: not a model

            put = await client.put("/api/profiles/active", json={"name": "coding"})
            assert put.json() == {"active": "coding"}
            pinned = await client.post("/v1/chat/completions", json=chat("llm-code"))
            assert pinned.status_code == 200, pinned.text
            assert pinned.json()["x_upstream_model"] == "b"
            assert json.loads(pinned.json()["x_request_body"])["model"] == "b"
            disabled = await client.post("/v1/chat/completions", json=chat("a"))
            assert disabled.status_code == 404
            assert "no model id could be identified" in disabled.text
            echoed = await client.get("/upstream/llm-code/echo/x")
            assert echoed.status_code == 200
            listed = {r["id"]: r for r in (await client.get("/v1/models")).json()["data"]}
            assert listed["llm-code"]["meta"] == {"llamaswap": {"type": "profile"}}

            off = await client.put("/api/profiles/active", json={"name": None})
            assert off.json() == {"active": None}
            again = await client.post("/v1/chat/completions", json=chat("a"))
            assert again.status_code == 200

            bad_json = await client.put("/api/profiles/active", content=b"{nope")
            no_name = await client.put("/api/profiles/active", json={})
            bad_type = await client.put("/api/profiles/active", json={"name": 3})
            unknown = await client.put("/api/profiles/active", json={"name": "gaming"})
    assert (bad_json.status_code, bad_json.json()["error"]["message"]) == (
        400,
        "invalid profile request",
    )
    assert no_name.json()["error"]["message"] == "profile name is required"
    assert bad_type.json()["error"]["message"] == "profile name must be a string or null"
    assert (unknown.status_code, unknown.json()["error"]["message"]) == (
        404,
        'profile "gaming" not found',
    )


async def test_a_reload_ends_the_active_profile() -> None:
    config = "models:\n" + model("a") + model("b") + PROFILES
    with trio.fail_after(40):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            await client.put("/api/profiles/active", json={"name": "plain"})
            assert (await client.get("/api/profiles")).json()["active"] == "plain"
            swapd.services.use_config(swapd.services.config)  # what a reload does
            assert (await client.get("/api/profiles")).json()["active"] is None


async def test_peer_models_answer_to_their_namespaced_name() -> None:
    async with open_swapd("models:\n" + model("backend")) as remote:
        port = remote.url.rsplit(":", 1)[1]
        config = (
            "models: {}\npeers:\n"
            f"  box:\n    proxy: http://127.0.0.1:{port}\n    models: [backend]\n"
        )
        with trio.fail_after(40):
            async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as c:
                reply = await c.post("/v1/chat/completions", json=chat("box/backend"))
                missing = await c.post("/v1/chat/completions", json=chat("other/backend"))
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.json()["x_request_body"])["model"] == "backend"
    assert missing.status_code == 404


SELECTORS = """
groups:
  pair: {swap: false, exclusive: false, members: [a, b]}
selectors:
  first: {strategy: pin, targets: [b, a], name: First}
  warm: {strategy: warm, targets: [a, b]}
  spill:
    strategy: spillover
    targets: [a, b]
    settings: {spillover: 1}
"""


async def test_pin_and_warm_selectors_pick_their_target() -> None:
    config = "models:\n" + model("a") + model("b") + SELECTORS
    with trio.fail_after(40):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            pinned = await client.post("/v1/chat/completions", json=chat("first"))
            assert pinned.json()["x_upstream_model"] == "b"
            assert json.loads(pinned.json()["x_request_body"])["model"] == "b"
            # b is ready, a is not: warm takes b without starting a
            warm = await client.post("/v1/chat/completions", json=chat("warm"))
            assert warm.json()["x_upstream_model"] == "b"
            running = [r["model"] for r in (await client.get("/running")).json()["running"]]
            assert running == ["b"]
            listed = {r["id"]: r for r in (await client.get("/v1/models")).json()["data"]}
            upstream = await client.get("/upstream/first/echo/x")
    assert listed["first"]["name"] == "First"
    assert listed["first"]["meta"]["llamaswap"] == {
        "type": "selector",
        "strategy": "pin",
        "targets": ["b", "a"],
    }
    assert listed["first"]["status"] == "ready"  # its first target is loaded
    assert listed["spill"]["meta"]["llamaswap"]["spillover"] == 1
    assert upstream.status_code == 400  # selectors are not resolved on /upstream


async def test_spillover_sends_the_second_concurrent_request_to_the_next_target() -> None:
    config = "healthCheckTimeout: 15\nmodels:\n" + model("a") + model("b") + SELECTORS
    replies: dict[str, str] = {}
    with trio.fail_after(60):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):

            async def ask(label: str) -> None:
                body = chat("spill", x_first_delay_ms=3000)
                reply = await client.post("/v1/chat/completions", json=body)
                replies[label] = reply.json()["x_upstream_model"]

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask, "first")
                while not (await client.get("/running")).json()["running"]:  # noqa: ASYNC110
                    await trio.sleep(0.05)  # the first request has picked (and reserved) a
                nursery.start_soon(ask, "second")
            after = await client.post("/v1/chat/completions", json=chat("spill"))
    assert replies == {"first": "a", "second": "b"}
    # both ended: a is active again with no reservation, so it takes the next one
    assert after.json()["x_upstream_model"] == "a"


async def test_a_profile_change_is_an_event() -> None:
    config = "models:\n" + model("a") + model("b") + PROFILES
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=10) as client,
            client.stream("GET", "/api/events") as stream,
        ):
            chunks = stream.aiter_raw()
            raw = await anext(chunks)  # the snapshot
            await client.put("/api/profiles/active", json={"name": "coding"})
            while b"profileChanged" not in raw or not raw.endswith(b"\n\n"):
                raw += await anext(chunks)
    events = [
        json.loads(block.split("data:", 1)[1])
        for block in raw.decode().split("\n\n")
        if block.startswith("event:message\ndata:")
    ]
    changed = [json.loads(e["data"]) for e in events if e["type"] == "profileChanged"]
    assert changed == [{"active": "coding"}]
