"""swapd.web.cors: the preflight answer and llama-swap's header sanitiser cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.web.cors import (
    addressed_hosts,
    origin_allowed,
    preflight_headers,
    sanitize_request_headers,
)

TOKEN_CHARS = "abcxyzABCXYZ0129!#$%&'*+-.^_`|~"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # llama-swap sanitize_cors_test.go and server tests
        ("Content-Type, Authorization", "Content-Type, Authorization"),
        ("content-type,authorization", "content-type, authorization"),
        ("X-Custom-Header, x-custom-header", "X-Custom-Header, x-custom-header"),  # case kept
        ("  X-Custom ,  Accept ", "X-Custom, Accept"),
        ("\tX-Tabbed\t", "X-Tabbed"),
        ("\tcontent-type\t,\tauthorization\t", "content-type, authorization"),
        ("content-type, \x00invalid, authorization", "content-type, authorization"),
        ("auth\n", "auth"),
        ("auth\r\n, x", "auth, x"),
        ("Valid, Bad Header", "Valid"),
        ("Bad@Header", None),
        ("X-A,,X-B", "X-A, X-B"),
        ("X-A,", "X-A"),
        (",,,", None),
        ("", None),
        (None, None),
        ("   ", None),
        # token grammar: every tchar allowed, separators and non-ASCII not
        (TOKEN_CHARS, TOKEN_CHARS),
        ('a/b, a(b), a:b, a;b, a=b, a"b, a{b}, a?b, a[b], a\\b', None),
        ("Ünïcode, ok", "ok"),
        ("\u00a0nbsp\u00a0", "nbsp"),  # Go's TrimSpace trims Unicode spaces
        ("\u3000wide\u2003", "wide"),
        ("\x1cfs", None),  # Python would trim \x1c, Go does not (then invalid)
    ],
)
def test_sanitize_request_headers(value: str | None, expected: str | None) -> None:
    assert sanitize_request_headers(value) == expected


@given(st.text())
def test_sanitized_output_is_a_clean_token_list(value: str) -> None:
    result = sanitize_request_headers(value)
    if result is not None:
        for entry in result.split(", "):
            assert entry
            assert all(c in TOKEN_CHARS or (c.isascii() and c.isalnum()) for c in entry)
        assert sanitize_request_headers(result) == result


DEFAULT = "Content-Type, Authorization, Accept, X-Requested-With"


@pytest.mark.parametrize(
    ("request_headers", "allow_headers"),
    [
        ({}, DEFAULT),
        ({"Origin": "http://x"}, DEFAULT),
        ({"Access-Control-Request-Headers": ""}, DEFAULT),
        (
            {"Access-Control-Request-Headers": "x-stainless-os, content-type"},
            "x-stainless-os, content-type",
        ),
        ({"access-control-request-headers": "Authorization"}, "Authorization"),
        ({"ACCESS-CONTROL-REQUEST-HEADERS": "a b, c"}, "c"),
        ({"Access-Control-Request-Headers": "Bad@Header"}, None),  # omitted
    ],
)
def test_preflight_headers(request_headers: dict[str, str], allow_headers: str | None) -> None:
    expected = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    ]
    if allow_headers is not None:
        expected.append(("Access-Control-Allow-Headers", allow_headers))
    expected.append(("Access-Control-Max-Age", "86400"))
    assert preflight_headers(request_headers) == expected


# --- the WebSocket Origin check (swapd's own; issue 16 item 5) ---------------------------


@pytest.mark.parametrize(
    ("origin", "hosts", "allowed"),
    [
        (None, [], True),  # not a browser
        ("http://127.0.0.1:8080", ["127.0.0.1:8080"], True),
        ("http://LOCALHOST:8080/", ["localhost:8080"], True),  # case, a bare trailing slash
        ("http://[::1]:8080", ["[::1]:8080"], True),
        ("https://ai.example.com", ["127.0.0.1:8080", "ai.example.com"], True),  # 443 both
        ("https://ai.example.com", ["ai.example.com:443"], True),
        ("http://ai.example.com", ["ai.example.com:8080"], False),  # 80 != 8080
        ("http://evil.example", ["127.0.0.1:8080"], False),
        ("http://evil.example:8080", ["127.0.0.1:8080"], False),
        ("http://127.0.0.1:8081", ["127.0.0.1:8080"], False),
        ("null", ["127.0.0.1:8080"], False),  # sandboxed pages, files
        ("file://", ["127.0.0.1:8080"], False),
        ("http://127.0.0.1:8080/page", ["127.0.0.1:8080"], False),  # not an origin
        ("http://user@127.0.0.1:8080", ["127.0.0.1:8080"], False),
        ("http://127.0.0.1:99999", ["127.0.0.1:99999"], False),  # unparsable port
        ("http://127.0.0.1:8080", [], False),
    ],
)
def test_websocket_origins(origin: str | None, hosts: list[str], allowed: bool) -> None:
    assert origin_allowed(origin, hosts) is allowed


def test_the_addressed_hosts_include_what_a_reverse_proxy_forwards() -> None:
    headers = [
        ("Host", "127.0.0.1:8080"),
        ("X-Forwarded-Host", "ai.example.com, inner.example"),
        ("Forwarded", 'for=192.0.2.1;host="ui.example:8443";proto=https, host=b.example'),
        ("X-Other", "host=ignored.example"),
    ]
    assert addressed_hosts(headers) == [
        "127.0.0.1:8080",
        "ai.example.com",
        "inner.example",
        "ui.example:8443",
        "b.example",
    ]
