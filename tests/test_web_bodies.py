"""swapd.web.bodies: model extraction, JSON rewriting, stream flag, multipart editing."""

from __future__ import annotations

import json
import time
from email import policy
from email.parser import BytesParser
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from swapd.web.bodies import (
    extract_model,
    is_streaming,
    parse_multipart_model,
    rewrite_json_body,
    rewrite_multipart_model,
)

# --- extract_model -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"llama"}', "llama"),
        (b'{"model": "org/m:q4.gguf", "stream": true}', "org/m:q4.gguf"),
        ('{"model":"模型"}'.encode(), "模型"),
        (b'{"model":false}', "false"),
        (b'{"model":true}', "true"),
        (b'{"model":12}', "12"),
        (b'{"model":-3}', "-3"),
        (b'{"model":1.50}', "1.50"),
        (b'{"model":-0.5e3}', "-0.5e3"),
        (b'{"model": {"a": 1, "b": [1, 2]}}', '{"a":1,"b":[1,2]}'),
        (b'{"model": [1, "x"]}', '[1,"x"]'),
        (b'{"model":"a","model":"b"}', "b"),  # duplicate keys: the last wins
        (b'\xef\xbb\xbf{"model":"bom"}', "bom"),
        (b' \n{"model":"ws"}\n ', "ws"),
        (b'{"model":"a\\u0000b"}', "a\x00b"),
        # no model
        (b'{"model":null}', None),
        (b'{"model":""}', None),
        (b'{"messages":[]}', None),
        (b'{"inner":{"model":"x"}}', None),
        (b"{}", None),
        (b'["model"]', None),
        (b'"model"', None),
        (b"null", None),
        (b"", None),
        (b"not json", None),
        (b'{"model":"a"', None),  # truncated: llama-swap's scanner would say "a"
        (b'{"model":"a",}', None),
        (b'{"model":"a","t":NaN}', None),
        (b'{"model":"a","t":Infinity}', None),
        (b'{"model":"a","t":1e400}', None),
        (b'{"model":1e400}', None),
        (b'{"model":"\xff"}', None),  # not UTF-8
        (b"[" * 100_000 + b"]" * 100_000, None),  # deep nesting
    ],
)
def test_extract_model(body: bytes, expected: str | None) -> None:
    assert extract_model(body) == expected


@given(st.binary(max_size=300))
def test_extract_model_never_raises_on_bytes(body: bytes) -> None:
    result = extract_model(body)
    assert result is None or result != ""


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=6)


@given(json_objects, st.text(min_size=1))
def test_extract_model_reads_any_string_model(obj: dict[str, Any], model: str) -> None:
    obj["model"] = model
    assert extract_model(json.dumps(obj).encode()) == model
    assert extract_model(json.dumps(obj, ensure_ascii=False, indent=2).encode()) == model


# --- rewrite_json_body -------------------------------------------------------------------


def rewrite(
    body: bytes,
    *,
    use: str = "",
    strip: tuple[str, ...] = (),
    set_items: tuple[tuple[str, Any], ...] = (),
) -> bytes:
    return rewrite_json_body(body, use_model_name=use, strip=strip, set_items=set_items)


def test_reference_strip_params() -> None:
    body = b'{"model":"model1", "temperature":0.1, "x_param":"123", "y_param":"abc", "stream":true}'
    # Filters.stripped_keys() of "temperature, model, stream" (model already dropped there;
    # passed here anyway to check the defensive guard).
    out = rewrite(body, strip=("model", "stream", "temperature"))
    assert json.loads(out) == {"model": "model1", "x_param": "123", "y_param": "abc"}
    assert list(json.loads(out)) == ["model", "x_param", "y_param"]


def test_reference_use_model_name() -> None:
    out = rewrite(b'{"model":"model1"}', use="upstreamModel")
    assert json.loads(out) == {"model": "upstreamModel"}
    assert len(out) == 25


@given(st.binary(max_size=200))
def test_no_filters_returns_the_same_object(body: bytes) -> None:
    assert rewrite(body) is body


