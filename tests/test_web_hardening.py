"""Unit checks of the pure parts of issue #16's fixes: the bounded JSON scan
(``bodies.read_fields``), the Host rule (``hostcheck.host_allowed``), redaction
(``redact.py``), response framing (``forward.response_headers``) and the models'
environment (``instance.inherited_environment``) and the stalled-reader watch
(``relay.StallWatch``). The HTTP behaviour is in
tests/reliability/test_security_http.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from swapd.config import parse_config
from swapd.supervise.instance import inherited_environment
from swapd.web import bodies
from swapd.web.forward import response_headers
from swapd.web.hostcheck import host_allowed
from swapd.web.problems import close_matches, json_bytes
from swapd.web.redact import redact_command, redact_config_text
from swapd.web.relay import StallWatch

PAD = b" " * (bodies.PARSE_WHOLE + 1)  # pushes a body onto the scanning path

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["model", "stream", "x", "messages"]), json_values))
def test_the_scan_of_a_large_body_agrees_with_the_whole_parse(obj: dict[str, Any]) -> None:
    small = json.dumps(obj).encode()
    large = small[:-1] + (b', "pad": "' if obj else b'"pad": "') + PAD + b'"}'
    whole, scanned = bodies.read_fields(small), bodies.read_fields(large)
    assert (whole.model, whole.stream) == (scanned.model, scanned.stream)
    assert whole.error is None and scanned.error is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"model": "a",, "x": 1}', "line 1 column 15 (char 14)"),
        (b'{"model": "a"', "line 1 column 14 (char 13)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"model": "a" x' + PAD, "expecting ',' delimiter"),
        (b'{"x": [[]' + PAD, "unterminated"),
        (b'{"model": "' + b"m" * 100_000 + b'"}' + PAD, "'model' value is 100002 characters"),
    ],
)
def test_invalid_bodies_are_named_with_a_position(body: bytes, error: str) -> None:
    fields = bodies.read_fields(body)
    assert fields.model is None
    assert fields.error is not None and error in fields.error


def test_a_large_body_of_tiny_arrays_is_scanned_not_built() -> None:
    body = b'{"messages": [' + b"[]," * 3_000_000 + b'[]], "model": "m", "stream": 1}'
    assert bodies.read_fields(body) == bodies.JsonFields("m", True)


def test_a_form_with_too_many_parts_is_refused() -> None:
    form = b"".join(
        b'--b\r\nContent-Disposition: form-data; name="p"\r\n\r\nx\r\n' for _ in range(1001)
    )
    with pytest.raises(ValueError, match="more than 1000 parts"):
        bodies.parse_multipart_model("multipart/form-data; boundary=b", form + b"--b--\r\n")


def test_huge_names_are_not_matched_and_odd_text_is_escaped() -> None:
    assert close_matches("llama" * 100, ["llama"]) == []
    assert json_bytes({"m": "x\ud800"}) == b'{"m": "x\\ud800"}\n'
    assert json_bytes({"m": "é"}) == '{"m": "é"}\n'.encode()


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8080", True),
        ("127.0.0.1:8080", True),
        ("[::1]:8080", True),
        ("10.0.0.5", True),
        ("swapd", True),
        ("app.localhost", True),
        ("LOCALHOST.", True),
        ("proxy.example:443", True),
        ("attacker.example", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_host_rule(host: str, allowed: bool) -> None:
    assert host_allowed(host, ["Proxy.Example"], machine="box.lan") is allowed


def test_star_allows_any_host() -> None:
    assert host_allowed("attacker.example", ["*"], machine="box")


def test_content_length_is_dropped_when_the_body_is_chunked() -> None:
    headers = [("Content-Length", "50"), ("Transfer-Encoding", "chunked"), ("X-A", "1")]
    assert response_headers(headers) == [("X-A", "1")]
    assert response_headers([("Content-Length", "5")]) == [("Content-Length", "5")]


CONFIG = """\
apiKeys:
  - 'sk-it''s-quoted'
  - "sk-\\x41-escaped"
  - sk-plain # note
  - |
    sk-block
peers:
  p: {proxy: "http://x", apiKey: sk-flow-key, models: [a]}
models:
  m:
    cmd: srv --api-key sk-plain --port ${PORT}
    proxy: http://127.0.0.1:${PORT}
"""


def test_config_text_is_redacted_by_position() -> None:
    config = parse_config(CONFIG, file="x")
    shown = redact_config_text(CONFIG, config)
    for secret in ("it''s", "x41", "sk-plain", "sk-block", "sk-flow-key"):
        assert secret not in shown, shown
    assert "# note" in shown and "models: [a]" in shown
    assert shown.count("REDACTED") == 6  # five keys, and the copy in the command


def test_command_lines_are_redacted() -> None:
    config = parse_config(CONFIG, file="x")
    cmd = "srv --api-key=abc --hf-token 'x y' --port 1 --model tok-123456 sk-plain"
    shown = redact_command(cmd, config, {"HF_TOKEN": "tok-123456", "HOME": "/home/me"})
    assert shown == "srv --api-key=REDACTED --hf-token REDACTED --port 1 --model REDACTED REDACTED"


def test_models_do_not_inherit_the_variables_holding_keys() -> None:
    config = parse_config(CONFIG, file="x")
    environ = {"KEY_A": "sk-plain", "PART": "sk-flow-k", "SHORT": "sk", "PATH": "/bin"}
    assert inherited_environment(environ, config) == {"SHORT": "sk", "PATH": "/bin"}


async def test_the_stall_watch_cuts_only_sends_that_wait_too_long(autojump_clock: object) -> None:
    cut: list[str] = []

    def cutter(name: str) -> Any:
        async def run() -> None:
            cut.append(name)

        return run

    watch = StallWatch(lambda: 5.0)
    stuck = watch.track(cutter("stuck"))
    moving = watch.track(cutter("moving"))
    watch.track(cutter("idle"))  # waiting for its upstream: never cut
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)
        stuck.since = trio.current_time()
        for _ in range(20):  # a chunk sent every second
            moving.since = trio.current_time()
            await trio.sleep(0.5)
            moving.since = None
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert cut == ["stuck"]
