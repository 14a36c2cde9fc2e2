"""Issue #16's findings, each replayed over real HTTP against a real ``swapd`` process.

Every test starts the ``swapd`` CLI in its own process (``run_swapd``), so memory is read
from that process's ``/proc/<pid>/status`` alone, and the attack comes from outside as an
attacker's would. Where a finding blocked the event loop, ``/health`` is asked every
0.2 s while the attack runs and its slowest answer is bounded (generously: the machine
may be busy; the blocks measured before the fixes were 1-8 s, and forever for a stalled
reader). Memory bounds use the peak (``VmHWM``), so a short spike counts too.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio
from reliability_support import chat, health_latency, model_yaml, peak_rss_mb, raw_request

from swapd.testing import upstream_cmd
from swapd.testing.process import SwapdProcess, run_swapd
from swapd.testing.server import free_port_base

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

KEY = "sk-security-http-key-0123456789"
HEALTH_BOUND = 3.0  # seconds: /health while an attack runs (blocks were 1-8 s)


@contextlib.contextmanager
def swapd_with(tmp_path: Path, text: str, **kwargs: object) -> Iterator[SwapdProcess]:
    path = tmp_path / "config.yaml"
    path.write_text(f"startPort: {free_port_base()}\n" + text, encoding="utf-8")
    with run_swapd(path, **kwargs) as swapd:  # type: ignore[arg-type]
        yield swapd


@contextlib.asynccontextmanager
async def client_for(
    swapd: SwapdProcess, key: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=swapd.url, timeout=60, headers=headers) as client:
        yield client


def request_bytes(
    method: str, path: str, *, host: str, body: bytes = b"", extra: str = ""
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    return head.encode("latin-1") + b"\r\n" + body


# --- 3: a multipart form of many tiny parts ------------------------------------------------


async def test_a_form_of_many_tiny_parts_is_refused_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    boundary = "xyzzy"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model{i}"\r\n\r\nx\r\n'.encode()
        for i in range(190_000)
    ]
    tail = f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nm1\r\n'
    body = b"".join(parts) + tail.encode() + f"--{boundary}--\r\n".encode()
    assert len(body) > 12_000_000
    with swapd_with(tmp_path, "models:\n" + model_yaml("m1")) as swapd:
        async with client_for(swapd) as client:
            async with health_latency(client) as slowest:
                reply = await client.post(
                    "/v1/audio/transcriptions",
                    content=body,
                    headers={"content-type": f"multipart/form-data; boundary={boundary}"},
                )
            assert slowest() < HEALTH_BOUND, f"/health took {slowest():.1f} s during the upload"
            assert reply.status_code == 400
            assert "more than 1000 parts" in reply.json()["error"]["message"]


# --- 4: DNS rebinding --------------------------------------------------------------------


async def test_a_loopback_listener_refuses_foreign_host_names(tmp_path: Path) -> None:
    config = "allowedHosts: [swapd.example]\nmodels:\n" + model_yaml("m1")
    with swapd_with(tmp_path, config) as swapd:
        port = swapd.port
        for host in ("attacker.example", "attacker.example:80", "localhost.attacker.example"):
            for path in ("/api/config", "/v1/models", "/health", "/logs"):
                reply = await raw_request("127.0.0.1", port, request_bytes("GET", path, host=host))
                assert reply.status == 403, (host, path, reply)
                error = json.loads(reply.body)["error"]
                assert "allowedHosts" in error["message"]
                assert error["code"] == "host_not_allowed"
        body = json.dumps(chat("m1")).encode()
        reply = await raw_request(
            "127.0.0.1",
            port,
            request_bytes("POST", "/v1/chat/completions", host="evil.example", body=body),
        )
        assert reply.status == 403  # the fast path is behind the check too
        upgrade = (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
        reply = await raw_request(
            "127.0.0.1",
            port,
            request_bytes("GET", "/api/events/ws", host="evil.example", extra=upgrade),
        )
        assert reply.status == 403
        for host in (
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "app.localhost",
            "SWAPD.example",
            socket.gethostname(),
        ):
            reply = await raw_request(
                "127.0.0.1", port, request_bytes("GET", "/v1/models", host=host)
            )
            assert reply.status == 200, (host, reply)


# --- 7 and 8: huge model names and bodies that are costly to parse ------------------------


async def test_huge_model_names_cost_neither_memory_nor_the_loop(tmp_path: Path) -> None:
    with swapd_with(tmp_path, "models:\n" + model_yaml("m1")) as swapd:
        async with client_for(swapd) as client:
            before = peak_rss_mb(swapd.pid)
            async with health_latency(client) as slowest:
                for size in (7 * 1024 * 1024, 900 * 1024):
                    body = json.dumps({"model": "m" * size, "messages": []}).encode()
                    reply = await client.post("/v1/chat/completions", content=body)
                    assert reply.status_code in (400, 404)
                    message = reply.json()["error"]["message"]
                    assert len(message) < 1000
                    assert "did you mean" not in message
            grown = peak_rss_mb(swapd.pid) - before
            assert grown < 120, f"swapd's peak memory grew by {grown:.0f} MB (was +270 MB)"
            assert slowest() < HEALTH_BOUND, f"/health took {slowest():.1f} s"


async def test_a_body_of_many_tiny_arrays_is_scanned_within_bounds(tmp_path: Path) -> None:
    with swapd_with(tmp_path, "models:\n" + model_yaml("m1")) as swapd:
        async with client_for(swapd) as client:
            before = peak_rss_mb(swapd.pid)
            filler = b"[]," * (8 * 1024 * 1024 // 3)
            async with health_latency(client) as slowest:
                unknown = b'{"model":"nope","messages":[' + filler + b"[]]}"
                reply = await client.post("/v1/chat/completions", content=unknown)
                assert reply.status_code == 404
                assert "nope" in reply.json()["error"]["message"]
                grown = peak_rss_mb(swapd.pid) - before
                assert grown < 120, f"swapd's peak memory grew by {grown:.0f} MB (was +209 MB)"
                assert slowest() < HEALTH_BOUND, f"/health took {slowest():.1f} s"
                broken = b'{"messages":[' + filler + b"[]]"
                reply = await client.post("/v1/chat/completions", content=broken)
                assert reply.status_code == 400
                assert "not valid JSON" in reply.json()["error"]["message"]
            assert slowest() < HEALTH_BOUND, f"/health took {slowest():.1f} s"


async def test_invalid_json_is_named_with_the_parsers_position(tmp_path: Path) -> None:
    """Issue #24: not "missing model" but what is wrong and where; JSON ends with a newline."""
    with swapd_with(tmp_path, "models:\n" + model_yaml("m1")) as swapd:
        async with client_for(swapd) as client:
            for path in ("/v1/chat/completions", "/v1/messages"):
                reply = await client.post(path, content=b'{"model": "m1",, "x": 1}')
                assert reply.status_code == 400
                assert reply.content.endswith(b"}\n")
                body = reply.json()
                error = body["error"]["message"]
                assert error.startswith("the body is not valid JSON"), error
                assert "line 1 column 16 (char 15)" in error
                empty = await client.post(path, content=b"  \n")
                assert empty.status_code == 400
                assert "the body is empty: expected a JSON object" in empty.text
            listing = await client.get("/v1/models", headers={"origin": "http://a.example"})
            assert listing.content.endswith(b"}\n")
            assert listing.headers["vary"] == "Origin"  # the echoed Origin varies the answer


