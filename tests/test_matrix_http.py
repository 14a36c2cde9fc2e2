"""A llama-swap file using ``routing.router.use: matrix`` loads and swaps as its sets say.

Real swapd on a loopback port, demo upstreams as real child processes, the official
``openai`` client for the requests and ``/running`` for what occupies a slot after each one.

The scenario (costs: voxtral 50, big-70b 30, the rest 1) walks the solver's rules:

1. gemma, then voxtral: ``standard`` holds both, nothing is evicted;
2. qwen: ``no_speech`` (first in order) would keep gemma but evict voxtral (50);
   ``standard`` evicts only gemma (1): the cheaper set wins over the earlier one;
3. reranker: ``with_rerank`` holds qwen, voxtral and the reranker: nothing is evicted;
4. gemma: ``with_rerank`` again, evicting only qwen (``standard`` would evict two);
5. big-70b: only ``solo`` holds it, everything else is evicted;
6. gemma by its alias: every set with gemma evicts big-70b (30); ``no_speech`` wins by order.

Needs the policy to ask the config's eviction rule (``core/eviction.py``); until that is
wired, ``policy.Snapshot`` has no ``rule`` field and this module is skipped.
"""

from __future__ import annotations

import logging

import httpx
import openai
import pytest
import trio
from openai.types.chat import ChatCompletionMessageParam

from swapd.supervise.lifeline import process_alive
from swapd.testing import open_swapd, upstream_cmd

pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi there"}]
MODELS = ("gemma", "qwen", "voxtral", "reranker", "big-70b")


def llama_swap_file() -> str:
    """Written the way llama-swap users write v250 files: a command macro, aliases, the
    routing block with vars, evict_costs and ordered sets, and scheduler priorities."""
    lines = [
        "healthCheckTimeout: 15",
        "macros:",
        f'  "demo": "{upstream_cmd()}"',
        "models:",
    ]
    for name in MODELS:
        lines += [
            f'  "{name}":',
            f'    cmd: ${{demo}} --model {name} --respond "hello from {name}"',
            "    proxy: http://127.0.0.1:${PORT}",
        ]
        if name == "gemma":
            lines.append('    aliases: ["gemma-chat"]')
    lines += [
        "routing:",
        "  router:",
        "    use: matrix",
        "    settings:",
        "      matrix:",
        "        vars: {g: gemma, q: qwen, v: voxtral, e: reranker}",
        "        evict_costs: {v: 50, big-70b: 30}",
        "        sets:",
        '          no_speech: "g & q & e"',
        '          standard: "(g | q) & v"',
        '          with_rerank: "(g | q) & v & e"',
        '          solo: "big-70b"',
        "  scheduler:",
        "    use: fifo",
        "    settings:",
        "      fifo:",
        "        priority: {voxtral: 10}",
    ]
    return "\n".join(lines) + "\n"


async def running(client: httpx.AsyncClient) -> dict[str, int]:
    """model → pid of everything that has a process."""
    entries = (await client.get("/running")).json()["running"]
    return {e["model"]: e["pid"] for e in entries}


async def test_a_matrix_file_swaps_as_its_sets_say(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="swapd.supervise.supervisor")
    steps = [
        ("gemma", {"gemma"}),
        ("voxtral", {"gemma", "voxtral"}),
        ("qwen", {"qwen", "voxtral"}),
        ("reranker", {"qwen", "voxtral", "reranker"}),
        ("gemma", {"gemma", "voxtral", "reranker"}),
        ("big-70b", {"big-70b"}),
        ("gemma-chat", {"gemma"}),
    ]
    with trio.fail_after(120):
        async with (
            open_swapd(llama_swap_file()) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
            openai.AsyncOpenAI(
                base_url=swapd.url + "/v1", api_key="sk-any", max_retries=0, timeout=60
            ) as sdk,
        ):
            before: dict[str, int] = {}
            for requested, expected in steps:
                completion = await sdk.chat.completions.create(model=requested, messages=PROMPT)
                served_by = "gemma" if requested == "gemma-chat" else requested
                assert completion.choices[0].message.content == f"hello from {served_by}"
                now = await running(client)
                assert set(now) == expected, f"after a request for {requested}"
                # Kept models keep their process; evicted ones are gone.
                for model, pid in before.items():
                    if model in expected:
                        assert now[model] == pid, f"{model} was restarted for {requested}"
                    else:
                        assert not process_alive(pid), f"{model} survived {requested}"
                before = now
    # One INFO line per committed swap, in llama-swap's format.
    swaps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("matrix: ")]
    assert any(
        line.startswith("matrix: model=big-70b set=solo ") and "cost=" in line for line in swaps
    ), swaps