@pytest.mark.parametrize(
    ("body", "kwargs"),
    [
        (b'{"model":"m","a":1}', {"use": "m"}),  # already that name
        (b'{"model":"m","a":1}', {"strip": ("b", "a.x", "model")}),  # nothing to strip
        (b'{"model":"m","a":1}', {"set_items": (("a", 1),)}),  # already that value
        (b'{"model":"m","a":{"b":[1,2]}}', {"set_items": (("a", {"b": (1, 2)}),)}),
        (b'{"model":"m"}', {"set_items": (("model", "x"),)}),  # model is never set
        (b'{"model":"m"}', {"set_items": (("model.x", 1),), "strip": ("model",)}),
        (b'{"model":"m"}', {"strip": ("", ".", "a..b", "a.")}),  # invalid paths
        (b'{"model":"m","a":[1]}', {"set_items": (("a.5", 1),), "strip": ("a.1", "a.x")}),
        (b"not json", {"use": "x", "strip": ("a",)}),
        (b"[1,2]", {"use": "x", "set_items": (("a", 1),)}),
    ],
)
def test_unchanged_body_is_returned_as_is(body: bytes, kwargs: dict[str, Any]) -> None:
    assert rewrite(body, **kwargs) is body


@pytest.mark.parametrize(
    ("body", "kwargs", "expected"),
    [
        # useModelName
        (b'{"model":12,"a":1}', {"use": "12"}, {"model": "12", "a": 1}),
        (b'{"a":1,"model":"x","b":2}', {"use": "y"}, {"a": 1, "model": "y", "b": 2}),
        # setParams: override in place, add at the end, any JSON value
        (
            b'{"model":"m","temperature":0.9,"stream":true}',
            {"set_items": (("temperature", 0.2), ("top_k", 40))},
            {"model": "m", "temperature": 0.2, "stream": True, "top_k": 40},
        ),
        (
            b'{"model":"m"}',
            {"set_items": (("kw", MappingProxyType({"think": False})), ("stop", ("a", "b")))},
            {"model": "m", "kw": {"think": False}, "stop": ["a", "b"]},
        ),
        (b'{"model":"m","a":1}', {"set_items": (("a", True),)}, {"model": "m", "a": True}),
        (b'{"model":"m","a":1}', {"set_items": (("a", None),)}, {"model": "m", "a": None}),
        # order: useModelName -> strip -> set (a key in both ends up set)
        (
            b'{"model":"m","a":1,"b":2}',
            {"use": "u", "strip": ("a", "b"), "set_items": (("a", 3),)},
            {"model": "u", "a": 3},
        ),
        # dotted paths (sjson compatibility, sharp edge 24)
        (
            b'{"model":"m","a":{"b":1,"c":2}}',
            {"strip": ("a.b",)},
            {"model": "m", "a": {"c": 2}},
        ),
        (
            b'{"model":"m"}',
            {"set_items": (("chat_template_kwargs.enable_thinking", False),)},
            {"model": "m", "chat_template_kwargs": {"enable_thinking": False}},
        ),
        (
            b'{"model":"m","a":{"x":1}}',
            {"set_items": (("a.b.c", 1),)},
            {"model": "m", "a": {"x": 1, "b": {"c": 1}}},
        ),
        (b'{"model":"m","a":5}', {"set_items": (("a.b", 1),)}, {"model": "m", "a": {"b": 1}}),
        (b'{"model":"m","a.b":1}', {"strip": ("a\\.b",)}, {"model": "m"}),
        (b'{"model":"m"}', {"set_items": (("a\\.b", 1),)}, {"model": "m", "a.b": 1}),
        (
            b'{"model":"m","messages":[{"role":"user","x":1},{"role":"a"}]}',
            {"strip": ("messages.0.x",), "set_items": (("messages.1.role", "assistant"),)},
            {"model": "m", "messages": [{"role": "user"}, {"role": "assistant"}]},
        ),
        (b'{"model":"m","stop":["a","b"]}', {"strip": ("stop.0",)}, {"model": "m", "stop": ["b"]}),
        (b'{"model":"m","a":[1]}', {"set_items": (("a.0", 2),)}, {"model": "m", "a": [2]}),
        # strict equality: 1, 1.0 and true are different values
        (b'{"model":"m","a":1}', {"set_items": (("a", 1.0),)}, {"model": "m", "a": 1.0}),
    ],
)
def test_rewrites(body: bytes, kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    out = rewrite(body, **kwargs)
    assert out is not body
    parsed = json.loads(out)
    assert parsed == expected
    assert list(parsed) == list(expected)  # key order
    assert json.dumps(parsed) == json.dumps(expected)  # value types (1 vs 1.0 vs true)


def test_output_is_compact_utf8() -> None:
    out = rewrite('{"model": "m", "text": "héllo 🦙"}'.encode(), use="ü")
    assert out == '{"model":"ü","text":"héllo 🦙"}'.encode()


def test_lone_surrogate_escape_survives() -> None:
    body = b'{"model":"m","text":"\\ud800 and \\udfff"}'
    out = rewrite(body, set_items=(("x", 1),))
    assert json.loads(out) == {"model": "m", "text": "\ud800 and \udfff", "x": 1}


def test_set_values_are_copied_not_shared() -> None:
    value = {"b": 1}
    items = (("a", value), ("a.c", 2))
    out = rewrite(b'{"model":"m"}', set_items=items)
    assert json.loads(out) == {"model": "m", "a": {"b": 1, "c": 2}}
    assert value == {"b": 1}


def test_non_finite_set_value_is_refused() -> None:
    with pytest.raises(ValueError):
        rewrite(b'{"model":"m"}', set_items=(("t", float("inf")),))


@given(
    json_objects,
    st.lists(st.text(alphabet="abcxyz_", min_size=1, max_size=3), max_size=4),
    st.lists(
        st.tuples(st.text(alphabet="abcxyz_", min_size=1, max_size=3), json_values), max_size=4
    ),
)
def test_rewrite_matches_a_dict_model(
    obj: dict[str, Any], strip: list[str], set_items: list[tuple[str, Any]]
) -> None:
    obj["model"] = "m"
    body = json.dumps(obj).encode()
    expected = dict(obj)
    for key in strip:
        expected.pop(key, None)
    expected.update(set_items)
    out = rewrite(body, strip=tuple(strip), set_items=tuple(set_items))
    assert json.loads(out) == json.loads(json.dumps(expected))
    if out is not body:
        assert (
            out == json.dumps(json.loads(out), ensure_ascii=False, separators=(",", ":")).encode()
        )


# --- is_streaming --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"stream":true}', True),
        (b'{"stream":false}', False),
        (b'{"stream":1}', True),
        (b'{"stream":-0.5}', True),
        (b'{"stream":0}', False),
        (b'{"stream":0.0}', False),
        (b'{"stream":"true"}', True),
        (b'{"stream":"True"}', True),
        (b'{"stream":"TRUE"}', True),
        (b'{"stream":"tRuE"}', True),
        (b'{"stream":"t"}', True),
        (b'{"stream":"T"}', True),
        (b'{"stream":"1"}', True),
        (b'{"stream":"yes"}', False),
        (b'{"stream":"false"}', False),
        (b'{"stream":"0"}', False),
        (b'{"stream":""}', False),
        (b'{"stream":null}', False),
        (b'{"stream":{}}', False),
        (b'{"stream":[1]}', False),
        (b"{}", False),
        (b"[true]", False),
        (b"garbage", False),
        (b"", False),
    ],
)
def test_is_streaming(body: bytes, expected: bool) -> None:
    assert is_streaming(body) is expected
    parsed = extract_model_free_parse(body)
    if isinstance(parsed, dict):
        assert is_streaming(parsed) is expected