# --- 9: a client that never reads its stream ----------------------------------------------


async def test_a_client_that_stops_reading_does_not_pin_its_model(tmp_path: Path) -> None:
    config = (
        "sendTimeout: 2\nmaxSwapWait: 1\nmodels:\n" + model_yaml("m1") + model_yaml("m2")
    )  # one group: m2 needs m1 swapped out
    with swapd_with(tmp_path, config) as swapd:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", swapd.port))
        body = json.dumps(chat("m1", stream=True, x_chunks=100_000)).encode()
        stalled.sendall(request_bytes("POST", "/v1/chat/completions", host="localhost", body=body))
        try:
            async with client_for(swapd) as client:
                await trio.sleep(1)  # m1 streams into a client that reads nothing
                with trio.fail_after(40):  # before the fix: no answer at all
                    reply = await client.post("/v1/chat/completions", json=chat("m2"))
                assert reply.status_code == 200
                assert "hi from m2" in reply.text
        finally:
            stalled.close()
    assert b"read nothing for 2 s" in swapd.output


# --- 11, 12, 13: secrets in /running, /api/config and the models' environment --------------


async def test_secrets_stay_out_of_running_and_the_models_environment(tmp_path: Path) -> None:
    env = {"SWAPD_HTTP_KEY": KEY, "SWAPD_UPSTREAM_TOKEN": "tok-upstream-secret-42"}
    cmd = upstream_cmd("--model", "${env.SWAPD_UPSTREAM_TOKEN}", "--respond", KEY)
    config = (
        'apiKeys: ["${env.SWAPD_HTTP_KEY}"]\nmodels:\n'
        + model_yaml("m1", cmd=cmd)
        + model_yaml("m2", extra='env: ["GIVEN_KEY=${env.SWAPD_HTTP_KEY}"]')
        + "groups:\n  both:\n    swap: false\n    members: [m1, m2]\n"
    )
    with swapd_with(tmp_path, config, env=env) as swapd:
        async with client_for(swapd, KEY) as client:
            for model in ("m1", "m2"):
                assert (await client.post(f"/api/models/load/{model}")).status_code == 200
            running = (await client.get("/running")).json()["running"]
            text = json.dumps(running)
            assert KEY not in text
            assert "tok-upstream-secret-42" not in text
            assert "REDACTED" in next(r["cmd"] for r in running if r["model"] == "m1")
            pids = {r["model"]: r["pid"] for r in running}
            environ = {model: _environ(pid) for model, pid in pids.items()}
            assert "SWAPD_HTTP_KEY" not in environ["m1"]
            assert "SWAPD_HTTP_KEY" not in environ["m2"]
            assert environ["m2"]["GIVEN_KEY"] == KEY  # the documented opt-in
            assert environ["m1"]["SWAPD_UPSTREAM_TOKEN"] == "tok-upstream-secret-42"


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        entries = f.read().split(b"\0")
    return dict(e.decode().partition("=")[::2] for e in entries if b"=" in e)


