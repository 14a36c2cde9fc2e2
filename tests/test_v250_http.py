"""The llama-swap v250 settings that have behaviour, over real HTTP: swapd on a loopback
port, demo upstreams as real child processes. Bounded with ``fail_after``; no timing
assertions."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def model(name: str, *flags: str, extra: str = "") -> str:
    lines = [
        f"  {name}:",
        f"    cmd: {upstream_cmd('--model', name, '--debug-fields', *flags)}",
        "    proxy: http://127.0.0.1:${PORT}",
    ]
    lines.extend("    " + line for line in extra.splitlines() if line.strip())
    return "\n".join(lines) + "\n"


def chat(name: str, **extra: object) -> dict[str, object]:
    return {"model": name, "messages": [{"role": "user", "content": "hi"}], **extra}


async def running(client: httpx.AsyncClient) -> list[str]:
    return [r["model"] for r in (await client.get("/running")).json()["running"]]


async def test_global_ttl_unloads_a_model_without_its_own_ttl() -> None:
    config = "healthCheckTimeout: 15\nglobalTTL: 1\nmodels:\n" + model("m")
    with trio.fail_after(40):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            assert (await client.post("/v1/chat/completions", json=chat("m"))).status_code == 200
            assert await running(client) == ["m"]
            listed = (await client.get("/running")).json()["running"][0]
            assert listed["ttl"] == 1  # the inherited value is what runs
            for _ in range(150):  # unloaded after 1 s idle; polled for up to ~30 s
                if not await running(client):
                    break
                await trio.sleep(0.2)
            assert await running(client) == []


async def test_unload_timeout_is_the_grace_before_sigkill() -> None:
    # The daemon's own grace is 60 s; the model's unloadTimeout of 1 s must be what applies,
    # or this unload of a process that ignores SIGTERM would outlast fail_after.
    config = "models:\n" + model("stubborn", "--ignore-sigterm", extra="unloadTimeout: 1")
    with trio.fail_after(30):
        async with (
            open_swapd(config, stop_grace=60) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            assert (await client.post("/api/models/load/stubborn")).status_code == 200
            assert (await client.post("/api/models/unload/stubborn")).status_code == 200
            assert await running(client) == []


async def test_capabilities_in_the_model_list() -> None:
    extra = """
capabilities: {in: [text, image], out: [text], tools: true, context: 8192}
metadata: {family: qwen, context_length: 1}
"""
    config = "models:\n" + model("vision", extra=extra) + model("plain", extra="metadata: {a: 1}")
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            data = (await client.get("/v1/models")).json()["data"]
    records = {r["id"]: r for r in data}
    vision = records["vision"]
    assert vision["architecture"] == {
        "input_modalities": ["text", "image"],
        "output_modalities": ["text"],
        "modality": "text+image->text",
    }
    assert vision["capabilities"] == {
        "vision": True,
        "audio_transcriptions": False,
        "audio_speech": False,
        "image_generation": False,
        "image_to_image": False,
        "function_calling": True,
        "reranker": False,
    }
    assert vision["supported_parameters"] == ["tools", "tool_choice"]
    assert vision["context_length"] == 8192
    # user metadata stays, minus the keys the capabilities now answer
    assert vision["meta"] == {"llamaswap": {"family": "qwen"}, "n_ctx": 8192}
    plain = records["plain"]
    assert "capabilities" not in plain and "architecture" not in plain
    assert plain["meta"] == {"llamaswap": {"a": 1}}


async def test_set_params_by_id_applies_per_requested_name() -> None:
    extra = """
filters:
  setParams: {temperature: 0.5, reasoning: low}
  setParamsByID:
    "${MODEL_ID}:high": {reasoning: high, temperature: 1.0}
"""
    config = "models:\n" + model("oss", extra=extra)
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            plain = await client.post("/v1/chat/completions", json=chat("oss"))
            high = await client.post("/v1/chat/completions", json=chat("oss:high"))
            listed = [r["id"] for r in (await client.get("/v1/models")).json()["data"]]
    assert plain.status_code == high.status_code == 200
    sent_plain = json.loads(plain.json()["x_request_body"])
    sent_high = json.loads(high.json()["x_request_body"])
    assert (sent_plain["reasoning"], sent_plain["temperature"]) == ("low", 0.5)
    assert (sent_high["reasoning"], sent_high["temperature"]) == ("high", 1.0)
    assert sent_high["model"] == "oss:high"  # the name as requested reaches the upstream
    assert listed == ["oss"]  # an alias, listed only with includeAliasesInList


async def test_response_header_timeout_gives_up_on_a_silent_upstream() -> None:
    config = "models:\n" + model("slow", extra="timeouts: {responseHeader: 1}")
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            fast = await client.post("/v1/chat/completions", json=chat("slow"))
            late = await client.post(
                "/v1/chat/completions", json=chat("slow", x_first_delay_ms=5000)
            )
    assert fast.status_code == 200
    assert late.status_code == 502, late.text
    assert "timeouts.responseHeader" in late.text


async def test_upstream_ignore_paths_refuse_to_load_but_pass_when_ready() -> None:
    config = "models:\n" + model("ui")
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            asset = await client.get("/upstream/ui/static/app.js")
            assert asset.status_code == 409
            assert "model ui is not loaded; path matches upstream.ignorePaths" in asset.text
            assert await running(client) == []  # the asset did not start the model
            page = await client.get("/upstream/ui/echo/page")
            assert page.status_code == 200  # not an asset: loads the model
            again = await client.get("/upstream/ui/static/app.js")
            assert again.status_code == 404  # ready: passed through to the upstream
            assert await running(client) == ["ui"]


async def test_capabilities_in_the_event_stream_model_status() -> None:
    extra = "capabilities: {in: [audio], out: [text]}"
    config = "models:\n" + model("whisper", extra=extra)
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=10) as client,
            client.stream("GET", "/api/events") as stream,
        ):
            raw = b""
            status = None
            async for chunk in stream.aiter_raw():
                raw += chunk
                status = _model_status(raw)
                if status is not None:
                    break
    assert status is not None
    (entry,) = status
    assert entry["architecture"] == {
        "input_modalities": ["audio"],
        "output_modalities": ["text"],
        "modality": "audio->text",
    }
    capabilities = entry["capabilities"]
    assert isinstance(capabilities, dict) and capabilities["audio_transcriptions"] is True


def _model_status(raw: bytes) -> list[dict[str, object]] | None:
    """The first complete ``modelStatus`` event in the SSE bytes read so far."""
    for block in raw.decode(errors="replace").split("\n\n")[:-1]:  # complete blocks only
        if block.startswith("event:message\ndata:"):
            outer = json.loads(block.split("data:", 1)[1])
            if outer["type"] == "modelStatus":
                found: list[dict[str, object]] = json.loads(outer["data"])
                return found
    return None
