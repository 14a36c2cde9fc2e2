"""Security checks over real HTTP: authentication on every route, constant-time key
comparison, no credential in captures or logs, ``/upstream/`` pinned to the model's
server, no header injection through model names, bounded bodies and headers.

Unit-level checks live elsewhere: credential parsing and the comparison itself
(tests/test_web_auth.py), capture redaction (tests/test_observe_captures.py), a large
streamed upload not growing swapd (tests/test_uploads.py).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import posixpath
import re
from collections.abc import AsyncIterator
from functools import partial
from typing import Any
from urllib.parse import quote

import h11
import httpx
import pytest
import trio
from reliability_support import chat, model_yaml, raw_request

from swapd.config import ConfigError, parse_config
from swapd.observe.logs import MUX, PROXY, UPSTREAM
from swapd.testing import open_swapd
from swapd.testing.server import free_port_base
from swapd.web.app import PUBLIC_PATHS, Services, create_app
from swapd.web.server import serve as serve_http
from swapd.web.server import tcp_bind

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

KEY = "sk-reliability-key-0123456789"
OTHER_KEY = "sk-second-key-9876543210"
WRONG_KEY = "sk-wrong-key-5555555555555"
PEER_KEY = "sk-peer-key-4242424242424242"

# Values for a rule's parameters: each route reaches its handler with these (past the
# key check: an unknown model's 404 proves that as well as a 200, without a model start).
PARAMS = {
    "model": "ghost",
    "rest": "m/pid",
    "capture_id": "0",
    "path": "models",
    "name": "proxy",
    "request_id": "1",
    "digest": "sha256-0",
}


def concrete_routes(services: Services) -> list[tuple[str, str, bool]]:
    """(method, path, is_websocket) for every route the app serves."""
    app = create_app(services)
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: PARAMS[m.group(1)], rule.rule)
        if rule.rule.startswith("/sdapi/"):
            path = "/sdapi/v1/txt2img"
        if getattr(rule, "websocket", False):
            routes.append(("GET", path, True))
            continue
        routes.extend(
            (method, path, False) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
        )
    return routes


def public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/ui")


async def status_of(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> int:
    """The status only (streams such as /api/events never end)."""
    content = b"{}" if method in ("POST", "PUT", "PATCH") else None
    async with client.stream(method, path, content=content, **kwargs) as reply:
        return reply.status_code


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"someone:{password}".encode()).decode()


async def test_every_route_but_the_public_ones_needs_a_key() -> None:
    config = f"apiKeys: [{KEY}, {OTHER_KEY}]\nmodels:\n" + model_yaml("m")
    with trio.fail_after(60):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            routes = concrete_routes(swapd.services)
            host, port = swapd.url.removeprefix("http://").rsplit(":", 1)
            seen: dict[tuple[str, str], list[int]] = {}
            for method, path, websocket in routes:
                if websocket:
                    upgrade = (
                        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                    )
                    refused = await raw_request(host, int(port), upgrade.encode())
                    seen["WEBSOCKET", path] = [refused.status or 0]
                    continue
                attempts: list[dict[str, str]] = [
                    {},  # no key
                    {"authorization": f"Bearer {WRONG_KEY}"},
                    {"x-api-key": WRONG_KEY},
                    {"authorization": basic(WRONG_KEY)},
                    {"authorization": f"Bearer {KEY[:-1]}"},  # a prefix of a key
                    {"authorization": f"Bearer {KEY}x"},  # a key plus one character
                    {"x-api-key": OTHER_KEY},  # the right key, last
                ]
                seen[method, path] = [
                    await status_of(client, method, path, headers=headers) for headers in attempts
                ]
    assert len(seen) >= 40  # every route, each with each of its methods
    for (method, path), statuses in seen.items():
        if method == "WEBSOCKET":  # /api/events/ws, /upstream/<model>/… upgrades
            assert statuses == [401], (path, statuses)
        elif public(path):
            assert 401 not in statuses, (method, path, statuses)
        else:
            # no key and wrong keys: 401; the right key: through to the route
            assert statuses[:-1] == [401] * 6, (method, path, statuses)
            assert statuses[-1] != 401, (method, path, statuses)


async def test_every_presented_credential_is_compared_with_every_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sharp edge 18: the number of comparisons does not depend on which key, if any,
    matched, nor on where it was presented; each is ``hmac.compare_digest``."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    config = f"apiKeys: [{KEY}, {OTHER_KEY}, sk-3]\nmodels: {{}}\n"
    attempts = [
        {"authorization": f"Bearer {KEY}", "x-api-key": "decoy"},
        {"authorization": "Bearer decoy", "x-api-key": "sk-3"},
        {"authorization": f"Bearer {WRONG_KEY[: len(KEY)]}", "x-api-key": "decoy"},
        {"authorization": basic(OTHER_KEY), "x-api-key": "x"},
        {"authorization": "Bearer a", "x-api-key": "b"},
    ]
    counts, statuses = [], []
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            monkeypatch.setattr(hmac, "compare_digest", spy)
            for headers in attempts:
                calls.clear()
                statuses.append((await client.get("/running", headers=headers)).status_code)
                counts.append(len(calls))
    assert statuses == [200, 200, 401, 200, 401]
    assert counts == [2 * 3] * len(attempts)


async def test_keys_never_reach_captures_logs_events_or_the_upstream() -> None:
    base = free_port_base()
    config = (
        f"startPort: {base}\napiKeys: [{KEY}, {OTHER_KEY}]\ncaptureBuffer: 2\n"
        "logLevel: debug\nlogToStdout: none\nmodels:\n"
        + model_yaml("m")
        + f"peers:\n  box:\n    proxy: http://127.0.0.1:{base}\n    apiKey: {PEER_KEY}\n"
        "    models: [far-model]\n"
    )
    secrets = [KEY, OTHER_KEY, WRONG_KEY, PEER_KEY]
    secrets += [basic(s).removeprefix("Basic ") for s in (KEY, WRONG_KEY)]
    with trio.fail_after(60):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            bearer = {"authorization": f"Bearer {KEY}"}
            seen_upstream = []
            replies = [
                await client.post("/v1/chat/completions", json=chat("m"), headers=bearer),
                await client.post(
                    "/v1/chat/completions",
                    json=chat("m", stream=True),
                    headers={"x-api-key": OTHER_KEY},
                ),
                await client.post(
                    "/v1/messages",
                    json={"model": "m", "max_tokens": 5, "messages": []},
                    headers={"authorization": basic(KEY)},
                ),
                await client.post(
                    "/v1/audio/transcriptions",
                    data={"model": "m"},
                    files={"file": ("a.mp3", b"ID3 audio", "audio/mpeg")},
                    headers=bearer,
                ),
                # a peer gets its own key, never the client's
                await client.post("/v1/chat/completions", json=chat("far-model"), headers=bearer),
                await client.post(
                    "/v1/chat/completions",
                    json=chat("m"),
                    headers={"authorization": f"Bearer {WRONG_KEY}"},
                ),
            ]
            for headers in (bearer, {"x-api-key": KEY}, {"authorization": basic(KEY)}):
                echo = await client.post("/upstream/m/echo/x", content=b"{}", headers=headers)
                seen_upstream.append(echo.text)
            texts = [r.text for r in replies]
            records = (await client.get("/api/metrics", headers=bearer)).json()
            texts.append(json.dumps(records))
            for record in records:
                if record["has_capture"]:
                    capture = await client.get(f"/api/captures/{record['id']}", headers=bearer)
                    assert capture.status_code == 200
                    texts.append(capture.text)
                    texts.extend(
                        base64.b64decode(capture.json()[part] or "").decode("latin-1")
                        for part in ("req_body", "resp_body")
                    )
            texts.extend(
                [
                    (await client.get(path, headers=bearer)).text
                    for path in ("/logs", "/metrics", "/running", "/v1/models")
                ]
            )
            async with client.stream("GET", "/api/events", headers=bearer) as events:
                texts.append((await anext(events.aiter_raw())).decode("utf-8", "replace"))
            logs = swapd.services.telemetry.logs
            texts.extend(
                logs.history(n).decode("utf-8", "replace") for n in (MUX, PROXY, UPSTREAM, "m")
            )
    assert [r.status_code for r in replies] == [200, 200, 200, 200, 200, 401]
    assert sum(1 for r in records if r["has_capture"]) >= 4
    everything = "\n".join(texts + seen_upstream)
    for secret in secrets:
        assert secret not in everything, secret
    for text in seen_upstream:
        names = {name.lower() for name, _ in json.loads(text)["headers"]}
        assert not names & {"authorization", "x-api-key"}


# --- /upstream/ stays on the model's server --------------------------------------------


async def test_upstream_paths_never_leave_the_models_server() -> None:
    """Whatever the path, query or request-target form, ``/upstream/<model>/`` talks to
    that model's server only: a listener standing in for another host sees nothing."""
    victim_hits = 0

    async def victim(stream: trio.SocketStream) -> None:
        nonlocal victim_hits
        victim_hits += 1
        await stream.aclose()

    config = "models:\n" + model_yaml("m")
    with trio.fail_after(60):
        async with (
            trio.open_nursery() as nursery,
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            [listener] = await nursery.start(partial(trio.serve_tcp, victim, 0, host="127.0.0.1"))
            far = f"127.0.0.1:{listener.socket.getsockname()[1]}"
            host, port = swapd.url.removeprefix("http://").rsplit(":", 1)
            await client.post("/api/models/load/m")
            targets = [
                f"/upstream/m//{far}/pid",
                f"/upstream/m/@{far}/pid",
                f"/upstream/m/http://{far}/pid",
                f"/upstream/m/http:%2f%2f{far}%2fpid",
                f"/upstream/m/pid?next=http://{far}/",
                "/upstream/m/%2e%2e/%2e%2e/pid",
                "/upstream/m/../../pid",
                f"http://{far}/upstream/m/pid",  # absolute-form request target
            ]
            replies = []
            for target in targets:
                request = f"GET {target} HTTP/1.1\r\nHost: {far}\r\nConnection: close\r\n\r\n"
                replies.append(await raw_request(host, int(port), request.encode()))
            stats = (await client.get("/upstream/m/stats")).json()
            nursery.cancel_scope.cancel()
    assert victim_hits == 0
    for target, reply in zip(targets, replies, strict=True):
        assert reply.status is not None and reply.status != 500, (target, reply)
        assert b"Traceback" not in reply.body
    # every one went to the model's own server, or was refused (dot segments: 400)
    refused = [t for t, r in zip(targets, replies, strict=True) if r.status == 400]
    assert all(".." in t or "%2e%2e" in t for t in refused), refused
    assert stats["requests"] >= len(targets) - len(refused)


async def test_dot_segments_cannot_climb_out_of_the_proxy_path() -> None:
    # The demo upstream answers everything under /echo with what it received, so the
    # path the server got is visible; a real server would resolve the dot segments.
    config = "models:\n" + model_yaml("m", extra="proxy: http://127.0.0.1:${PORT}/echo")
    config = config.replace("    proxy: http://127.0.0.1:${PORT}\n", "", 1)
    targets = [
        "/upstream/m/../pid",
        "/upstream/m/%2e%2e/pid",
        "/upstream/m/%2E%2E/pid",
        "/upstream/m/a/../../pid",
        "/upstream/m/.%2e/pid",
    ]
    with trio.fail_after(60):
        async with open_swapd(config) as swapd:
            host, port = swapd.url.removeprefix("http://").rsplit(":", 1)
            replies = []
            for target in targets:
                request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                replies.append(await raw_request(host, int(port), request.encode()))
    for target, reply in zip(targets, replies, strict=True):
        assert reply.status is not None
        if reply.status == 200:  # forwarded: it must have stayed under /echo
            received = json.loads(reply.body)["path"]
            assert posixpath.normpath(received).startswith("/echo"), (target, received)
        else:  # refused by swapd
            assert reply.status in (400, 404), (target, reply)


# --- header injection through model names and aliases ----------------------------------

HOSTILE = """
models:
  m:
    cmd: {cmd}
    proxy: http://127.0.0.1:${{PORT}}
    aliases: ["a\\r\\nX-Evil: 1", "b\\rX-Evil: 2", "c\\nX-Evil: 3", "d X-Evil: 4", "é/ü"]
    useModelName: "u\\r\\nX-Evil: 5"
    sendLoadingState: true
"""
HOSTILE_NAMES = ["a\r\nX-Evil: 1", "b\rX-Evil: 2", "c\nX-Evil: 3", "d X-Evil: 4", "é/ü"]
# What the config accepts (control characters in names are refused at load): clients
# still send every hostile name above, which then names no model.
SERVED_HOSTILE = """
models:
  m:
    cmd: {cmd}
    proxy: http://127.0.0.1:${{PORT}}
    aliases: ["d X-Evil: 4", "é/ü"]
    useModelName: "u X-Evil: 5"
    sendLoadingState: true
"""


async def hostile_exchanges(swapd: Any) -> list[tuple[str, Any]]:
    """Every place a client can put a model name: JSON body, query, multipart field,
    /upstream/ path, loading-state stream, unknown names; sent raw."""
    host, port = swapd.url.removeprefix("http://").rsplit(":", 1)

    async def send(label: str, request: bytes) -> tuple[str, Any]:
        return label, await raw_request(host, int(port), request)

    def post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body

    exchanges = []
    for name in [*HOSTILE_NAMES, "ghost\r\nX-Evil: 6"]:
        body = json.dumps(chat(name)).encode()
        exchanges.append(await send(f"json {name!r}", post("/v1/chat/completions", body)))
        stream = json.dumps(chat(name, stream=True)).encode()
        exchanges.append(await send(f"stream {name!r}", post("/v1/chat/completions", stream)))
        encoded = quote(name, safe="")
        for target in (
            f"/v1/audio/voices?model={encoded}",
            f"/props?model={encoded}",
            f"/upstream/{encoded}",
            f"/upstream/{encoded}/pid",
            f"/api/models/load/{encoded}",
        ):
            method = "POST" if target.startswith("/api/") else "GET"
            request = f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            exchanges.append(await send(f"{method} {target}", request.encode()))
        form = (
            b'--XX\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            + name.encode()
            + b'\r\n--XX\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            + b"data\r\n--XX--\r\n"
        )
        multipart = post("/v1/audio/transcriptions", form, "multipart/form-data; boundary=XX")
        exchanges.append(await send(f"multipart {name!r}", multipart))
    return exchanges


async def test_model_names_and_aliases_cannot_inject_headers() -> None:
    from swapd.testing import upstream_cmd

    config = SERVED_HOSTILE.format(cmd=upstream_cmd("--model", "m"))
    with trio.fail_after(60):
        async with open_swapd(config) as swapd:
            exchanges = await hostile_exchanges(swapd)
    answered = 0
    for label, reply in exchanges:
        names = [name.decode("latin-1").lower() for name, _ in reply.headers]
        assert "x-evil" not in names, label
        for _, value in reply.headers:
            assert b"\r" not in value and b"\n" not in value, label
        answered += reply.status is not None
    assert answered == len(exchanges)  # every request got an answer (h11 parsed it)


async def test_names_with_control_characters_are_refused_or_served_never_a_500() -> None:
    from swapd.testing import upstream_cmd

    config = HOSTILE.format(cmd=upstream_cmd("--model", "m"))
    try:
        parse_config(config)
    except ConfigError as exc:  # refusing such names in the config is a fine fix too
        refused = str(exc)
    else:
        refused = ""
    if refused:
        assert "contains a control character" in refused
        return
    with trio.fail_after(60):
        async with open_swapd(config) as swapd:
            exchanges = await hostile_exchanges(swapd)
            log = swapd.services.telemetry.logs.history(PROXY).decode("utf-8", "replace")
    failed = [label for label, reply in exchanges if reply.status == 500]
    assert failed == []
    assert "unexpected error" not in log


# --- oversized bodies and headers -------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def upload(host: str, port: int, head: bytes, chunks: int) -> int | None:
    """Send a chunked body of ``chunks`` blocks of 64 KiB while reading the answer, as curl does;
    stop sending once the answer is in. The status, or None if the connection closed."""
    block = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("host", "x")]))
    status: int | None = None
    stream = await trio.open_tcp_stream(host, port)
    async with stream, trio.open_nursery() as nursery:

        async def send() -> None:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(head)
                for _ in range(chunks):
                    await stream.send_all(block)
                await stream.send_all(b"0\r\n\r\n")

        nursery.start_soon(send)
        while status is None:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                data = b""
            conn.receive_data(data)
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status = event.status_code
            elif event is not h11.NEED_DATA:
                break
        nursery.cancel_scope.cancel()
    return status


