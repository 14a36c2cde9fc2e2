"""The HTTP front end over real HTTP: swapd on a loopback port, demo upstreams as real
child processes. Each test is bounded with ``fail_after`` on the real clock."""

from __future__ import annotations

import base64
import itertools
import json
import os

import httpx
import pytest
import trio

from swapd.supervise.lifeline import process_alive
from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def config(**models: str) -> str:
    lines = ["healthCheckTimeout: 15", "models:"]
    for name, extra in models.items():
        lines.append(f"  {name}:")
        flags = ("--model", name, "--respond", f"hello from {name}", "--debug-fields")
        lines.append(f"    cmd: {upstream_cmd(*flags)}")
        lines.append("    proxy: http://127.0.0.1:${PORT}")
        lines.extend("    " + line for line in extra.splitlines() if line.strip())
    return "\n".join(lines) + "\n"


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi there"}], **extra}


async def test_chat_completion_starts_the_model_and_forwards() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            reply = await client.post("/v1/chat/completions", json=chat("m1"))
            assert reply.status_code == 200, reply.text
            body = reply.json()
            assert body["choices"][0]["message"]["content"] == "hello from m1"
            assert body["x_upstream_model"] == "m1"
            assert json.loads(body["x_request_body"]) == chat("m1")
            running = (await client.get("/running")).json()["running"]
            assert [(r["model"], r["state"]) for r in running] == [("m1", "ready")]
            assert running[0]["pid"] > 0


async def test_swapping_stops_the_previous_model() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="", m2="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            first = await client.post("/v1/chat/completions", json=chat("m1"))
            pid1 = (await client.get("/running")).json()["running"][0]["pid"]
            second = await client.post("/v1/chat/completions", json=chat("m2"))
            assert first.json()["x_upstream_model"] == "m1"
            assert second.json()["x_upstream_model"] == "m2"
            running = (await client.get("/running")).json()["running"]
            assert [r["model"] for r in running] == ["m2"]
            assert _is_gone(pid1)


def _is_gone(pid: int) -> bool:
    """No such process, or only its zombie is left."""
    return not process_alive(pid)


async def test_streaming_is_incremental() -> None:
    extra = "cmd: " + upstream_cmd("--model", "s", "--chunks", "5", "--chunk-delay", "0.3")
    text = config(s="").replace(
        f"    cmd: {upstream_cmd('--model', 's', '--respond', 'hello from s', '--debug-fields')}\n",
        f"    {extra}\n",
    )
    with trio.fail_after(30):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            await client.post("/api/models/load/s")
            arrivals: list[float] = []
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat("s", stream=True)
            ) as reply:
                assert reply.status_code == 200
                assert reply.headers["content-type"].startswith("text/event-stream")
                assert reply.headers["x-accel-buffering"] == "no"
                data = b""
                async for chunk in reply.aiter_raw():
                    arrivals.append(trio.current_time())
                    data += chunk
            events = [line for line in data.decode().split("\n") if line.startswith("data: ")]
            assert events[-1] == "data: [DONE]"
            # content chunks arrive as the upstream sends them, ~0.3 s apart, not in one lump
            assert len(arrivals) >= 5
            gaps = [b - a for a, b in itertools.pairwise(arrivals)]
            assert sum(1 for g in gaps if g >= 0.2) >= 3


async def test_client_disconnect_cancels_the_upstream_request() -> None:
    extra = upstream_cmd("--model", "s", "--chunks", "50", "--chunk-delay", "0.1")
    text = config(s="").replace(
        f"    cmd: {upstream_cmd('--model', 's', '--respond', 'hello from s', '--debug-fields')}\n",
        f"    cmd: {extra}\n",
    )
    with trio.fail_after(30):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat("s", stream=True)
            ) as reply:
                received = 0
                async for _ in reply.aiter_raw():
                    received += 1
                    if received == 3:
                        break
            for _ in range(40):
                stats = (await client.get("/upstream/s/stats")).json()
                if stats["disconnects"] >= 1:
                    break
                await trio.sleep(0.1)
            assert stats["disconnects"] == 1
            assert stats["in_flight"] <= 1  # only the /stats request itself
            running = (await client.get("/running")).json()["running"]
            assert running[0]["inFlight"] == 0


