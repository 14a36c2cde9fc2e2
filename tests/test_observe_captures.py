"""Captures: record, size, redaction, FIFO store (reference 8.4, 13.6)."""

from __future__ import annotations

import base64
import json

import pytest

from swapd.observe.captures import (
    REDACTED,
    Capture,
    CaptureStore,
    canonical_header_name,
    first_values,
    redact,
)


def test_size_reference_case() -> None:
    capture = Capture(
        id=1,
        req_path="/v1/chat/completions",  # 20
        req_headers={"Content-Type": "application/json"},  # 12 + 16
        req_body=b"request body",  # 12
        resp_headers={"X-Test": "value"},  # 6 + 5
        resp_body=b"response body",  # 13
    )
    assert capture.size == 20 + 12 + 13 + 28 + 11 == 84


def test_size_of_empty_capture_is_zero() -> None:
    assert Capture(id=0).size == 0


def test_size_counts_utf8_bytes() -> None:
    assert Capture(id=0, req_path="/é", req_headers={"X": "ü"}).size == 3 + 1 + 2


def test_disabled_store_stores_nothing() -> None:
    store = CaptureStore(0)
    assert not store.enabled
    assert store.add(Capture(id=0, req_body=b"test")) is False
    assert store.get(0) is None
    assert store.statistics().skipped == 1


def test_stored_when_enabled() -> None:
    store = CaptureStore(5 * 1024 * 1024)
    assert store.add(Capture(id=42, req_body=b"test")) is True
    got = store.get(42)
    assert got is not None
    assert got.id == 42


def test_get_unknown_id() -> None:
    assert CaptureStore(100).get(999) is None


def test_fifo_eviction_at_100_bytes() -> None:
    store = CaptureStore(100)
    for i in range(3):
        assert store.add(Capture(id=i, req_body=bytes(40)))
    assert store.get(0) is None
    assert store.get(1) is not None
    assert store.get(2) is not None
    stats = store.statistics()
    assert (stats.count, stats.bytes, stats.evicted, stats.added) == (2, 80, 1, 3)


def test_eviction_removes_as_many_as_needed() -> None:
    store = CaptureStore(100)
    for i in range(4):
        store.add(Capture(id=i, req_body=bytes(25)))
    assert store.add(Capture(id=9, req_body=bytes(70)))
    assert [i for i in (0, 1, 2, 3, 9) if store.get(i) is not None] == [3, 9]


def test_oversize_capture_skipped_and_keeps_others() -> None:
    store = CaptureStore(100)
    store.add(Capture(id=1, req_body=bytes(10)))
    assert store.add(Capture(id=0, req_body=bytes(200))) is False
    assert store.get(0) is None
    assert store.get(1) is not None


def test_exactly_capacity_fits() -> None:
    store = CaptureStore(100)
    assert store.add(Capture(id=0, req_body=bytes(100)))
    assert store.statistics().bytes == 100


def test_same_id_replaces() -> None:
    store = CaptureStore(100)
    store.add(Capture(id=1, req_body=bytes(40)))
    store.add(Capture(id=1, req_body=bytes(50)))
    assert len(store) == 1
    assert store.statistics().bytes == 50


def test_negative_capacity_rejected() -> None:
    with pytest.raises(ValueError, match="capacity"):
        CaptureStore(-1)


def test_redact_reference_names() -> None:
    headers = {
        "Authorization": "Bearer secret-token",
        "Proxy-Authorization": "Basic creds",
        "Cookie": "session=abc123",
        "Set-Cookie": "session=xyz789",
        "X-Api-Key": "sk-12345",
        "Content-Type": "application/json",
        "X-Custom": "safe-value",
    }
    out = redact(headers)
    for name in ("Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key"):
        assert out[name] == REDACTED == "[REDACTED]"
    assert out["Content-Type"] == "application/json"
    assert out["X-Custom"] == "safe-value"
    assert headers["Authorization"] == "Bearer secret-token"  # input untouched


def test_redact_mixed_case_keeps_names() -> None:
    out = redact({"authorization": "Bearer token", "COOKIE": "session=abc", "x-api-key": "k"})
    assert out == {"authorization": REDACTED, "COOKIE": REDACTED, "x-api-key": REDACTED}


def test_redact_empty() -> None:
    assert redact({}) == {}


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("content-type", "Content-Type"),
        ("x-api-key", "X-Api-Key"),
        ("X-API-KEY", "X-Api-Key"),
        ("authorization", "Authorization"),
        ("www-authenticate", "Www-Authenticate"),
        ("x--y", "X--Y"),
        ("bad header", "bad header"),
    ],
)
def test_canonical_header_name(raw: str, canonical: str) -> None:
    assert canonical_header_name(raw) == canonical


def test_first_values_from_pairs_and_mapping() -> None:
    pairs = [("accept", "a"), ("Accept", "b"), ("x-api-key", "k")]
    assert first_values(pairs) == {"Accept": "a", "X-Api-Key": "k"}
    assert first_values({"content-type": "text/plain"}) == {"Content-Type": "text/plain"}


def test_build_canonicalises_and_redacts() -> None:
    capture = Capture.build(
        7,
        "/test",
        [("content-type", "application/json"), ("authorization", "Bearer secret")],
        b'{"model": "test"}',
        {"x-custom": "header-value", "set-cookie": "s=1"},
        b"{}",
    )
    assert capture.req_headers == {"Content-Type": "application/json", "Authorization": REDACTED}
    assert capture.resp_headers == {"X-Custom": "header-value", "Set-Cookie": REDACTED}
    assert capture.req_path == "/test"


def test_as_json_shape_and_base64() -> None:
    capture = Capture(
        id=3,
        req_path="/v1/chat/completions",
        req_headers={"Content-Type": "application/json"},
        req_body=b"\x00\xffreq",
        resp_headers={},
        resp_body=None,
    )
    doc = capture.as_json()
    assert list(doc) == ["id", "req_path", "req_headers", "req_body", "resp_headers", "resp_body"]
    assert doc["id"] == 3
    assert base64.b64decode(doc["req_body"]) == b"\x00\xffreq"
    assert doc["resp_body"] is None
    assert doc["resp_headers"] == {}
    # Serialisable as-is.
    assert json.loads(json.dumps(doc)) == doc


def test_as_json_empty_body_is_empty_string_not_null() -> None:
    assert Capture(id=0, req_body=b"").as_json()["req_body"] == ""


def test_capture_is_frozen() -> None:
    capture = Capture(id=1)
    with pytest.raises(AttributeError):
        capture.id = 2  # type: ignore[misc]
