"""swapd.testing.upstream: the demo/fake upstream, run as a real child process.

Every test starts the server with ``--port 0`` in its own session (process group), learns
the port from its first stdout line, talks real HTTP to it with httpx, and kills the whole
group in a ``finally``. Timing assertions are coarse (>= 80 % of a configured delay).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
import trio

from swapd.supervise.lifeline import process_alive as alive
from swapd.testing import upstream as demo

ROOT = Path(__file__).resolve().parents[1]
MODULE = [sys.executable, "-m", "swapd.testing.upstream"]
SCRIPT = [sys.executable, str(ROOT / "swapd" / "testing" / "upstream.py")]
LISTENING = re.compile(r"demo upstream (\S+) listening on (http://127\.0\.0\.1:\d+) pid (\d+)")
REPLY = "one two three four five six seven eight"
CHAT = {"model": "asked-for", "messages": [{"role": "user", "content": "say a few words"}]}


class Child:
    """A running demo upstream: its process, base URL and stdout lines."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.url = ""
        self.lines: list[str] = []
        self._buffer = b""

    async def readline(self) -> str:
        assert self.proc.stdout is not None
        while b"\n" not in self._buffer:
            data = await self.proc.stdout.receive_some(65536)
            if not data:
                raise AssertionError(f"upstream stdout closed; lines so far: {self.lines}")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.lines.append(line.decode())
        return self.lines[-1]

    async def expect_line(self, pattern: str) -> re.Match[str]:
        while True:
            match = re.search(pattern, await self.readline())
            if match:
                return match

    def client(self, limits: httpx.Limits | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=5, limits=limits or httpx.Limits())


def kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@asynccontextmanager
async def spawn(*args: str, argv: list[str] | None = None) -> AsyncIterator[Child]:
    proc = await trio.lowlevel.open_process(
        [*(argv or MODULE), "--port", "0", *args],
        stdout=subprocess.PIPE,
        start_new_session=True,
        cwd=ROOT,
    )
    child = Child(proc)
    try:
        match = await child.expect_line(LISTENING.pattern)
        child.url = match[2]
        assert int(match[3]) == proc.pid
        yield child
    finally:
        with trio.CancelScope(shield=True):
            kill_group(proc.pid)
            await proc.wait()
            assert proc.stdout is not None
            await proc.stdout.aclose()