async def test_errors_are_openai_and_anthropic_shaped() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(llama3="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            missing = await client.post("/v1/chat/completions", json=chat("llama-3"))
            assert missing.status_code == 404
            error = missing.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert "llama3" in error["message"]
            anthropic = await client.post("/v1/messages", json={"model": "nope", "messages": []})
            assert anthropic.status_code == 404
            assert anthropic.json()["type"] == "error"
            assert anthropic.json()["error"]["type"] == "not_found_error"
            bad = await client.post("/v1/chat/completions", content=b"{not json")
            assert bad.status_code == 400
            message = bad.json()["error"]["message"]
            assert message.startswith("the body is not valid JSON"), message
            assert "(char 1)" in message  # the parser's position
            no_model = await client.post("/v1/chat/completions", json={"messages": []})
            assert no_model.status_code == 400
            unknown_route = await client.get("/v2/nothing")
            assert unknown_route.status_code == 404
            assert unknown_route.json()["error"]["message"] == "not found"


async def test_start_failure_is_a_502_with_exit_code_and_log_tail() -> None:
    text = """
healthCheckTimeout: 15
models:
  broken:
    cmd: sh -c 'echo loading weights; echo out of memory >&2; exit 3'
    proxy: http://127.0.0.1:${PORT}
    checkEndpoint: /health
"""
    # ${PORT} as a spare argument gives the model a port (sh ignores it as $0)
    text = text.replace("exit 3'", "exit 3' ${PORT}")
    with trio.fail_after(30):
        async with open_swapd(text) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            reply = await client.post("/v1/chat/completions", json=chat("broken"))
            assert reply.status_code == 502
            message = reply.json()["error"]["message"]
            assert "exit code 3" in message
            assert "out of memory" in message
            assert "Traceback" not in reply.text
            again = await client.post("/v1/chat/completions", json=chat("broken"))
            assert again.status_code == 503  # backing off instead of looping
            assert int(again.headers["retry-after"]) >= 1


async def test_api_keys() -> None:
    text = "apiKeys: [sk-one, sk-two]\n" + config(m1="")
    with trio.fail_after(30):
        async with open_swapd(text) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            denied = await client.post("/v1/chat/completions", json=chat("m1"))
            assert denied.status_code == 401
            assert denied.headers["www-authenticate"].startswith("Basic realm=")
            assert (await client.get("/running")).status_code == 401
            assert (await client.get("/health")).status_code == 200
            basic = base64.b64encode(b"anyone:sk-two").decode()
            for headers in (
                {"authorization": "Bearer sk-one"},
                {"x-api-key": "sk-two"},
                {"authorization": f"Basic {basic}"},
            ):
                reply = await client.post("/v1/chat/completions", json=chat("m1"), headers=headers)
                assert reply.status_code == 200, headers
            echo = await client.post(
                "/upstream/m1/echo/x", content=b"{}", headers={"authorization": "Bearer sk-one"}
            )
            seen = {name.lower() for name, _ in echo.json()["headers"]}
            assert "authorization" not in seen
            assert "x-forwarded-for" in seen


async def test_filters_and_use_model_name_reach_the_upstream() -> None:
    extra = """
useModelName: org/real-name
filters:
  stripParams: "temperature, top_p"
  setParams:
    max_tokens: 64
"""
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1=extra)) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            body = chat("m1", temperature=0.3, top_p=0.5, seed=7)
            reply = await client.post("/v1/chat/completions", json=body)
            seen = json.loads(reply.json()["x_request_body"])
            assert seen == {
                "model": "org/real-name",
                "messages": body["messages"],
                "seed": 7,
                "max_tokens": 64,
            }
            assert reply.json()["x_content_length"] == str(
                len(reply.json()["x_request_body"].encode())
            )


async def test_multipart_transcription() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(whisper="useModelName: whisper-large")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            audio = os.urandom(300_000)
            reply = await client.post(
                "/v1/audio/transcriptions",
                data={"model": "whisper", "language": "en"},
                files={"file": ("test.mp3", audio, "audio/mpeg")},
            )
            assert reply.status_code == 200, reply.text
            result = reply.json()
            assert result["text"] == "The length of the file is 300000 bytes"
            assert result["model"] == "whisper-large"
            assert result["fields"]["language"] == "en"


async def test_model_listing() -> None:
    text = "includeAliasesInList: true\n" + config(
        zeta="name: Zeta\nmetadata: {ctx: 4096}", alpha="aliases: [a]", hidden="unlisted: true"
    )
    text += "peers:\n  remote:\n    proxy: http://127.0.0.1:9\n    models: [far-away]\n"
    with trio.fail_after(30):
        async with open_swapd(text) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            listing = await client.get("/v1/models", headers={"origin": "http://example.test"})
            assert listing.headers["access-control-allow-origin"] == "http://example.test"
            data = listing.json()["data"]
            assert [m["id"] for m in data] == ["a", "alpha", "far-away", "zeta"]
            zeta = data[-1]
            assert zeta["name"] == "Zeta"
            assert zeta["meta"] == {"llamaswap": {"ctx": 4096}}
            assert zeta["status"] == "stopped"
            assert data[2]["meta"] == {"llamaswap": {"peerID": "remote"}}
            short = (await client.get("/models")).json()["data"]
            assert [m["id"] for m in short] == [m["id"] for m in data]


