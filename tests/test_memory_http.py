"""Memory budgets with real model processes on host RAM, over loopback HTTP.

The models are demo upstreams holding real, touched memory (``--hold-mib``); the budget is
an absolute size (``ram: 200MiB``), so the machine's own load does not change the outcome.
Requests go through the official ``openai`` client; ``/running`` shows footprints and the
device's budget.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from swapd.observe.footprint import estimate_from_argv
from swapd.testing import open_swapd, upstream_cmd
from swapd.testing.gguf import TinyModel, write_tiny_gguf

MiB = 1024**2


def model(name: str, hold_mib: int, footprint: str | None) -> str:
    cmd = upstream_cmd(
        "--model", name, "--respond", f"hello from {name}", "--hold-mib", str(hold_mib)
    )
    text = f"  {name}:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    if footprint is not None:
        text += f"    footprint: {{ram: {footprint}}}\n    footprintLearn: false\n"
    return text


def config(budget: str, *models: str) -> str:
    return f"healthCheckTimeout: 60\nmemory:\n  budgets:\n    ram: {budget}\nmodels:\n" + "".join(
        models
    )


async def ask(client: openai.AsyncOpenAI, name: str) -> str:
    completion = await client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": "hi"}]
    )
    return completion.choices[0].message.content or ""


async def running(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.get("/running")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def openai_client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-any", max_retries=0, timeout=90)


async def test_a_budget_for_two_keeps_two_and_evicts_the_least_recently_used() -> None:
    text = config(
        "200MiB", model("a", 64, "96MiB"), model("b", 64, "96MiB"), model("c", 64, "96MiB")
    )
    with trio.fail_after(120):
        async with open_swapd(text) as swapd:
            async with openai_client(swapd.url) as client:
                assert await ask(client, "a") == "hello from a"
                assert await ask(client, "b") == "hello from b"
                both = await running(swapd.url)
                assert sorted(e["model"] for e in both["running"]) == ["a", "b"]
                assert await ask(client, "a") == "hello from a"  # b is least recently used
                assert await ask(client, "c") == "hello from c"
            after = await running(swapd.url)
            launches = {s.model: s.launches for s in swapd.services.supervisor.statistics()}
            async with httpx.AsyncClient(base_url=swapd.url, timeout=30) as http:
                metrics = (await http.get("/metrics")).text
    assert sorted(e["model"] for e in after["running"]) == ["a", "c"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    assert samples["swapd_memory_budget_bytes", (("device", "ram"),)] == 200 * MiB
    assert samples["swapd_memory_held_bytes", (("device", "ram"),)] == 2 * 96 * MiB
    labels = (("device", "ram"), ("model", "b"), ("source", "declared"))
    assert samples["swapd_model_footprint_bytes", labels] == 96 * MiB
    assert launches == {"a": 1, "b": 1, "c": 1}  # a was never swapped out
    entry = next(e for e in after["running"] if e["model"] == "c")
    assert entry["footprint"] == {"bytes": {"ram": 96 * MiB}, "source": "declared"}
    ram = after["memory"]["devices"]["ram"]
    assert ram["budget"] == 200 * MiB
    assert ram["held"] == 2 * 96 * MiB
    assert ram["budgetFree"] == 8 * MiB
    assert ram["total"] > 0 and ram["used"] > 0 and ram["free"] >= 0


async def test_a_model_larger_than_the_budget_fails_at_once_with_a_clear_error() -> None:
    text = config("200MiB", model("small", 64, "96MiB"), model("huge", 64, "300MiB"))
    with trio.fail_after(120):
        async with open_swapd(text) as swapd:
            async with openai_client(swapd.url) as client:
                assert await ask(client, "small") == "hello from small"
                with pytest.raises(openai.APIStatusError) as caught:
                    await ask(client, "huge")
            launches = {s.model: s.launches for s in swapd.services.supervisor.statistics()}
            after = await running(swapd.url)
    assert caught.value.status_code == 507
    message = caught.value.message
    assert "huge" in message and "300.0 MiB on ram" in message and "200.0 MiB" in message
    assert launches == {"small": 1, "huge": 0}
    assert [e["model"] for e in after["running"]] == ["small"]  # nothing evicted for it


async def learned(url: str, name: str) -> dict[str, Any]:
    """Wait until ``name``'s footprint in /running is a measurement (every 2 s)."""
    while True:
        for entry in (await running(url))["running"]:
            footprint = entry.get("footprint")
            if entry["model"] == name and footprint and footprint["source"] == "learned":
                result: dict[str, Any] = footprint
                return result
        await trio.sleep(0.2)


async def test_learned_footprints_decide_once_measured() -> None:
    # No footprint declared: each model counts as nothing until measured, then as its
    # measured peak (at least the 96 MiB it holds). Two of them exceed 150 MiB.
    text = config("150MiB", model("a", 96, None), model("b", 96, None))
    with trio.fail_after(150):
        async with open_swapd(text) as swapd:
            async with (
                openai_client(swapd.url) as client,
                httpx.AsyncClient(base_url=swapd.url, timeout=30) as http,
            ):
                assert await ask(client, "a") == "hello from a"
                a_peak = await learned(swapd.url, "a")
                assert await ask(client, "b") == "hello from b"  # unknown: started blind
                b_peak = await learned(swapd.url, "b")
                assert (await http.post("/api/models/unload")).status_code == 200
                assert await ask(client, "a") == "hello from a"
                assert await ask(client, "b") == "hello from b"  # now a must leave first
            after = await running(swapd.url)
            launches = {s.model: s.launches for s in swapd.services.supervisor.statistics()}
    assert a_peak["bytes"]["ram"] >= 96 * MiB and b_peak["bytes"]["ram"] >= 96 * MiB
    assert [e["model"] for e in after["running"]] == ["b"]
    assert launches == {"a": 2, "b": 2}


async def test_an_undeclared_model_is_admitted_by_its_gguf_estimate(tmp_path: Path) -> None:
    # footprintLearn: false and nothing declared: the estimate from the GGUF named by the
    # command line is what admission counts (and /running says so).
    path = write_tiny_gguf(tmp_path / "tiny.gguf", TinyModel(n_ctx=64))
    cmd = upstream_cmd("--model", str(path), "--respond", "hello")
    estimate = estimate_from_argv(shlex.split(cmd))
    assert estimate is not None
    text = (
        config("200MiB", "")
        + f"  tiny:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
        + "    footprintLearn: false\n"
    )
    with trio.fail_after(120):
        async with open_swapd(text) as swapd:
            async with openai_client(swapd.url) as client:
                assert await ask(client, "tiny") == "hello"
            after = await running(swapd.url)
    entry = after["running"][0]
    assert entry["footprint"] == {"bytes": {"ram": estimate.on("ram")}, "source": "estimate"}
    assert after["memory"]["devices"]["ram"]["held"] == estimate.on("ram")
