"""Fuzzing with hypothesis: the config loader, every HTTP route, multipart bodies, and
malformed HTTP itself.

- Config: any text, config-shaped documents and mutated real configs load into a
  ``Config`` or raise ``ConfigError`` with located problems; never anything else.
- HTTP: a real swapd (in this process, with a demo upstream as its model) gets random
  methods, paths, queries, headers and bodies on every route. swapd never answers with
  its own 500 ("internal error in swapd"), no response carries a traceback, its log
  records no unexpected error, and it ends idle and healthy.

The HTTP examples run in a worker thread (hypothesis drives a synchronous client) while
swapd serves on the trio loop of the test; each request has a timeout, so a hang fails.
Unit-level fuzzing of the body parsers is in tests/test_web_bodies.py.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_support import model_yaml, raw_request

from swapd.config import Config, ConfigError, parse_config
from swapd.observe.logs import PROXY
from swapd.testing import open_swapd
from swapd.web.app import create_app

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

ROOT = Path(__file__).resolve().parents[2]
ENVIRON = {
    "HOME": "/home/fuzz",
    "EMPTY": "",
    "SWAPD_TEST_KEY": "sk-env",
    "SWAPD_TEST_PEER_KEY": "sk-peer",
}

# --- the config loader ------------------------------------------------------------------


def load_or_explain(text: str) -> Config | ConfigError:
    """The only two outcomes allowed: a Config, or a ConfigError naming each problem."""
    try:
        return parse_config(text, file="<fuzz>", environ=ENVIRON)
    except ConfigError as exc:
        error = exc
    assert error.problems, "a ConfigError without problems"
    for problem in error.problems:
        assert problem.message.strip(), problem
        assert problem.file == "<fuzz>", problem
    assert "Traceback" not in str(error)
    return error


YAMLISH = st.lists(
    st.sampled_from(
        list(string.ascii_letters[:12] + string.digits[:4])
        + list(" \n\t:-[]{},#&*!|>'\"%@`?$=") * 2
        + ["models", "cmd", "proxy", "${PORT}", "groups", "members", "ttl", "${env.HOME}"]
    ),
    max_size=150,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(YAMLISH, st.text(max_size=200)))
def test_any_text_is_a_config_or_a_clear_error(text: str) -> None:
    load_or_explain(text)


SCHEMA = json.loads((ROOT / "config-schema.json").read_text())
DEFS = SCHEMA.get("$defs") or SCHEMA.get("definitions") or {}
TOP_KEYS = sorted(SCHEMA["properties"])
MODEL_KEYS = sorted(DEFS["ModelConfig"]["properties"])
GROUP_KEYS = sorted(DEFS["GroupConfig"]["properties"])
PEER_KEYS = sorted(DEFS["PeerConfig"]["properties"])
WORDS = [
    "",
    "m1",
    "m2",
    "true",
    "false",
    "yes",
    "null",
    "~",
    "0",
    "-1",
    "15",
    "1e3",
    "${PORT}",
    "${PID}",
    "${MODEL_ID}",
    "${env.HOME}",
    "${env.MISSING}",
    "${nope}",
    "${m}",
    "${",
    "python3 -m server --port ${PORT}",
    "http://127.0.0.1:${PORT}",
    "http://[::1]:8080/v1",
    "ftp://x",
    "/health",
    "none",
    "A=1",
    "debug",
    "info",
    "proxy",
    "both",
]
scalars = st.one_of(
    st.sampled_from(WORDS),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=string.printable, max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(WORDS[:8] + MODEL_KEYS[:6]), inner, max_size=3),
    ),
    max_leaves=8,
)
model_ids = st.one_of(st.sampled_from(["m1", "m2", "m3", "a b", "é", "1"]), st.text(max_size=6))


def keyed(keys: list[str], value: Any) -> Any:
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=6)), value, max_size=6)


models = st.dictionaries(model_ids, keyed(MODEL_KEYS, values), max_size=3)
groups = st.dictionaries(
    st.sampled_from(["g1", "g2", "(default)"]),
    keyed(GROUP_KEYS, st.one_of(values, st.lists(model_ids, max_size=3))),
    max_size=3,
)
peers = st.dictionaries(st.sampled_from(["p1", "p2"]), keyed(PEER_KEYS, values), max_size=2)
documents = st.fixed_dictionaries(
    {},
    optional={
        **dict.fromkeys(TOP_KEYS, values),
        "models": models,
        "groups": groups,
        "peers": peers,
        "hooks": st.just({"on_startup": {"preload": ["m1", "zz"]}}),
        "macros": st.dictionaries(
            st.sampled_from(["m", "port", "PORT", "a-b"]), values, max_size=3
        ),
    },
)


def render(value: Any, indent: int = 0, flow: bool = False) -> str:
    """A YAML rendering of ``value``: block style, or flow style (JSON) when ``flow``."""
    pad = " " * indent
    if flow or not isinstance(value, dict | list) or not value:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            name = json.dumps(key, ensure_ascii=False) if not re.fullmatch(r"\w+", key) else key
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{name}:\n{render(item, indent + 2)}")
            else:
                lines.append(f"{pad}{name}: {render(item)}")
        return "\n".join(lines)
    return "\n".join(
        f"{pad}-\n{render(item, indent + 2)}"
        if isinstance(item, dict | list) and item
        else f"{pad}- {render(item)}"
        for item in value
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents, st.booleans())
def test_config_shaped_documents_load_or_explain_every_problem(
    document: dict[str, Any], flow: bool
) -> None:
    load_or_explain(render(document, flow=flow) + "\n")


REAL_CONFIGS = [
    p.read_text()
    for p in [
        *sorted((ROOT / "examples").glob("*.yaml")),
        ROOT / "tests/configs/llama-swap-style.yaml",
    ]
    if p.exists()
]


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(REAL_CONFIGS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["drop", "dup", "indent", "dedent", "insert", "cut", "swap"]))
        if how == "drop":
            del lines[i]
        elif how == "dup":
            lines.insert(i, lines[i])
        elif how == "indent":
            lines[i] = "  " + lines[i]
        elif how == "dedent":
            lines[i] = lines[i][2:]
        elif how == "insert":
            at = draw(st.integers(0, len(lines[i])))
            token = draw(
                st.sampled_from(
                    [":", "- ", "{", "]", "#", "${", "'", '"', "&a", "*a", "!!str ", " ", "\t"]
                )
            )
            lines[i] = lines[i][:at] + token + lines[i][at:]
        elif how == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_mutated_real_configs_load_or_explain_every_problem(text: str) -> None:
    load_or_explain(text)


def test_the_real_configs_themselves_load() -> None:
    assert len(REAL_CONFIGS) >= 4
    for text in REAL_CONFIGS:
        assert isinstance(load_or_explain(text), Config)


# --- every HTTP route -------------------------------------------------------------------

FUZZ_CONFIG = "models:\n" + model_yaml("m", extra="aliases: [al]")
NAMES = ["m", "al", "ghost", "", "M", "m/..", "%", "😀", "m\x00"]
KNOBS = ("x-chunks", "x-delay-ms", "x-first-delay-ms", "x-gzip", "x-deflate")
FORBIDDEN_HEADERS = {"content-length", "transfer-encoding", "host", "connection", "expect", "te"}
FORBIDDEN_HEADERS |= {"upgrade", "trailer", "keep-alive", "proxy-connection"}
STREAMS = ("/api/events", "/logs/stream")


def swapd_routes(swapd: Any) -> list[tuple[str, list[str]]]:
    """Every (rule, methods) of the app but the WebSocket and the unload-everything ones
    (those run once at the end: here they would restart the model all the time)."""
    app = create_app(swapd.services)
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "events-ws", "unload-all", "unload-all-text"):
            continue
        routes.append((rule.rule, sorted(rule.methods - {"HEAD", "OPTIONS"})))
    return routes


param_values = st.one_of(st.sampled_from(NAMES), st.text(max_size=10))
header_names = st.one_of(
    st.sampled_from(
        [
            "content-type",
            "accept",
            "accept-encoding",
            "authorization",
            "x-api-key",
            "origin",
            "x-forwarded-for",
            "user-agent",
            "cookie",
            "range",
            "if-none-match",
            "referer",
        ]
    ),
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
).filter(lambda n: n.lower() not in FORBIDDEN_HEADERS and n.lower() not in KNOBS)
header_values = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=zz",
            "text/plain",
            "gzip",
            "gzip, deflate, br",
            "Bearer x",
            "Basic !!",
            "*/*",
            "",
            "identity;q=0",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "bytes", "object", "chat", "broken"]))
    if kind == "none":
        return None
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    obj = draw(
        st.dictionaries(
            st.text(max_size=8).filter(lambda k: not k.startswith("x_")), json_values, max_size=4
        )
    )
    if kind in ("chat", "broken") or draw(st.booleans()):
        obj["model"] = draw(st.one_of(st.sampled_from(NAMES), json_values))
    if kind in ("chat", "broken"):
        obj["messages"] = [{"role": "user", "content": draw(st.text(max_size=20))}]
        obj["stream"] = draw(st.sampled_from([True, False, "yes", None]))
    text = json.dumps(obj).encode()
    return text[: draw(st.integers(0, len(text)))] if kind == "broken" else text


@st.composite
def http_requests(draw: st.DrawFn, routes: list[tuple[str, list[str]]]) -> dict[str, Any]:
    rule, methods = draw(st.sampled_from(routes))

    def param(match: re.Match[str]) -> str:
        value = draw(param_values)
        if "unload" in rule and value in ("m", "al"):
            value = "ghost"  # unloading the model would restart it on every example
        if match.group(1) == "rest" and rule.startswith("/upstream/"):
            value = draw(st.sampled_from(["m", "al", "ghost"])) + "/" + value
        return quote(value, safe="/") or "x"

    path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", param, rule)
    query = draw(
        st.dictionaries(
            st.one_of(
                st.sampled_from(["model", "stream", "no-history", "api_key"]), st.text(max_size=5)
            ),
            st.one_of(st.sampled_from(NAMES), st.text(max_size=10)),
            max_size=3,
        )
    )
    return {
        "method": draw(
            st.one_of(
                st.sampled_from(methods), st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
            )
        ),
        "url": path + ("?" + urlencode(query) if query else ""),
        "headers": draw(st.dictionaries(header_names, header_values, max_size=4)),
        "content": draw(bodies()),
    }


def check_reply(request: dict[str, Any], status: int, text: str) -> None:
    assert "internal error in swapd" not in text, (request, status, text)
    assert "Traceback" not in text, (request, status, text)
    if status >= 500 and '"src": "swapd"' in text:
        assert status in (502, 503, 504), (request, status, text)


def send(client: httpx.Client, request: dict[str, Any]) -> None:
    if request["url"].startswith(STREAMS):  # endless streams: the head is enough
        with client.stream(**request) as reply:
            check_reply(request, reply.status_code, "")
        return
    reply = client.request(**request)
    check_reply(request, reply.status_code, reply.text)


def fresh_connections(url: str) -> httpx.Client:
    """A client opening a connection per request: a keep-alive connection whose previous
    request was answered before its body arrived hangs (the xfail test in
    test_faults.py); that bug would otherwise surface here at random."""
    return httpx.Client(base_url=url, timeout=15, limits=httpx.Limits(max_keepalive_connections=0))


def load_then(client: httpx.Client, fuzz: Any) -> None:
    """(In the worker thread.) Start the model, then run the examples."""
    client.post("/api/models/load/m").raise_for_status()
    fuzz()


async def assert_swapd_survived(swapd: Any) -> None:
    supervisor = swapd.services.supervisor
    with trio.fail_after(10):
        while any(s.in_flight or s.waiting for s in supervisor.statistics()):  # noqa: ASYNC110
            await trio.sleep(0.02)
    log = swapd.services.telemetry.logs.history(PROXY).decode("utf-8", "replace")
    assert "unexpected error" not in log
    assert "Traceback" not in log
    async with httpx.AsyncClient(base_url=swapd.url) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.post("/api/models/unload")).status_code == 200
        assert (await client.get("/unload")).status_code == 200


async def test_random_requests_on_every_route_never_get_a_500_or_a_traceback() -> None:
    ran: list[object] = []
    with trio.fail_after(120):
        async with open_swapd(FUZZ_CONFIG) as swapd:
            routes = swapd_routes(swapd)
            assert len(routes) >= 30

            @settings(
                max_examples=150,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            )
            @given(http_requests(routes))
            def fuzz(request: dict[str, Any]) -> None:
                ran.append(request)
                send(client, request)

            with fresh_connections(swapd.url) as client:
                await trio.to_thread.run_sync(load_then, client, fuzz)
            await assert_swapd_survived(swapd)
    assert len(ran) >= 120


@st.composite
def multipart_requests(draw: st.DrawFn) -> dict[str, Any]:
    boundary = draw(
        st.text(
            alphabet=string.ascii_letters + string.digits + "-_'()+,./:=?", min_size=1, max_size=30
        )
    )
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(
            st.one_of(
                st.sampled_from(["model", "file", "language", "prompt", "image"]),
                st.text(max_size=6),
            )
        )
        clean = name.replace('"', "")
        head = f'Content-Disposition: form-data; name="{clean}"'
        if draw(st.booleans()):
            filename = draw(st.text(max_size=8))
            filename = filename.replace('"', "").replace("\r", "").replace("\n", "")
            head += f'; filename="{filename}"'
        if draw(st.booleans()):
            head += "\r\nContent-Type: " + draw(
                st.sampled_from(["audio/wav", "text/plain", "", "x"])
            )
        data = draw(
            st.one_of(st.sampled_from([b"m", b"al", b"ghost", b""]), st.binary(max_size=300))
        )
        parts.append(head.encode("utf-8", "surrogateescape") + b"\r\n\r\n" + data)
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    damage = draw(
        st.sampled_from(["none", "none", "cut", "no-end", "lf", "noise", "wrong-boundary"])
    )
    if damage == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    elif damage == "no-end":
        body = body.removesuffix(delimiter + b"--\r\n")
    elif damage == "lf":
        body = body.replace(b"\r\n", b"\n")
    elif damage == "noise":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=20)) + body[at:]
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "application/json",
            ]
        )
    )
    if damage == "wrong-boundary":
        content_type = "multipart/form-data; boundary=other"
    path = draw(st.sampled_from(["/v1/audio/transcriptions", "/v1/images/edits"]))
    if draw(st.integers(0, 4)) == 0:
        path += "?model=" + quote(draw(st.sampled_from(NAMES)))
    return {
        "method": "POST",
        "url": path,
        "headers": {"content-type": content_type},
        "content": body,
    }


async def test_random_multipart_bodies_never_get_a_500_or_a_traceback() -> None:
    ran: list[object] = []
    with trio.fail_after(120):
        async with open_swapd(FUZZ_CONFIG) as swapd:

            @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(multipart_requests())
            def fuzz(request: dict[str, Any]) -> None:
                ran.append(request)
                send(client, request)

            with fresh_connections(swapd.url) as client:
                await trio.to_thread.run_sync(load_then, client, fuzz)
            await assert_swapd_survived(swapd)
    assert len(ran) >= 120


@st.composite
def raw_heads(draw: st.DrawFn) -> bytes:
    """A request head as bytes, malformed in any way but always terminated (a client that
    never ends its head is the slowloris test's business)."""
    token = st.text(alphabet=string.ascii_letters + "-_!#$%&'*+.^`|~", min_size=1, max_size=8)
    method = draw(st.one_of(st.sampled_from(["GET", "POST", "PUT", "BREW", "get", ""]), token))
    target = draw(
        st.one_of(
            st.sampled_from(
                [
                    "/health",
                    "/v1/models",
                    "/upstream/m/pid",
                    "*",
                    "//",
                    "/%",
                    "/%zz",
                    "http://x/running",
                    "",
                ]
            ),
            st.binary(max_size=30).map(lambda b: "/" + b.decode("latin-1")),
        )
    )
    version = draw(
        st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 extra", "", "http/1.1"])
    )
    lines = [f"{method} {target} {version}".encode("latin-1")]
    if draw(st.booleans()):
        lines.append(b"Host: x")
    for _ in range(draw(st.integers(0, 4))):
        name = draw(
            st.one_of(
                st.sampled_from([b"Authorization", b"X-Api-Key", b"Content-Type", b"Accept"]),
                st.binary(max_size=10),
            )
        )
        value = draw(st.binary(max_size=30)).replace(b"\r", b"").replace(b"\n", b"")
        separator = draw(st.sampled_from([b": ", b":", b" : ", b""]))
        lines.append(name + separator + value)
    return b"\r\n".join(lines).replace(b"\n\r\n", b"\n") + b"\r\nConnection: close\r\n\r\n"


async def test_malformed_http_never_gets_a_500() -> None:
    ran: list[object] = []
    with trio.fail_after(120):
        async with open_swapd(FUZZ_CONFIG) as swapd:
            host, port = swapd.url.removeprefix("http://").rsplit(":", 1)
            token = trio.lowlevel.current_trio_token()

            @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(raw_heads())
            def fuzz(head: bytes) -> None:
                ran.append(head)
                reply = trio.from_thread.run(raw_request, host, int(port), head, trio_token=token)
                assert reply.status != 500, (head, reply)
                assert b"Traceback" not in reply.body, (head, reply)

            await trio.to_thread.run_sync(fuzz)
            await assert_swapd_survived(swapd)
    assert len(ran) >= 100


async def test_a_non_ascii_path_is_forwarded_not_a_500() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(FUZZ_CONFIG) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            await client.post("/api/models/load/m")
            upstream = await client.get("/upstream/m/echo/caf%C3%A9")
            sdapi = await client.post("/sdapi/v1/caf%C3%A9?model=m", json={"prompt": "x"})
    assert upstream.status_code == 200, upstream.text
    assert upstream.json()["path"] == "/echo/caf%C3%A9"  # as the client sent it
    assert sdapi.status_code == 404, sdapi.text  # the demo upstream's answer, not swapd's