async def test_oversized_bodies_and_headers_are_refused_with_bounded_memory() -> None:
    """A declared body over the limit is refused before it is sent; a chunked one once the
    limit is passed; a request head over hypercorn's bound gets 431. Memory does not
    follow what is sent. (Streamed routes, multipart and /upstream/, forward bodies of
    any size as they arrive: tests/test_uploads.py, and flow-controlled while they wait: the test below.)"""
    config = "models:\n" + model_yaml("m")
    with trio.fail_after(60):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            trio.open_nursery() as nursery,
        ):
            host, port = swapd.url.removeprefix("http://").rsplit(":", 1)
            await client.post("/api/models/load/m")
            # 1. the production limit (512 MiB), declared: refused without reading
            declared = await raw_request(
                host,
                int(port),
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 600000000000\r\n\r\n{",
            )
            # 2. the same app with a 1 MiB limit, fed 16 MiB chunked bodies
            s = swapd.services
            small = Services(
                config=s.config,
                supervisor=s.supervisor,
                forwarder=s.forwarder,
                bus=s.bus,
                telemetry=s.telemetry,
                max_body_bytes=1024 * 1024,
            )
            shutdown = trio.Event()
            [url] = await nursery.start(
                serve_http, create_app(small), [tcp_bind("127.0.0.1", 0)], shutdown
            )
            small_port = int(url.rsplit(":", 1)[1])
            rss_before = rss_kib()
            head = (
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            body_statuses = [await upload(host, small_port, head, 256) for _ in range(4)]
            # 3. request heads
            head_statuses = []
            for size in (32 * 1024, 256 * 1024, 1024 * 1024):
                big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
                head_statuses.append((await raw_request(host, int(port), big)).status)
            many = b"".join(b"X-H-%d: %s\r\n" % (i, b"b" * 200) for i in range(1500))
            many_headers = await raw_request(
                host, int(port), b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
            )
            endless = b"GET /health HTTP/1.1\r\nX: " + b"a" * 1024 * 1024  # never ends
            endless_statuses = [
                (await raw_request(host, int(port), endless)).status for _ in range(8)
            ]
            rss_growth_mib = (rss_kib() - rss_before) / 1024
            health = await client.get("/health")
            shutdown.set()
    assert declared.status == 413
    assert json.loads(declared.body)["error"]["code"] == "payload_too_large"
    assert body_statuses == [413] * 4
    assert head_statuses == [200, 431, 431]
    assert many_headers.status == 431
    assert endless_statuses == [431] * 8
    assert health.status_code == 200
    # 64 MiB of bodies and 10 MiB of headers went in; swapd kept at most the limits
    assert rss_growth_mib < 32, rss_growth_mib


async def test_an_upload_waiting_for_its_model_is_not_held_in_memory() -> None:
    """README: uploads are "streamed, never held in memory". While the model loads, the
    client keeps sending; swapd must not buffer what it cannot forward yet."""
    config = "models:\n" + model_yaml("m", "--start-delay", "2")
    size_mib = 64

    async def form() -> AsyncIterator[bytes]:
        yield b'--XX\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n'
        yield b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        block = b"x" * (1024 * 1024)
        for _ in range(size_mib):
            yield block
        yield b"\r\n--XX--\r\n"

    peak = [0]

    async def sample(before: int) -> None:
        while True:
            peak[0] = max(peak[0], rss_kib() - before)
            await trio.sleep(0.02)

    with trio.fail_after(60):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(sample, rss_kib())
            reply = await client.post(
                "/v1/audio/transcriptions",
                content=form(),
                headers={"content-type": "multipart/form-data; boundary=XX"},
            )
            nursery.cancel_scope.cancel()
    assert reply.status_code == 200
    assert reply.json()["text"] == f"The length of the file is {size_mib * 1024 * 1024} bytes"
    # measured: ~6 MiB (the 1 MiB high-water mark, hypercorn's queue, allocator slack)
    assert peak[0] / 1024 < 16, f"swapd grew by {peak[0] / 1024:.0f} MiB"


async def test_a_body_read_whole_is_not_held_back_by_flow_control() -> None:
    """The flow control above must not starve a route that reads the whole body first: a
    4 MiB JSON body for a model with ``sendLoadingState`` (served by the Quart route, which
    reads the body whole) goes through while its model loads."""
    config = "models:\n" + model_yaml("m", "--start-delay", "1", extra="sendLoadingState: true")
    prompt = "y" * (4 * 1024 * 1024)
    with trio.fail_after(60):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            reply = await client.post(
                "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": prompt}]},
            )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "hi from m"