async def test_upstream_passthrough_and_redirect() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="aliases: [one]")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            reply = await client.get("/upstream/one/test")
            assert reply.text == "hello from m1"
            redirect = await client.get("/upstream/m1")
            assert redirect.status_code == 301
            assert redirect.headers["location"] == "/upstream/m1/"
            assert (await client.get("/upstream/ghost/test")).status_code == 400


async def test_load_and_unload_endpoints() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="", m2="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            loaded = await client.post("/api/models/load/m1")
            assert loaded.json() == {"msg": "ok", "model": "m1", "state": "ready"}
            assert (await client.post("/api/models/unload/m1")).text == "OK"
            assert (await client.get("/running")).json()["running"] == []
            await client.post("/api/models/load/m2")
            assert (await client.post("/api/models/unload")).json() == {"msg": "ok"}
            for _ in range(50):
                if (await client.get("/running")).json()["running"] == []:
                    break
                await trio.sleep(0.05)
            assert (await client.get("/running")).json()["running"] == []
            assert (await client.post("/api/models/unload/ghost")).status_code == 404


async def test_cors_preflight() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            reply = await client.options(
                "/v1/chat/completions",
                headers={"access-control-request-headers": "x-custom, \x01bad"},
            )
            assert reply.status_code == 204
            assert reply.headers["access-control-allow-origin"] == "*"
            assert reply.headers["access-control-allow-headers"] == "x-custom"


async def test_peer_gets_its_api_key_and_filters() -> None:
    async with open_swapd(config(backend="")) as remote:
        port = remote.url.rsplit(":", 1)[1]
        text = f"""
models: {{}}
peers:
  box:
    proxy: http://127.0.0.1:{port}
    apiKey: sk-peer
    models: [backend]
    filters:
      setParams: {{temperature: 0.1}}
"""
        with trio.fail_after(30):
            async with open_swapd(text) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
                reply = await client.post(
                    "/v1/chat/completions",
                    json=chat("backend"),
                    headers={"authorization": "Bearer mine"},
                )
                assert reply.status_code == 200, reply.text
                assert json.loads(reply.json()["x_request_body"])["temperature"] == 0.1


async def test_health_and_version() -> None:
    with trio.fail_after(30):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            assert (await client.get("/health")).text == "OK"
            version = (await client.get("/api/version")).json()
            assert set(version) == {"version", "commit", "build_date"}