async def test_the_shown_config_hides_keys_written_with_quoting_and_escapes(
    tmp_path: Path,
) -> None:
    config = (
        "apiKeys:\n"
        "  - 'sk-it''s-a-quoted-key'\n"
        '  - "sk-\\x41-escaped-key-1234"\n'
        "  - sk-plain-key-5678 # plain\n"
        "peers:\n"
        "  remote:\n"
        "    proxy: http://127.0.0.1:9\n"
        '    apiKey: "\\u0073k-peer-escaped-key"\n'
        "    models: [r1]\n"
        "models:\n" + model_yaml("m1")
    )
    with swapd_with(tmp_path, config) as swapd:
        async with client_for(swapd, "sk-it's-a-quoted-key") as client:
            reply = await client.get("/api/config")
            assert reply.status_code == 200
            yaml = reply.json()["yaml"]
            for secret in (
                "it''s-a-quoted",
                "sk-it's",
                "\\x41-escaped",
                "sk-A-escaped",
                "sk-plain-key",
                "peer-escaped",
            ):
                assert secret not in yaml, secret
            assert yaml.count("REDACTED") == 4
            assert "# plain" in yaml  # the rest of the text is kept


# --- 14: a keyless POST with a pipelined request behind it ---------------------------------


async def test_a_keyless_post_with_a_pipelined_request_gets_both_answers(tmp_path: Path) -> None:
    with swapd_with(tmp_path, f"apiKeys: [{KEY}]\nmodels:\n" + model_yaml("m1")) as swapd:
        pipelined = request_bytes(
            "POST", "/v1/chat/completions", host="localhost", body=b"{}"
        ) + request_bytes("GET", "/health", host="localhost", extra="Connection: close\r\n")
        for _ in range(20):
            stream = await trio.open_tcp_stream("127.0.0.1", swapd.port)
            async with stream:
                await stream.send_all(pipelined)
                data = b""
                with trio.fail_after(10):
                    while chunk := await stream.receive_some(65536):
                        data += chunk
            assert data.startswith(b"HTTP/1.1 401"), data[:200]
            assert data.count(b"HTTP/1.1 ") == 2 and data.endswith(b"\r\n\r\nOK"), data
    assert b"BusyResourceError" not in swapd.output
    assert b"Traceback" not in swapd.output


# --- 15, 16: input that used to end in a 500 ---------------------------------------------


async def test_odd_characters_get_clear_errors_not_a_500(tmp_path: Path) -> None:
    with swapd_with(tmp_path, "models:\n" + model_yaml("m1")) as swapd:
        async with client_for(swapd) as client:
            for path in ("/v1/chat/completions", "/v1/messages"):
                reply = await client.post(path, content=b'{"model": "x\\ud800", "messages": []}')
                assert reply.status_code == 404
                assert "x\\ud800" in reply.text  # escaped, as it came
            for capture in ("²", "①", "٣"):
                reply = await client.get(f"/api/captures/{capture}")
                assert reply.status_code == 400
                assert reply.json()["error"]["message"] == "invalid capture ID"
    assert b"Traceback" not in swapd.output


# --- 17: what reaches an upstream -----------------------------------------------------------


async def test_the_upstream_sees_only_the_clients_headers(tmp_path: Path) -> None:
    with swapd_with(tmp_path, "models:\n" + model_yaml("m1")) as swapd:
        async with client_for(swapd) as client:
            reply = await client.get("/upstream/m1/echo", headers={"x-custom": "kept"})
            assert reply.status_code == 200
            names = {name.lower(): value for name, value in reply.json()["headers"]}
            assert "remote-addr" not in names
            assert names["x-custom"] == "kept"
            assert names["x-forwarded-for"] == "127.0.0.1"


# --- 18: an upstream framing its answer twice -------------------------------------------------


async def test_an_answer_with_length_and_chunked_framing_reaches_the_client_whole(
    tmp_path: Path,
) -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 50\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b'7\r\n{"a":1}\r\n0\r\n\r\n'
    )

    async def hostile() -> None:
        while True:
            conn, _ = await listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += await conn.recv(65536)
                await conn.send(answer)
                await trio.sleep(0.2)

    config = (
        f"peers:\n  hostile:\n    proxy: http://127.0.0.1:{port}\n    models: [h1]\nmodels: {{}}\n"
    )
    with swapd_with(tmp_path, config) as swapd:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hostile)
            body = json.dumps(chat("h1")).encode()
            reply = await raw_request(
                "127.0.0.1",
                swapd.port,
                request_bytes("POST", "/v1/chat/completions", host="localhost", body=body),
            )
            assert reply.status == 200, reply
            assert reply.header("content-length") in (None, "7")
            assert reply.body == b'{"a":1}'
            nursery.cancel_scope.cancel()
    listener.close()
