"""swapd.web.cors: the preflight answer and llama-swap's header sanitiser cases."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.web.cors import preflight_headers, sanitize_request_headers

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
