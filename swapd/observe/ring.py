"""A byte-budgeted ring buffer: the history behind every log stream (reference 10.2).

Owns only bytes: writes append, the oldest bytes are overwritten once ``capacity`` is
reached, and a single write larger than the whole buffer keeps only its tail. The storage
is allocated on the first write and released by :meth:`ByteRing.clear`, so a log that
never receives output (or a stopped model's log) costs nothing.

Implementation: one fixed ``bytearray`` used circularly (``_start`` + ``_size``); every
write and snapshot is at most two slice copies, never a per-byte Python loop.

Example::

    ring = ByteRing(10)
    ring.write(b"helloworld")
    ring.write(b"12345")
    assert ring.snapshot() == b"world12345"
"""

from __future__ import annotations

__all__ = ["ByteRing"]


class ByteRing:
    """Keeps the last ``capacity`` bytes written; see the module docstring."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity}")
        self._capacity = capacity
        self._buf: bytearray | None = None
        self._start = 0
        self._size = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def allocated(self) -> bool:
        """Whether the backing storage exists (it is created by the first write)."""
        return self._buf is not None

    def __len__(self) -> int:
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``, overwriting the oldest bytes when full."""
        n = len(data)
        cap = self._capacity
        if n == 0 or cap == 0:
            return
        if self._buf is None:
            self._buf = bytearray(cap)
        buf = self._buf
        if n >= cap:
            buf[:] = memoryview(data)[n - cap :]
            self._start = 0
            self._size = cap
            return
        end = (self._start + self._size) % cap
        first = min(n, cap - end)
        view = memoryview(data)
        buf[end : end + first] = view[:first]
        if first < n:
            buf[: n - first] = view[first:]
        overflow = self._size + n - cap
        if overflow > 0:
            self._start = (self._start + overflow) % cap
            self._size = cap
        else:
            self._size += n

    def snapshot(self) -> bytes:
        """A copy of the retained bytes, oldest first (``b""`` when empty)."""
        buf = self._buf
        if buf is None or self._size == 0:
            return b""
        end = self._start + self._size
        if end <= self._capacity:
            return bytes(buf[self._start : end])
        return bytes(buf[self._start :]) + bytes(buf[: end - self._capacity])

    def clear(self) -> None:
        """Forget everything and release the storage (the next write allocates again)."""
        self._buf = None
        self._start = 0
        self._size = 0