def sse_payloads(raw: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE event."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = None, ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
        events.append((name, data))
    return events


async def test_health_and_plain_routes() -> None:
    with trio.fail_after(5):
        async with spawn("--model", "m1", "--respond", "hi there") as up, up.client() as c:
            r = await c.get("/health")
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            assert r.headers["content-type"] == "application/json"
            assert (await c.get("/")).text == "GET /"
            assert (await c.get("/test")).text == "hi there"
            assert (await c.get("/pid")).json() == {"pid": up.proc.pid}
            assert (await c.get("/env")).json()["PATH"] == os.environ["PATH"]
            assert (await c.head("/health")).headers["content-length"] == "16"  # and a newline
            models = (await c.get("/v1/models")).json()
            assert models["data"][0]["id"] == "m1"
            assert "model_path" in (await c.get("/props")).json()

            r = await c.get("/no/such/route")
            assert r.status_code == 404 and "error" in r.json()
            assert (await c.delete("/v1/chat/completions")).status_code == 405
            r = await c.get("/status/418")
            assert (r.status_code, r.json()) == (418, {"status": 418})

            r = await c.put("/echo/a/b?x=1&y=2", content=b"payload", headers={"X-Thing": "v"})
            echo = r.json()
            assert echo["method"] == "PUT" and echo["path"] == "/echo/a/b"
            assert echo["query"] == "x=1&y=2"
            assert ["X-Thing", "v"] in echo["headers"]
            assert (echo["body"], echo["body_length"]) == ("payload", 7)

            r = await c.get("/big", params={"bytes": 200_000})
            assert len(r.content) == 200_000 and r.content[:256] == bytes(range(256))
            r = await c.get("/slow", params={"chunks": 3, "delay": 0, "text": "ab"})
            assert r.text == "ababab"

            stats = (await c.get("/stats")).json()
            assert stats["model"] == "m1" and stats["requests"] >= 15
            assert (stats["disconnects"], stats["in_flight"]) == (0, 0)
            await up.expect_line(r"^GET /health 200$")  # the request log


async def test_start_delay_then_loading_delay() -> None:
    with trio.fail_after(6):
        started = trio.current_time()
        async with spawn("--start-delay", "0.3", "--loading-delay", "0.6") as up, up.client() as c:
            listening = trio.current_time()
            assert listening - started >= 0.3
            r = await c.get("/health")
            assert (r.status_code, r.json()) == (503, {"status": "loading"})
            r = await c.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 503 and r.json()["error"]["code"] == 503
            assert (await c.get("/pid")).status_code == 200  # diagnostics work while loading
            for _ in range(100):
                if (await c.get("/health")).status_code == 200:
                    break
                await trio.sleep(0.05)
            # measured from before the spawn: when this process reads the "listening" line
            # late (a busy machine), the time since then undercounts the loading delay
            assert trio.current_time() - started >= 0.3 + 0.6
            assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_chat_replies_carry_debug_fields_only_when_asked() -> None:
    """A user trying the quickstart sees a plain chat.completion; tests that need to see
    what reached the upstream pass --debug-fields."""
    with trio.fail_after(5):
        async with spawn("--model", "served") as up, up.client() as c:
            body = (await c.post("/v1/chat/completions", json=CHAT)).json()
    assert body["object"] == "chat.completion"
    assert not [key for key in body if key.startswith("x_")]


async def test_chat_json_diagnostics_usage_timings() -> None:
    with trio.fail_after(5):
        async with (
            spawn("--model", "served", "--respond", REPLY, "--debug-fields") as up,
            up.client() as c,
        ):
            raw = json.dumps(CHAT).encode()
            r = await c.post(
                "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
            )
            body = r.json()
            assert body["object"] == "chat.completion" and body["model"] == "asked-for"
            assert body["choices"][0]["message"] == {"role": "assistant", "content": REPLY}
            assert body["choices"][0]["finish_reason"] == "stop"
            assert body["x_upstream_model"] == "served"
            assert body["x_request_body"] == raw.decode()
            assert body["x_content_length"] == str(len(raw))
            assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12}
            timings = body["timings"]
            assert set(timings) == {
                "prompt_n",
                "prompt_ms",
                "prompt_per_second",
                "predicted_n",
                "predicted_ms",
                "predicted_per_second",
                "cache_n",
            }
            assert (timings["prompt_n"], timings["predicted_n"]) == (4, 8)

            bad = await c.post("/v1/chat/completions", content=b"{nope")
            assert bad.status_code == 400
            assert bad.json()["error"]["type"] == "invalid_request_error"
            forced = await c.post("/v1/chat/completions", json={**CHAT, "x_status": 500})
            assert forced.status_code == 500 and "x_status" in forced.json()["error"]["message"]


async def test_chat_stream_is_paced_and_ends_with_done() -> None:
    with trio.fail_after(6):
        async with spawn("--respond", REPLY, "--silent") as up, up.client() as c:
            knobs = {"stream": True, "x_chunks": 4, "x_delay_ms": 150, "x_first_delay_ms": 200}
            sent = trio.current_time()
            arrivals: list[tuple[float, bytes]] = []
            buffer = b""
            async with c.stream("POST", "/v1/chat/completions", json={**CHAT, **knobs}) as r:
                assert r.headers["content-type"] == "text/event-stream"
                assert r.headers["transfer-encoding"] == "chunked"
                async for data in r.aiter_raw():
                    buffer += data
                    while b"\n\n" in buffer:
                        event, buffer = buffer.split(b"\n\n", 1)
                        arrivals.append((trio.current_time() - sent, event + b"\n\n"))
            events = [data for _, data in sse_payloads(b"".join(e for _, e in arrivals))]
            assert events[-1] == "[DONE]"
            chunks = [json.loads(e) for e in events[:-1]]
            deltas = [ch["choices"][0]["delta"].get("content", "") for ch in chunks[:-1]]
            assert len(deltas) == 4 and "".join(deltas) == REPLY
            assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
            assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
            final = chunks[-1]
            assert final["choices"][0]["finish_reason"] == "stop"
            assert final["usage"]["completion_tokens"] == 4
            assert final["timings"]["predicted_n"] == 4
            times = [t for t, _ in arrivals]
            assert times[0] >= 0.2 * 0.8
            assert all(b - a >= 0.15 * 0.8 for a, b in pairwise(times[:4]))

            # the same knobs as headers; defaults from the flags otherwise
            r = await c.post(
                "/v1/chat/completions", json={**CHAT, "stream": True}, headers={"x-chunks": "2"}
            )
            assert len(sse_payloads(r.content)) == 2 + 2