async def test_loading_state_streams_progress_then_the_answer() -> None:
    text = "sendLoadingState: true\n" + config(s="").replace(
        "--respond 'hello from s'", "--respond 'hello from s' --loading-delay 1.5"
    )
    with trio.fail_after(30):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            client.stream("POST", "/v1/chat/completions", json=chat("s", stream=True)) as reply,
        ):
            assert reply.status_code == 200
            assert reply.headers["content-type"] == "text/event-stream"
            raw = b"".join([chunk async for chunk in reply.aiter_raw()])
    events = [line[6:] for line in raw.decode().split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    reasoning = "".join(
        p["choices"][0]["delta"].get("reasoning_content", "") for p in parsed if "choices" in p
    )
    content = "".join(
        p["choices"][0]["delta"].get("content") or "" for p in parsed if "choices" in p
    )
    assert "loading model s" in reasoning
    assert "Done!" in reasoning
    assert reasoning.count(".") >= 1  # progress ticks while the model was loading
    assert content == "hello from s"


async def test_loading_state_failure_ends_with_an_error_event_not_a_fake_success() -> None:
    text = """
sendLoadingState: true
models:
  broken:
    cmd: sh -c 'echo no gpu >&2; exit 4' ${PORT}
    proxy: http://127.0.0.1:${PORT}
"""
    with trio.fail_after(30):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            reply = await client.post("/v1/chat/completions", json=chat("broken", stream=True))
    events = [line[6:] for line in reply.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert "exit code 4" in error["message"]
    assert error["code"] == 502
    assert not any('"content"' in e for e in events)


JSON_ROUTES = [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, "choices"),
    ("/v1/completions", {"prompt": "x"}, "choices"),
    ("/v1/responses", {"input": "x"}, "output"),
    ("/v1/embeddings", {"input": "x"}, "data"),
    ("/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}, "content"),
    (
        "/v1/messages/count_tokens",
        {"messages": [{"role": "user", "content": "x y"}]},
        "input_tokens",
    ),
    ("/completion", {"prompt": "x"}, "content"),
    ("/infill", {"input_prefix": "a", "input_suffix": "b"}, "content"),
    ("/rerank", {"query": "q", "documents": ["a", "b"]}, "results"),
    ("/reranking", {"query": "q", "documents": ["a"]}, "results"),
    ("/v1/rerank", {"query": "q", "documents": ["a"]}, "results"),
    ("/v1/reranking", {"query": "q", "documents": ["a"]}, "results"),
    ("/v1/images/generations", {"prompt": "a cat"}, "data"),
    ("/sdapi/v1/txt2img", {"prompt": "a cat"}, "images"),
]


async def test_every_json_inference_route_reaches_the_model() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            for path, body, key in JSON_ROUTES:
                reply = await client.post(path, json={"model": "m1", **body})
                assert reply.status_code == 200, (path, reply.text)
                assert key in reply.json(), (path, reply.json())
            speech = await client.post("/v1/audio/speech", json={"model": "m1", "input": "hi"})
            assert speech.status_code == 200
            assert speech.headers["content-type"].startswith("audio/")
            voices = await client.get("/v1/audio/voices", params={"model": "m1"})
            assert voices.json()["voices"] == ["voice1"]
            props = await client.get("/props", params={"model": "m1"})
            assert props.status_code == 200
            assert (await client.get("/props")).status_code == 400
            edit = await client.post(
                "/v1/images/edits",
                data={"model": "m1", "prompt": "hat"},
                files={"image": ("a.png", b"\x89PNG fake", "image/png")},
            )
            assert edit.status_code == 200, edit.text


async def test_a_full_queue_answers_429_with_retry_after() -> None:
    config = (
        "maxQueuedRequests: 2\n"
        "models:\n  slow:\n"
        f"    cmd: {upstream_cmd('--model', 'slow', '--start-delay', '1.5')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}]}
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
            trio.open_nursery() as nursery,
        ):
            replies: list[httpx.Response] = []

            async def send() -> None:
                replies.append(await client.post("/v1/chat/completions", json=body))

            for _ in range(2):
                nursery.start_soon(send)
            supervisor = swapd.services.supervisor
            while supervisor.statistics()[0].waiting < 2:  # noqa: ASYNC110 - in-process state
                await trio.sleep(0.01)
            full = await client.post("/v1/chat/completions", json=body)
            anthropic = await client.post(
                "/v1/messages", json={"model": "slow", "max_tokens": 5, "messages": []}
            )
        # the two queued requests were served once the model was up
        assert [r.status_code for r in replies] == [200, 200]
    assert full.status_code == 429
    # the time the load is predicted to still need (first load: the 15 s default)
    assert 1 <= int(full.headers["retry-after"]) <= 15
    assert full.json()["error"]["type"] == "rate_limit_error"
    assert "too many requests are waiting for model 'slow'" in full.json()["error"]["message"]
    assert anthropic.status_code == 429
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "rate_limit_error"


async def test_requests_waiting_at_shutdown_get_503_while_in_flight_ones_finish() -> None:
    config = (
        "models:\n  a:\n"
        f"    cmd: {upstream_cmd('--model', 'a', '--chunks', '10', '--chunk-delay', '0.1')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
        "  b:\n"
        f"    cmd: {upstream_cmd('--model', 'b')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    stream_body = {"model": "a", "stream": True, "messages": []}
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
            client.stream("POST", "/v1/chat/completions", json=stream_body) as stream,
            trio.open_nursery() as nursery,
        ):
            chunks = stream.aiter_raw()
            received = await anext(chunks)
            waiting: list[httpx.Response] = []

            async def wait_for_b() -> None:  # b must wait: a is busy in the same swap group
                waiting.append(await client.post("/v1/chat/completions", json={"model": "b"}))

            nursery.start_soon(wait_for_b)
            supervisor = swapd.services.supervisor
            while not any(s.waiting for s in supervisor.statistics()):  # noqa: ASYNC110
                await trio.sleep(0.01)
            swapd.stop()
            async for chunk in chunks:
                received += chunk
    assert received.rstrip().endswith(b"data: [DONE]")  # the stream in flight finished
    [refused] = waiting
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["message"] == "swapd is shutting down"


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["connection-close", "http-1.0", "error-reply"],
)
async def test_the_connection_closes_when_the_client_asks(request_head: bytes) -> None:
    with trio.fail_after(30):
        async with open_swapd(config()) as swapd:
            port = int(swapd.url.rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(request_head)
                data = b""
                with trio.fail_after(5):  # swapd closes at once; it used to wait for the client
                    while chunk := await stream.receive_some():
                        data += chunk
    assert data.startswith((b"HTTP/1.1 200", b"HTTP/1.1 400"))
