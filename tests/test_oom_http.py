"""Out-of-memory at start, with real demo upstreams over loopback HTTP.

``--oom-first-start FILE`` makes the demo upstream print an allocation failure and exit
(or die by SIGKILL, like the kernel's OOM killer) for its first starts, counted in FILE.
swapd raises the model's footprint, evicts more and retries once (docs/memory.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import trio
from test_memory_http import ask, config, openai_client, running

from swapd.testing import open_swapd, upstream_cmd

MiB = 1024**2
HOST_OOM = "ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 402653184"


def oom_model(name: str, marker: Path, *flags: str) -> str:
    cmd = upstream_cmd(
        "--model", name, "--respond", f"hello from {name}", "--oom-first-start", str(marker),
        *flags,
    )  # fmt: skip
    return (  # JSON quoting: the out-of-memory line holds ": ", which plain YAML refuses
        f"  {name}:\n    cmd: {json.dumps(cmd)}\n    proxy: http://127.0.0.1:${{PORT}}\n"
        "    footprint: {ram: 96MiB}\n    footprintLearn: false\n"
    )


def plain_model(name: str) -> str:
    cmd = upstream_cmd("--model", name, "--respond", f"hello from {name}")
    return (
        f"  {name}:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
        "    footprint: {ram: 96MiB}\n    footprintLearn: false\n"
    )


@pytest.mark.parametrize(
    "flags", [("--oom-line", HOST_OOM), ("--oom-line", "loading the model", "--oom-kill")]
)
async def test_out_of_memory_at_start_raises_the_footprint_evicts_and_retries_once(
    tmp_path: Path, flags: tuple[str, ...]
) -> None:
    # 96 + 96 MiB fit in 200 MiB; after the OOM, b counts 120 MiB and a must leave.
    marker = tmp_path / "starts"
    text = config("200MiB", plain_model("a"), oom_model("b", marker, *flags))
    with trio.fail_after(120):
        async with open_swapd(text) as swapd:
            async with openai_client(swapd.url) as client:
                assert await ask(client, "a") == "hello from a"
                assert await ask(client, "b") == "hello from b"
            after = await running(swapd.url)
            launches = {s.model: s.launches for s in swapd.services.supervisor.statistics()}
    assert marker.read_text().strip() == "2"  # b started twice: the OOM, then the retry
    assert launches == {"a": 1, "b": 2}
    assert [e["model"] for e in after["running"]] == ["b"]  # a was evicted for the retry
    raised = {"bytes": {"ram": 120 * MiB}, "source": "learned"}
    assert after["running"][0]["footprint"] == raised


async def test_out_of_memory_twice_fails_with_what_happened(tmp_path: Path) -> None:
    marker = tmp_path / "starts"
    text = config(
        "200MiB",
        plain_model("a"),
        oom_model("b", marker, "--oom-line", HOST_OOM, "--oom-starts", "2"),
    )
    with trio.fail_after(120):
        async with open_swapd(text) as swapd:
            async with openai_client(swapd.url) as client:
                assert await ask(client, "a") == "hello from a"
                with pytest.raises(openai.APIStatusError) as caught:
                    await ask(client, "b")
            launches = {s.model: s.launches for s in swapd.services.supervisor.statistics()}
    assert caught.value.status_code == 502
    message = caught.value.message
    assert f"out of memory while starting ({HOST_OOM})" in message
    assert "raised its footprint to 120.0 MiB on ram and retried once" in message
    assert "it ran out of memory again" in message
    assert launches == {"a": 1, "b": 2}  # one retry, no more
    assert marker.read_text().strip() == "2"


async def test_a_model_with_no_known_footprint_gets_the_whole_budget(tmp_path: Path) -> None:
    # b declares nothing and is not measured: it counted as nothing, so it started next to
    # a. After running out of memory it counts the whole budget, and a must leave.
    marker = tmp_path / "starts"
    unknown = oom_model("b", marker, "--oom-line", HOST_OOM).replace(
        "    footprint: {ram: 96MiB}\n", ""
    )
    text = config("200MiB", plain_model("a"), unknown)
    with trio.fail_after(120):
        async with open_swapd(text) as swapd:
            async with openai_client(swapd.url) as client:
                assert await ask(client, "a") == "hello from a"
                assert await ask(client, "b") == "hello from b"
            after = await running(swapd.url)
    assert [e["model"] for e in after["running"]] == ["b"]
    assert after["running"][0]["footprint"] == {"bytes": {"ram": 200 * MiB}, "source": "learned"}