async def test_anthropic_stream_event_sequence() -> None:
    with trio.fail_after(5):
        async with spawn("--respond", REPLY, "--chunks", "3") as up, up.client() as c:
            body = {**CHAT, "system": "be brief", "stream": True}
            r = await c.post("/v1/messages", json=body)
            events = sse_payloads(r.content)
            names = [name for name, _ in events]
            assert names == [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
            payloads = [json.loads(data) for _, data in events]
            assert all(p["type"] == name for p, name in zip(payloads, names, strict=True))
            assert payloads[0]["message"]["usage"]["input_tokens"] == 6
            text = "".join(p["delta"]["text"] for p in payloads[2:5])
            assert text == REPLY and payloads[2]["delta"]["type"] == "text_delta"
            assert payloads[6]["usage"]["output_tokens"] == 3
            assert payloads[6]["delta"]["stop_reason"] == "end_turn"

            message = (await c.post("/v1/messages", json=CHAT)).json()
            assert message["type"] == "message" and message["content"][0]["text"] == REPLY
            assert message["usage"] == {"input_tokens": 4, "output_tokens": 8}
            assert (await c.post("/v1/messages/count_tokens", json=CHAT)).json() == {
                "input_tokens": 4
            }
            err = await c.post("/v1/messages", json={**CHAT, "x_status": 529})
            assert err.status_code == 529 and err.json()["type"] == "error"


async def test_other_inference_routes() -> None:
    with trio.fail_after(5):
        async with spawn("--respond", REPLY, "--chunks", "2", "--silent") as up, up.client() as c:
            prompt = {"model": "x", "prompt": "complete this"}
            r = (await c.post("/v1/completions", json=prompt)).json()
            assert r["choices"][0]["text"] == REPLY and r["usage"]["prompt_tokens"] == 2
            r = await c.post("/v1/completions", json={**prompt, "stream": True})
            assert [d for _, d in sse_payloads(r.content)][-1] == "[DONE]"

            r = await c.post("/completion", json={**prompt, "stream": True})
            events = [json.loads(d) for _, d in sse_payloads(r.content)]
            assert [e["stop"] for e in events] == [False, False, True]  # no [DONE] here
            assert "".join(e["content"] for e in events) == REPLY
            assert "timings" in events[-1]
            r = (await c.post("/infill", json={"input_prefix": "a", "input_suffix": "b"})).json()
            assert r["content"] == REPLY and r["timings"]["prompt_n"] == 2

            r = (await c.post("/v1/responses", json={"model": "x", "input": "hi you"})).json()
            assert r["object"] == "response" and r["output_text"] == REPLY
            assert r["usage"]["input_tokens"] == 2 and r["usage"]["output_tokens"] == 8
            r = await c.post("/v1/responses", json={"input": "hi", "stream": True})
            assert sse_payloads(r.content)[-1][0] == "response.completed"

            async def embed(value: object) -> list[list[float]]:
                r = await c.post("/v1/embeddings", json={"model": "e", "input": value})
                assert r.json()["object"] == "list" and r.json()["model"] == "e"
                return [d["embedding"] for d in r.json()["data"]]

            first, again, other = await embed("hello"), await embed("hello"), await embed("bye")
            assert first == again != other and len(first[0]) == 8
            assert all(-1 <= x <= 1 for x in first[0])
            assert await embed(["hello", "bye"]) == [first[0], other[0]]

            r = (await c.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"]})).json()
            assert sorted(x["index"] for x in r["results"]) == [0, 1]
            assert (await c.post("/reranking", json={"query": "q", "documents": ["a"]})).is_success
            r = await c.post("/v1/audio/speech", json={"model": "tts", "input": "hi"})
            assert r.headers["content-type"] == "audio/mpeg" and r.content.startswith(b"ID3")
            r = await c.get("/v1/audio/voices", params={"model": "tts"})
            assert r.json() == {"voices": ["voice1"], "model": "tts"}
            r = await c.post("/v1/images/generations", json={"prompt": "cat", "n": 2})
            assert len(r.json()["data"]) == 2
            r = await c.post("/v1/images/edits", data={"n": "1"}, files={"image": b"png"})
            assert len(r.json()["data"]) == 1
            assert (await c.post("/sdapi/v1/txt2img", json={"prompt": "cat"})).json()["images"]

            # x_fail_after_chunks: the stream is cut without [DONE] (and without its terminator)
            with pytest.raises(httpx.RemoteProtocolError):
                await c.post(
                    "/v1/chat/completions", json={**CHAT, "stream": True, "x_fail_after_chunks": 1}
                )
            with pytest.raises(httpx.RemoteProtocolError):
                await c.post("/v1/chat/completions", json={**CHAT, "x_fail_after_chunks": 0})
            stats = (await c.get("/stats")).json()
            assert (stats["aborts"], stats["disconnects"]) == (2, 0)


async def test_multipart_transcription_with_3mb_file() -> None:
    with trio.fail_after(5):
        async with spawn("--silent") as up, up.client() as c:
            audio = bytes(range(256)) * (3 * 1024 * 4)  # 3 MiB, every byte value
            files = {"file": ("speech.wav", audio, "audio/wav")}
            r = await c.post(
                "/v1/audio/transcriptions", data={"model": "whisper", "language": "en"}, files=files
            )
            body = r.json()
            assert r.status_code == 200
            assert body["text"] == f"The length of the file is {len(audio)} bytes"
            assert body["model"] == "whisper" and body["filename"] == "speech.wav"
            assert body["fields"] == {"model": "whisper", "language": "en"}
            assert body["h_content_type"].startswith("multipart/form-data; boundary=")
            assert int(body["h_content_length"]) > len(audio)

            r = await c.post("/v1/audio/transcriptions", data={"language": "en"}, files=files)
            assert (r.status_code, r.json()) == (400, {"error": "Missing model parameter"})


async def test_gzip_and_deflate_responses() -> None:
    with trio.fail_after(5):
        async with spawn("--silent") as up, up.client() as c:
            r = await c.post("/v1/chat/completions", json=CHAT, headers={"x-gzip": "1"})
            assert r.headers["content-encoding"] == "gzip"
            assert r.json()["object"] == "chat.completion"  # httpx decoded it

            async with c.stream(
                "POST", "/v1/chat/completions", json=CHAT, headers={"x-deflate": "1"}
            ) as r:
                raw = b"".join([part async for part in r.aiter_raw()])
            assert r.headers["content-encoding"] == "deflate"
            assert json.loads(zlib.decompress(raw))["object"] == "chat.completion"

            r = await c.post("/v1/embeddings", json={"input": "x"}, headers={"x-deflate": "raw"})
            assert r.headers["content-encoding"] == "deflate"

            plain = {"x-gzip": "1", "accept-encoding": "identity"}
            r = await c.post("/v1/chat/completions", json=CHAT, headers=plain)
            assert "content-encoding" not in r.headers and r.json()["usage"]
            assert gzip.decompress(gzip.compress(b"x")) == b"x"


async def test_exit_after_and_crash_before_listen() -> None:
    with trio.fail_after(5):
        async with spawn("--exit-after", "0.3", "--exit-code", "3", "--silent") as up:
            assert await up.proc.wait() == 3
        result = await trio.run_process(
            [*MODULE, "--port", "0", "--crash-before-listen", "--exit-code", "7"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 7
        assert b"crash" in result.stderr and b"listening" not in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_sigterm_and_sigint_exit_zero(signum: signal.Signals) -> None:
    with trio.fail_after(5):
        async with spawn("--silent") as up:
            up.proc.send_signal(signum)
            assert await up.proc.wait() == 0


async def test_ignore_sigterm_needs_sigkill() -> None:
    with trio.fail_after(5):
        async with spawn("--ignore-sigterm", "--silent") as up, up.client() as c:
            up.proc.send_signal(signal.SIGTERM)
            await trio.sleep(0.3)
            assert up.proc.poll() is None
            assert (await c.get("/health")).status_code == 200
            up.proc.kill()
            assert await up.proc.wait() == -signal.SIGKILL


async def test_spawn_grandchild_in_same_process_group() -> None:
    with trio.fail_after(5):
        async with spawn("--spawn-grandchild", "--silent") as up:
            [line] = [line for line in up.lines if line.startswith("grandchild pid ")]
            grandchild = int(line.removeprefix("grandchild pid "))
            assert grandchild != up.proc.pid and alive(grandchild)
            assert os.getpgid(grandchild) == up.proc.pid  # session leader: pgid == its pid
        for _ in range(150):  # spawn() killed the whole group
            if not alive(grandchild):
                break
            await trio.sleep(0.02)
        assert not alive(grandchild)


async def test_sleep_mode_routes() -> None:
    with trio.fail_after(8):
        async with spawn("--sleep-mode", "--silent") as up, up.client() as c:
            assert (await c.get("/is_sleeping")).json() == {"is_sleeping": False}
            assert (await c.post("/sleep", params={"level": 2})).status_code == 200
            assert (await c.get("/is_sleeping")).json() == {"is_sleeping": True}
            assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 503
            assert (await c.get("/health")).status_code == 200
            assert (await c.post("/wake_up")).status_code == 200
            assert (await c.get("/is_sleeping")).json() == {"is_sleeping": False}
            assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
            rpc = await c.post("/collective_rpc", json={"method": "reload_weights"})
            assert rpc.status_code == 200
            assert (await c.post("/collective_rpc", json={"method": "x"})).status_code == 400
            assert (await c.post("/reset_prefix_cache")).status_code == 200
            assert (await c.post("/wake_up_fail")).status_code == 500

        async with spawn("--sleep-mode", "--fail-wake", "--silent") as up, up.client() as c:
            assert (await c.post("/sleep")).status_code == 200
            assert (await c.post("/wake_up")).status_code == 500
            assert (await c.get("/is_sleeping")).json() == {"is_sleeping": True}

        async with spawn("--sleep-mode", "--fail-sleep", "--silent") as up, up.client() as c:
            assert (await c.post("/sleep")).status_code == 500
            assert (await c.get("/is_sleeping")).json() == {"is_sleeping": False}

        async with spawn("--silent") as up, up.client() as c:
            assert (await c.post("/sleep")).status_code == 404
            assert (await c.get("/is_sleeping")).status_code == 404


async def test_client_disconnect_mid_stream_is_counted() -> None:
    with trio.fail_after(5):
        async with spawn("--respond", REPLY) as up, up.client() as c:
            body = json.dumps({**CHAT, "stream": True, "x_chunks": 20, "x_delay_ms": 100})
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nHost: upstream\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            port = int(up.url.rsplit(":", 1)[1])
            received = b""
            async with await trio.open_tcp_stream("127.0.0.1", port) as sock:
                await sock.send_all((head + body).encode())
                while received.count(b"data: ") < 2:
                    received += await sock.receive_some(65536)
            dropped = trio.current_time()
            # the server notices the EOF at once, not only at its next write
            match = await up.expect_line(r"client disconnected after (\d+) chunks on (\S+)")
            assert trio.current_time() - dropped < 0.5
            assert 2 <= int(match[1]) < 20 and match[2] == "/v1/chat/completions"
            stats = (await c.get("/stats")).json()
            assert (stats["disconnects"], stats["in_flight"], stats["aborts"]) == (1, 0, 0)


async def test_runs_as_a_script_and_serves_many_connections() -> None:
    with trio.fail_after(8):
        async with spawn("--silent", argv=SCRIPT) as up:
            limits = httpx.Limits(max_connections=50)
            async with up.client(limits=limits) as c:
                statuses: list[int] = []

                async def one(i: int) -> None:
                    body = {**CHAT, "stream": i % 2 == 0}
                    statuses.append((await c.post("/v1/chat/completions", json=body)).status_code)

                async with trio.open_nursery() as nursery:
                    for i in range(100):
                        nursery.start_soon(one, i)
                assert statuses == [200] * 100
                assert (await c.get("/stats")).json()["requests"] == 101


def test_main_in_process_and_argument_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--port", "0", "--exit-after", "0.2", "--exit-code", "4", "--silent"]) == 4
    out = capsys.readouterr()
    assert LISTENING.search(out.out) and "--exit-after" in out.err
    for bad in (["--chunks", "-1"], ["--chunk-delay", "nan"], ["--health-path", "x"], []):
        with pytest.raises(SystemExit):
            demo.parse_args(["--port", "0", *bad] if bad else bad)
    capsys.readouterr()


def test_split_reply_joins_back() -> None:
    for n in (0, 1, 2, 3, 7, 8, 9, 40, 50):
        pieces = demo.split_reply(REPLY, n)
        assert len(pieces) == n
        assert "".join(pieces) == (REPLY if n else "")