def extract_model_free_parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# --- multipart -----------------------------------------------------------------------------

B = "----swapdBoundary7MA4YWxkTrZu0gW"
CT = f"multipart/form-data; boundary={B}"


def form(*parts: tuple[str, bytes], boundary: str = B, nl: bytes = b"\r\n") -> bytes:
    """Parts are (header lines joined by nl, value)."""
    dash = b"--" + boundary.encode()
    out = b""
    for headers, value in parts:
        out += dash + nl + headers.encode().replace(b"\n", nl) + nl + nl + value + nl
    return out + dash + b"--" + nl


def field(name: str, value: bytes) -> tuple[str, bytes]:
    return f'Content-Disposition: form-data; name="{name}"', value


def upload(name: str, filename: str, value: bytes, ctype: str = "audio/mpeg") -> tuple[str, bytes]:
    return (
        f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\n'
        f"Content-Type: {ctype}",
        value,
    )


AUDIO = bytes(range(256)) + b"\r\n--" + B.encode()[:-1] + b"\r\n\r\n" + b"\x00" * 10


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (CT, form(field("model", b"whisper"), upload("file", "a.mp3", AUDIO)), "whisper"),
        (
            CT,
            form(upload("file", "a.mp3", AUDIO), field("model", b"w1"), field("model", b"w2")),
            "w1",
        ),
        (CT, form(field("language", b"en"), upload("file", "a.mp3", AUDIO)), None),
        (CT, form(upload("model", "model.bin", b"weights"), field("x", b"y")), None),
        (CT, form(field("model", b"")), ""),
        (CT, form(field("model", "modèle".encode())), "modèle"),
        (CT, form(field("Model", b"x")), None),  # form names are case-sensitive
        (CT, form(("Content-Disposition: form-data; name=model", b"unquoted")), "unquoted"),
        (CT, form(('content-disposition: FORM-DATA; NAME="model"', b"cased")), "cased"),
        (CT, form(('Content-Disposition: attachment; name="model"', b"x")), None),
        (CT, form(("Content-Disposition: form-data; name*=utf-8''model", b"rfc2231")), "rfc2231"),
        (CT, form(('Content-Disposition: form-data; name="model"; filename=""', b"v")), "v"),
        (CT, form(("X-Other: 1", b"no disposition"), field("model", b"m")), "m"),
        (CT, form(("", b"no headers"), field("model", b"m")), "m"),
        (f'multipart/form-data; boundary="{B}"', form(field("model", b"quoted")), "quoted"),
        (f"Multipart/Form-Data;charset=utf-8;boundary={B}", form(field("model", b"c")), "c"),
        (
            'multipart/form-data; boundary="a b:c"',
            form(field("model", b"s"), boundary="a b:c"),
            "s",
        ),
        (CT, form(field("model", b"lf"), nl=b"\n"), "lf"),
        (CT, b"preamble\r\nmore\r\n" + form(field("model", b"p")) + b"epilogue\r\n--x", "p"),
        (CT, form(field("model", b"line1\r\nline2\r\n")), "line1\r\nline2\r\n"),
        (CT, b"--" + B.encode() + b"--\r\n", None),  # empty form
        (
            CT,
            f"--{B}  \t\r\nContent-Disposition: form-data; name=model\r\n\r\npad\r\n--{B}--".encode(),
            "pad",
        ),  # transport padding after the boundary, no final CRLF
        (
            CT,
            f"--{B}x\r\n--{B}\r\nContent-Disposition: form-data; name=model\r\n\r\nv\r\n--{B}--".encode(),
            "v",
        ),  # a preamble line that only starts with the boundary text
    ],
)
def test_parse_multipart_model(content_type: str, body: bytes, expected: str | None) -> None:
    assert parse_multipart_model(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b"{}", "not multipart/form-data"),
        ("", b"", "not multipart/form-data"),
        ("multipart/mixed; boundary=x", b"--x--", "not multipart/form-data"),
        ("multipart/form-data", b"--x--", "no boundary"),
        ("multipart/form-data; boundary=", b"----", "no boundary"),
        (CT, b"", "no opening boundary"),
        (CT, b"just text", "no opening boundary"),
        (CT, form(field("model", b"m"))[:-8], "no closing boundary"),
        (CT, f"--{B}\r\nContent-Disposition: form-data; name=model\r\n".encode(), "closing"),
        (CT, f"--{B}\r\nno blank line\r\n--{B}--".encode(), "no blank line"),
        (CT, f"--{B}x\r\n\r\nv\r\n--{B}x--".encode(), "no opening boundary"),
    ],
)
def test_parse_multipart_errors(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_multipart_model(content_type, body)
    with pytest.raises(ValueError, match=message):
        rewrite_multipart_model(content_type, body, "new")


def test_rewrite_keeps_everything_but_the_model_values() -> None:
    parts = (
        field("model", b"alias"),
        upload("file", "test.mp3", AUDIO, "audio/mpeg"),
        field("language", b"en"),
        upload("image", "x.png", b"\x89PNG\r\n\x1a\n", "image/png"),
        field("model", b"second"),
    )
    body = b"preamble\r\n" + form(*parts) + b"epilogue"
    content_type, out = rewrite_multipart_model(CT, body, "real-model")
    assert content_type is CT
    expected_parts = list(parts)
    expected_parts[0] = field("model", b"real-model")
    expected_parts[4] = field("model", b"real-model")
    assert out == b"preamble\r\n" + form(*expected_parts) + b"epilogue"
    assert parse_multipart_model(CT, out) == "real-model"


def test_rewrite_lf_framing() -> None:
    body = form(field("model", b"a"), upload("file", "f", b"x\ny"), nl=b"\n")
    _, out = rewrite_multipart_model(CT, body, "b")
    assert out == form(field("model", b"b"), upload("file", "f", b"x\ny"), nl=b"\n")


@pytest.mark.parametrize(
    "body",
    [
        form(field("language", b"en"), upload("file", "a.mp3", AUDIO)),
        form(field("model", b"same"), upload("file", "a.mp3", AUDIO)),
        form(upload("model", "m.bin", b"file named model")),
    ],
)
def test_rewrite_without_change_returns_the_input(body: bytes) -> None:
    content_type, out = rewrite_multipart_model(CT, body, "same")
    assert content_type is CT
    assert out is body


@pytest.mark.parametrize("new", [f"x\r\n--{B}", f"--{B}--", f"a\n--{B}\r\n"])
def test_rewrite_refuses_a_name_that_breaks_the_framing(new: str) -> None:
    with pytest.raises(ValueError, match="boundary"):
        rewrite_multipart_model(CT, form(field("model", b"m")), new)


def test_large_upload_is_fast() -> None:
    # 40 MiB of content full of near-boundaries; a per-byte Python loop would take minutes.
    chunk = b"\r\n--" + B.encode()[:-3] + b"\r\n" + bytes(range(256)) * 4
    audio = chunk * (40 * 1024 * 1024 // len(chunk))
    body = form(upload("file", "big.wav", audio), field("model", b"m"))
    started = time.perf_counter()
    assert parse_multipart_model(CT, body) == "m"
    _, out = rewrite_multipart_model(CT, body, "other-model")
    elapsed = time.perf_counter() - started
    assert len(out) == len(body) + len("other-model") - 1
    assert out.startswith(body[: len(body) - 200])
    assert elapsed < 10, elapsed


# Content that must survive untouched: binary, CRLF runs, near-boundaries, headers lookalikes.
contents = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from(
            [b"\r\n", b"\r", b"\n", b"--", b"-" + B.encode()[:-1], b"\x00", b"a", b"\r\n\r\n"]
        ),
        max_size=20,
    ).map(b"".join),
)
names = st.sampled_from(["model", "file", "language", "prompt", "image", "mask", "n"])
ctypes = st.sampled_from(
    ["audio/mpeg", "image/png", "application/octet-stream", "text/plain; charset=utf-8"]
)


