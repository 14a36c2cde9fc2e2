"""ByteRing: the 100 KiB history behind every log (reference 10.2, 13.7 logMonitor tests)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.observe.ring import ByteRing


def test_reference_sequence() -> None:
    ring = ByteRing(10)
    ring.write(b"hello")
    assert ring.snapshot() == b"hello"
    ring.write(b"world")
    assert ring.snapshot() == b"helloworld"
    ring.write(b"12345")
    assert ring.snapshot() == b"world12345"


def test_write_larger_than_capacity_keeps_tail() -> None:
    ring = ByteRing(10)
    ring.write(b"abcdefghijklmnop")  # 16 bytes
    assert ring.snapshot() == b"ghijklmnop"
    assert len(ring) == 10


def test_large_write_after_wrap_keeps_tail() -> None:
    ring = ByteRing(10)
    ring.write(b"1234567")
    ring.write(b"abcdefghijklmnop")
    assert ring.snapshot() == b"ghijklmnop"
    ring.write(b"XY")
    assert ring.snapshot() == b"ijklmnopXY"


def test_empty_ring_snapshot_is_empty() -> None:
    assert ByteRing(10).snapshot() == b""


def test_exact_capacity_writes() -> None:
    ring = ByteRing(10)
    ring.write(b"0123456789")
    assert ring.snapshot() == b"0123456789"
    ring.write(b"abcdefghij")
    assert ring.snapshot() == b"abcdefghij"


def test_lazy_allocation_and_clear() -> None:
    ring = ByteRing(10)
    seen = [ring.allocated]
    ring.write(b"")
    seen.append(ring.allocated)
    ring.write(b"x")
    seen.append(ring.allocated)
    ring.clear()
    seen.append(ring.allocated)
    assert seen == [False, False, True, False]
    assert ring.snapshot() == b""
    assert len(ring) == 0
    ring.write(b"again")
    assert ring.snapshot() == b"again"


def test_snapshot_is_a_copy() -> None:
    ring = ByteRing(10)
    ring.write(b"abc")
    snap = bytearray(ring.snapshot())
    snap[0] = ord("z")
    assert ring.snapshot() == b"abc"


def test_zero_capacity_ignores_writes() -> None:
    ring = ByteRing(0)
    ring.write(b"abc")
    assert ring.snapshot() == b""
    assert not ring.allocated


def test_negative_capacity_rejected() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ByteRing(-1)


def test_accepts_bytearray_and_memoryview() -> None:
    ring = ByteRing(4)
    ring.write(bytearray(b"ab"))
    ring.write(memoryview(b"cdef"))
    assert ring.snapshot() == b"cdef"


@given(
    capacity=st.integers(min_value=1, max_value=32),
    writes=st.lists(st.binary(max_size=40), max_size=20),
)
def test_matches_naive_model(capacity: int, writes: list[bytes]) -> None:
    ring = ByteRing(capacity)
    expected = b""
    for chunk in writes:
        ring.write(chunk)
        expected = (expected + chunk)[-capacity:]
        assert ring.snapshot() == expected
        assert len(ring) == len(expected)
