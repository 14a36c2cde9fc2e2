"""Stopping a real llama-server while it streams.

On SIGTERM llama-server stops generating, but with a stream open its HTTP handler may
wait for the next SSE ping (``--sse-ping-interval``, 30 s by default), so a server with
a live stream usually does not exit on the first signal. swapd's stop is SIGTERM, ``stop_grace`` seconds, then
SIGKILL of the whole process group: the unload must come back within that bound, and the
client's response must end cleanly (a complete HTTP message, no hang, no reset).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio
from e2e_support import QUESTION

from swapd.supervise.lifeline import process_alive as alive
from swapd.testing import open_swapd
from swapd.testing.process import run_swapd
from swapd.testing.server import free_port_base

TIMEOUT = 120
GRACE = 2.0  # open_swapd's stop_grace
LONG = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Tell me a very long story about a llama."}],
    "max_tokens": 1900,  # most of the context: about half a minute on one core
    "ignore_eos": True,
    "temperature": 0,
    "stream": True,
}


async def running(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    return {entry["model"]: entry for entry in (await client.get("/running")).json()["running"]}


async def test_unload_mid_stream_is_bounded_and_the_stream_ends_cleanly(llama: Any) -> None:
    config = llama.config({"smollm2": llama.cmd(llama.smollm2, "smollm2")})
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(config, stop_grace=GRACE) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as client,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as admin,
        ):
            tokens: list[str] = []
            events: list[str] = []
            async with client.stream("POST", "/v1/chat/completions", json=LONG) as reply:
                assert reply.status_code == 200
                lines = reply.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        events.append(line)
                        chunk = json.loads(line.removeprefix("data: "))
                        tokens.append(chunk["choices"][0]["delta"].get("content") or "")
                        if len(events) >= 5:
                            break
                pid = (await running(admin))["smollm2"]["pid"]
                assert alive(pid)

                started = time.monotonic()
                unload = await admin.post("/api/models/unload/smollm2")
                took = time.monotonic() - started
                assert unload.status_code == 200
                assert took < GRACE + 3.0, f"unload took {took:.1f} s"
                # (Usually it takes the whole grace: llama-server rarely exits on the first
                # SIGTERM with a stream open, and is killed. Under heavy load it sometimes
                # does exit at once, so the test does not insist.)
                assert not alive(pid)

                # The rest of the stream: what was in flight, then a clean end of the body.
                with trio.fail_after(5):
                    events += [line async for line in lines if line.startswith("data: ")]
            assert len(events) < LONG["max_tokens"]  # cut off, not run to the end
            # swapd ends the cut stream as streams end, saying it is not a whole answer
            assert events[-1] == "data: [DONE]"
            assert '"code":"upstream_cut"' in events[-2]
            assert all(e.startswith("data: {") for e in events[:-1])  # no half-written event
            assert "".join(tokens).strip()  # real text arrived before the cut

            assert await running(admin) == {}
            # The next request starts the model again and gets a real answer.
            again = await admin.post("/v1/chat/completions", json=QUESTION)
            assert again.status_code == 200
            assert "Paris" in again.json()["choices"][0]["message"]["content"]


@pytest.mark.filterwarnings(  # the SDK's generators, see test_e2e_sdks.py
    r"ignore:Async generator '(openai|httpx2|httpcore2)\.[\w.]+' was garbage"
    r" collected before it had been exhausted:ResourceWarning"
)
async def test_openai_sdk_stream_cut_by_an_unload_raises_an_api_error(llama: Any) -> None:
    """What an SDK user sees: the chunks that came, then the SDK raises the error event
    swapd ends a cut stream with, so the partial answer is never taken for a whole one."""
    config = llama.config({"smollm2": llama.cmd(llama.smollm2, "smollm2")})
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(config, stop_grace=GRACE) as swapd,
            openai.AsyncOpenAI(
                base_url=swapd.url + "/v1", api_key="sk-none", max_retries=0, timeout=60
            ) as client,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as admin,
        ):
            stream = await client.chat.completions.create(
                model="smollm2",
                messages=LONG["messages"],
                max_tokens=LONG["max_tokens"],
                temperature=0,
                stream=True,
                extra_body={"ignore_eos": True},
            )
            chunks = []
            with pytest.raises(openai.APIError, match="upstream stopped"):  # noqa: PT012
                async with stream:
                    async for chunk in stream:
                        chunks.append(chunk)
                        if len(chunks) == 5:
                            unload = await admin.post("/api/models/unload/smollm2")
                            assert unload.status_code == 200
            assert 5 <= len(chunks) < LONG["max_tokens"]
            assert not any(c.choices and c.choices[0].finish_reason for c in chunks)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_swapd_sigterm_mid_stream_is_bounded(llama: Any, tmp_path: Path) -> None:
    """swapd as a real process: SIGTERM mid-stream lets hypercorn drain the stream for
    up to 5 s, then stops the models (SIGTERM, 10 s grace, SIGKILL). swapd exits 0 within
    that bound and the llama-server is gone with it. A stream still running when the drain
    ends is cut: the client sees an incomplete chunked body (httpx RemoteProtocolError)."""
    config = tmp_path / "config.yaml"
    models = {"smollm2": llama.cmd(llama.smollm2, "smollm2")}
    config.write_text(f"startPort: {free_port_base()}\n" + llama.config(models))
    with trio.fail_after(TIMEOUT), run_swapd(config) as swapd:
        async with httpx.AsyncClient(base_url=swapd.url, timeout=60) as client:
            events: list[str] = []
            async with client.stream("POST", "/v1/chat/completions", json=LONG) as reply:
                assert reply.status_code == 200
                lines = reply.aiter_lines()
                async for line in lines:
                    if line.startswith("data: "):
                        events.append(line)
                        if len(events) >= 5:
                            break
                pid = (await running(client))["smollm2"]["pid"]
                started = time.monotonic()
                swapd.proc.send_signal(signal.SIGTERM)
                cut = False
                with trio.fail_after(20):
                    try:
                        async for line in lines:
                            if line.startswith("data: "):
                                events.append(line)  # noqa: PERF401 - kept if cut
                    except httpx.RemoteProtocolError:
                        cut = True  # hypercorn ends what it could not drain in time
                drained = time.monotonic() - started
        returncode = await trio.to_thread.run_sync(swapd.proc.wait, 20)
        took = time.monotonic() - started
    assert returncode == 0, swapd.output.decode(errors="replace")
    # The stream went on during the drain: a 1900-token answer takes longer, so
    # hypercorn cut it after its graceful timeout (5 s).
    assert len(events) > 5 + 20, len(events)
    assert cut
    assert "data: [DONE]" not in events
    assert 4.5 < drained < 5.0 + 2.0, f"stream cut after {drained:.1f} s"
    # Then the model stopped: with its client gone, llama-server exits on SIGTERM.
    assert took < 5.0 + 10.0 + 3.0, f"shutdown took {took:.1f} s"
    assert not alive(pid)
    assert b"received SIGTERM, shutting down" in swapd.output
