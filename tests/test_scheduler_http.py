"""Issue #15's real-process scenario: batching survives loads longer than maxSwapWait.

swapd serves over loopback HTTP; the models are demo upstreams (real child processes)
that take 2.5 s to become healthy, with ``maxSwapWait: 1``. Twelve requests alternate
between the two models 50 ms apart, through the official ``openai`` client. Before the
fix swapd launched 7 times here (each late waiter was already "overdue" when the other
model's load ended); every request joins one of the two loads now.
"""

from __future__ import annotations

import openai
import trio

from swapd.testing import open_swapd, upstream_cmd


def model(name: str) -> str:
    flags = ("--model", name, "--respond", f"hello from {name}", "--loading-delay", "2.5")
    return f"  {name}:\n    cmd: {upstream_cmd(*flags)}\n    proxy: http://127.0.0.1:${{PORT}}\n"


async def test_alternating_requests_behind_slow_loads_take_two_launches() -> None:
    config = "maxSwapWait: 1\nhealthCheckTimeout: 30\nmodels:\n" + model("big") + model("small")
    replies: dict[int, str] = {}
    with trio.fail_after(90):
        async with open_swapd(config) as swapd:
            client = openai.AsyncOpenAI(
                base_url=swapd.url + "/v1", api_key="sk-any", max_retries=0, timeout=60
            )
            async with client:

                async def ask(i: int, name: str) -> None:
                    await trio.sleep(i * 0.05)
                    completion = await client.chat.completions.create(
                        model=name, messages=[{"role": "user", "content": "hi"}]
                    )
                    replies[i] = completion.choices[0].message.content or ""

                async with trio.open_nursery() as nursery:
                    for i in range(12):
                        nursery.start_soon(ask, i, "big" if i % 2 == 0 else "small")
            launches = {s.model: s.launches for s in swapd.services.supervisor.statistics()}
    assert replies == {i: f"hello from {'big' if i % 2 == 0 else 'small'}" for i in range(12)}
    assert launches == {"big": 1, "small": 1}