@st.composite
def forms(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], bytes]:
    parts: list[tuple[str, bytes]] = []
    for _ in range(draw(st.integers(1, 6))):  # the email parser rejects an empty form
        name = draw(names)
        value = draw(contents)
        if draw(st.booleans()):
            filename = draw(st.text(alphabet="abcxyz.-_ ", min_size=1, max_size=10))
            parts.append(upload(name, filename, value, draw(ctypes)))
        else:
            parts.append(field(name, value))
    preamble = draw(st.sampled_from([b"", b"This is a preamble.\r\n", b"\r\n"]))
    epilogue = draw(st.sampled_from([b"", b"\r\n", b"trailing junk"]))
    return parts, preamble + form(*parts) + epilogue


def email_parts(content_type: str, body: bytes) -> list[tuple[object, ...]]:
    message = BytesParser(policy=policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    assert message.is_multipart()
    result: list[tuple[object, ...]] = []
    for part in message.iter_parts():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        result.append(
            (
                part.get_param("name", header="content-disposition"),
                part.get_filename(),
                part.get_content_type(),
                payload,
            )
        )
    return result


@settings(max_examples=150, deadline=None)
@given(forms(), st.text(alphabet="abcdefgh-._:/0123456789", min_size=1, max_size=20))
def test_multipart_round_trip(generated: tuple[list[tuple[str, bytes]], bytes], new: str) -> None:
    parts, body = generated
    assume(all(b"--" + B.encode() not in value for _, value in parts))
    is_model = [h.endswith('name="model"') for h, _ in parts]
    first = next((v for (_, v), m in zip(parts, is_model, strict=True) if m), None)
    assert parse_multipart_model(CT, body) == (
        None if first is None else first.decode("utf-8", "replace")
    )

    content_type, out = rewrite_multipart_model(CT, body, new)
    assert content_type == CT
    if not any(is_model):
        assert out is body
    before = email_parts(CT, body)
    after = email_parts(CT, out)
    assert len(after) == len(before) == len(parts)
    for old, rewritten, model in zip(before, after, is_model, strict=True):
        if model:
            assert rewritten == (old[0], old[1], old[2], new.encode())
        else:
            assert rewritten == old
    if any(is_model):
        assert parse_multipart_model(CT, out) == new
