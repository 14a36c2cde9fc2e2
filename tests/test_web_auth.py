"""swapd.web.auth: credential extraction, the key check (sharp edge 18 fixed), stripping."""

from __future__ import annotations

import base64
import hmac
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.web.auth import WWW_AUTHENTICATE, KeyChecker, presented_keys, strip_credentials


def basic(user_pass: str | bytes) -> str:
    raw = user_pass.encode() if isinstance(user_pass, str) else user_pass
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, []),
        ({"Authorization": "Bearer sk-1"}, ["sk-1"]),
        ({"authorization": "Bearer sk-1"}, ["sk-1"]),
        ({"AUTHORIZATION": "Bearer sk-1"}, ["sk-1"]),
        ({"x-api-key": "sk-2"}, ["sk-2"]),
        ({"X-Api-Key": "sk-2"}, ["sk-2"]),
        ({"Authorization": basic("user:sk-3")}, ["sk-3"]),
        ({"Authorization": basic(":sk-3")}, ["sk-3"]),
        ({"Authorization": basic("u:a:b")}, ["a:b"]),  # the part after the first colon
        ({"Authorization": basic("no-colon")}, []),
        ({"Authorization": basic("user:")}, []),  # empty password
        ({"Authorization": basic("u:ключ")}, ["ключ"]),
        ({"Authorization": "Basic !!!notbase64"}, []),
        ({"Authorization": "Basic dXNlcjpzay0z"[:-1]}, []),  # bad padding
        ({"Authorization": "Basic ü"}, []),
        ({"Authorization": "basic " + basic("u:k")[6:]}, []),  # scheme is case-sensitive
        ({"Authorization": "bearer sk-1"}, []),
        ({"Authorization": "BEARER sk-1"}, []),
        ({"Authorization": "Bearer "}, []),
        ({"Authorization": "Bearer  sk-1"}, [" sk-1"]),  # taken literally, like llama-swap
        ({"Authorization": "Token sk-1"}, []),
        ({"x-api-key": ""}, []),
        ({"Authorization": "Bearer a", "x-api-key": "b"}, ["a", "b"]),
        (
            [("Authorization", "Bearer a"), ("authorization", "Bearer b"), ("x-api-key", "c")],
            ["a", "b", "c"],
        ),
        ([("Content-Type", "application/json"), ("X-Api-Key-Extra", "no")], []),
    ],
)
def test_presented_keys(headers: Any, expected: list[str]) -> None:
    assert presented_keys(headers) == expected


def test_basic_password_with_arbitrary_bytes_is_compared_exactly() -> None:
    header = basic(b"u:\xff\xfe")
    assert KeyChecker(["\udcff\udcfe"]).allows({"Authorization": header})
    assert not KeyChecker(["\ufffd\ufffd"]).allows({"Authorization": header})


KEYS = ["sk-first", "sk-second"]


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Authorization": "Bearer sk-first"}, True),
        ({"Authorization": "Bearer sk-second"}, True),
        ({"Authorization": basic("anyone:sk-second")}, True),
        ({"x-api-key": "sk-first"}, True),
        ({"X-API-KEY": "sk-second"}, True),
        ({}, False),
        ({"Authorization": "Bearer sk-wrong"}, False),
        ({"Authorization": basic("sk-first:wrong")}, False),  # the user part is ignored
        ({"Authorization": basic("sk-first")}, False),
        ({"x-api-key": "sk-firs"}, False),
        ({"x-api-key": "sk-first "}, False),
        ({"x-api-key": "SK-FIRST"}, False),
        ({"Authorization": "bearer sk-first"}, False),
        ({"Authorization": "sk-first"}, False),
        ({"Cookie": "sk-first"}, False),
        # our fix: every credential counts, not only the first one present
        ({"Authorization": basic("u:wrong"), "x-api-key": "sk-first"}, True),
        ({"Authorization": "Bearer wrong", "x-api-key": "sk-second"}, True),
        ({"Authorization": "Basic !!!notbase64", "x-api-key": "sk-first"}, True),
        ({"Authorization": "Bearer sk-first", "x-api-key": "wrong"}, True),
        ({"Authorization": "Bearer wrong", "x-api-key": "wrong"}, False),
    ],
)
def test_key_checker(headers: dict[str, str], allowed: bool) -> None:
    checker = KeyChecker(KEYS)
    assert checker.enabled
    assert checker.allows(headers) is allowed
    assert checker.allows(list(headers.items())) is allowed


@given(st.dictionaries(st.text(min_size=1), st.text()))
def test_no_keys_allows_everything(headers: dict[str, str]) -> None:
    checker = KeyChecker([])
    assert not checker.enabled
    assert checker.allows(headers)


def test_empty_configured_keys_are_ignored() -> None:
    checker = KeyChecker(["", "k"])
    assert not checker.allows({"x-api-key": ""})
    assert not checker.allows({"Authorization": "Bearer "})
    assert checker.allows({"x-api-key": "k"})
    assert not KeyChecker([""]).enabled


def test_unicode_keys() -> None:
    checker = KeyChecker(["clé-🔑"])
    assert checker.allows({"x-api-key": "clé-🔑"})
    assert checker.allows({"Authorization": basic("u:clé-🔑")})
    assert not checker.allows({"x-api-key": "cle-🔑"})


def test_every_key_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the number of comparisons does not depend on which key matched."""
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    checker = KeyChecker(["k1", "k2", "k3"])
    for presented in ("k1", "k3", "nope"):
        calls.clear()
        checker.allows({"Authorization": "Bearer " + presented, "x-api-key": "other"})
        assert len(calls) == 6
        assert all(isinstance(a, bytes) and isinstance(b, bytes) for a, b in calls)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            [("Host", "h"), ("Authorization", "Bearer k"), ("X-Api-Key", "k"), ("Accept", "*/*")],
            [("Host", "h"), ("Accept", "*/*")],
        ),
        ({"authorization": "x", "content-type": "a/b"}, [("content-type", "a/b")]),
        ([("AUTHORIZATION", "x"), ("x-api-key", "y"), ("x-api-key", "z")], []),
        (
            [("x-api-key-id", "keep"), ("proxy-authorization", "keep")],
            [("x-api-key-id", "keep"), ("proxy-authorization", "keep")],
        ),
        ([], []),
    ],
)
def test_strip_credentials(headers: Any, expected: list[tuple[str, str]]) -> None:
    assert strip_credentials(headers) == expected


def test_www_authenticate() -> None:
    assert WWW_AUTHENTICATE == 'Basic realm="swapd"'
