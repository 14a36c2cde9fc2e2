"""Load progress in the listings, over real HTTP: while the demo upstream loads slowly
(printing llama-server-like stage lines), ``/v1/models`` (read with the ``openai`` SDK
too) and ``/running`` carry a ``progress`` object; once it is ready, they do not.
Bounded with ``fail_after``; no timing assertions."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

FIELDS = {
    "stage",
    "label",
    "fraction",
    "percent",
    "eta",
    "isEstimate",
    "elapsed",
    "predicted",
    "predictionBasis",
}


def config() -> str:
    cmd = upstream_cmd("--model", "s", "--respond", "hi", "--loading-delay", "6", "--load-stages")
    idle = upstream_cmd("--model", "t", "--respond", "hi")
    return (
        "healthCheckTimeout: 30\nincludeAliasesInList: true\nmodels:\n"
        f"  s:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n    aliases: [s-alias]\n"
        f"  t:\n    cmd: {idle}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    )


def by_id(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in listing["data"]}


async def until_progress(client: httpx.AsyncClient) -> dict[str, Any]:
    """Poll ``/running`` until model ``s`` reports a stage its output said."""
    while True:
        running = (await client.get("/running")).json()["running"]
        entry = next((e for e in running if e["model"] == "s"), None)
        if entry is not None and "progress" in entry and entry["progress"]["stage"] != "starting":
            return entry
        await trio.sleep(0.1)


async def test_listings_carry_progress_while_a_model_loads() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config()) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            openai.AsyncOpenAI(base_url=f"{swapd.url}/v1", api_key="none") as sdk,
            trio.open_nursery() as nursery,
        ):
            loaded = trio.Event()

            async def load() -> None:
                reply = await client.post("/api/models/load/s")
                assert reply.status_code == 200, reply.text
                loaded.set()

            nursery.start_soon(load)
            running = await until_progress(client)
            listing = by_id((await client.get("/v1/models")).json())
            sdk_models = {m.id: m for m in (await sdk.models.list()).data}
            await loaded.wait()
            after_running = (await client.get("/running")).json()["running"]
            after_listing = by_id((await client.get("/v1/models")).json())

    assert running["state"] == "starting"
    progress = running["progress"]
    assert set(progress) == FIELDS
    assert 0 < progress["fraction"] < 1
    assert 0 <= progress["percent"] <= 99
    assert progress["stage"] in {"opening", "loading_weights", "allocating", "warming_up"}
    assert progress["predictionBasis"] == "default"
    assert progress["eta"] is None or progress["eta"] > 0

    loading = listing["s"]
    assert loading["status"] == "starting"  # the existing string is kept
    assert set(loading["progress"]) == FIELDS
    assert loading["progress"]["fraction"] >= progress["fraction"]  # it never goes back
    assert listing["s-alias"]["progress"]["stage"] == loading["progress"]["stage"]
    assert "progress" not in listing["t"]  # not loading: no key
    # the openai SDK lists the models and keeps the extra field
    assert sdk_models["s"].model_extra is not None
    assert sdk_models["s"].model_extra["progress"]["fraction"] > 0

    [ready] = [e for e in after_running if e["model"] == "s"]
    assert ready["state"] == "ready"
    assert "progress" not in ready
    assert after_listing["s"]["status"] == "ready"
    assert "progress" not in after_listing["s"]
