"""Request/response captures: what one metered exchange looked like (reference 8.4).

Owns the capture record, its size accounting, header redaction and the byte-budgeted
FIFO store. It knows nothing about HTTP frameworks: the web layer hands in header pairs
and bodies *after* auth stripping / body rewriting (request side) and decompression
(response side), with the metric's ID.

- Headers keep the **first value** per name, keyed by Go's canonical form
  (``content-type`` → ``Content-Type``, ``x-api-key`` → ``X-Api-Key``).
- ``authorization``, ``proxy-authorization``, ``cookie``, ``set-cookie`` and ``x-api-key``
  (any case) are replaced by ``[REDACTED]``.
- size = len(path) + len(req body) + len(resp body) + Σ(len(name) + len(value)) over both
  header maps (UTF-8 bytes, as Go's ``len``).
- The store evicts the oldest captures until a new one fits; a capture larger than the
  whole budget is skipped; a budget of 0 disables capturing.
"""

from __future__ import annotations

import base64
import collections
import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from swapd.observe.metrics import decode_content

__all__ = [
    "REDACTED",
    "Capture",
    "CaptureRecorder",
    "CaptureStatistics",
    "CaptureStore",
    "canonical_header_name",
    "first_values",
    "redact",
]

REDACTED: Final = "[REDACTED]"
_SENSITIVE: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@functools.lru_cache(maxsize=1024)  # header names repeat on every request
def canonical_header_name(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``x-api-key`` → ``X-Api-Key``.

    Names with characters outside the HTTP token set are returned unchanged, as in Go."""
    if not _TOKEN.fullmatch(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def first_values(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Canonical name → first value, from a mapping or (name, value) pairs."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(canonical_header_name(name), value)
    return out


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy with credential headers' values replaced by ``[REDACTED]``; names kept."""
    return {k: REDACTED if k.lower() in _SENSITIVE else v for k, v in headers.items()}


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def _headers_size(headers: Mapping[str, str]) -> int:
    return sum(_utf8_len(k) + _utf8_len(v) for k, v in headers.items())


def _b64(body: bytes | None) -> str | None:
    return None if body is None else base64.b64encode(body).decode("ascii")


@attrs.frozen(eq=True, hash=False)
class Capture:
    """One captured exchange. Build with :meth:`build` to canonicalise and redact."""

    id: int
    req_path: str = ""
    req_headers: Mapping[str, str] = attrs.field(factory=dict)
    req_body: bytes | None = None
    resp_headers: Mapping[str, str] = attrs.field(factory=dict)
    resp_body: bytes | None = None

    @classmethod
    def build(
        cls,
        id: int,  # noqa: A002 - the JSON field is called "id"
        req_path: str,
        req_headers: Mapping[str, str] | Iterable[tuple[str, str]],
        req_body: bytes | None,
        resp_headers: Mapping[str, str] | Iterable[tuple[str, str]],
        resp_body: bytes | None,
    ) -> Capture:
        """Canonical names, first value only, credentials redacted."""
        return cls(
            id=id,
            req_path=req_path,
            req_headers=redact(first_values(req_headers)),
            req_body=req_body,
            resp_headers=redact(first_values(resp_headers)),
            resp_body=resp_body,
        )

    @property
    def size(self) -> int:
        """Bytes this capture counts against the store's budget (8.4's formula)."""
        return (
            _utf8_len(self.req_path)
            + len(self.req_body or b"")
            + len(self.resp_body or b"")
            + _headers_size(self.req_headers)
            + _headers_size(self.resp_headers)
        )

    def as_json(self) -> dict[str, Any]:
        """The ``GET /api/captures/<id>`` body: bodies as base64 strings, ``None`` if absent."""
        return {
            "id": self.id,
            "req_path": self.req_path,
            "req_headers": dict(self.req_headers),
            "req_body": _b64(self.req_body),
            "resp_headers": dict(self.resp_headers),
            "resp_body": _b64(self.resp_body),
        }


@attrs.frozen
class CaptureStatistics:
    capacity: int
    count: int
    bytes: int
    added: int
    skipped: int
    evicted: int


class CaptureStore:
    """Captures by ID within ``capacity_bytes``, oldest evicted first; 0 disables."""

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError(f"capacity must be >= 0, not {capacity_bytes}")
        self.capacity = capacity_bytes
        # Each capture with its size, computed once (the formula walks every header).
        self._items: collections.OrderedDict[int, tuple[Capture, int]] = collections.OrderedDict()
        self._bytes = 0
        self._added = 0
        self._skipped = 0
        self._evicted = 0

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def add(self, capture: Capture) -> bool:
        """Store ``capture``; False (nothing stored) if disabled or it alone is too big."""
        size = capture.size
        if not self.enabled or size > self.capacity:
            self._skipped += 1
            return False
        old = self._items.pop(capture.id, None)
        if old is not None:
            self._bytes -= old[1]
        while self._items and self._bytes + size > self.capacity:
            _, (_, evicted_size) = self._items.popitem(last=False)
            self._bytes -= evicted_size
            self._evicted += 1
        self._items[capture.id] = (capture, size)
        self._bytes += size
        self._added += 1
        return True

    def get(self, capture_id: int) -> Capture | None:
        item = self._items.get(capture_id)
        return item[0] if item is not None else None

    def __len__(self) -> int:
        return len(self._items)

    def statistics(self) -> CaptureStatistics:
        return CaptureStatistics(
            capacity=self.capacity,
            count=len(self._items),
            bytes=self._bytes,
            added=self._added,
            skipped=self._skipped,
            evicted=self._evicted,
        )


class CaptureRecorder:
    """Collects one exchange while its response streams through, within ``limit`` bytes.

    The response body is kept as it arrived (encoded) and decoded once at the end, so the
    relay does no per-chunk work beyond a list append. A body past the limit is dropped
    at once: that capture could never be stored anyway."""

    def __init__(
        self,
        limit: int,
        *,
        req_path: str,
        req_headers: Iterable[tuple[str, str]],
        req_body: bytes | None,
        resp_headers: Iterable[tuple[str, str]],
    ) -> None:
        self._limit = limit
        self._req_path = req_path
        self._req_headers = list(req_headers)
        self._req_body = req_body
        self._resp_headers = list(resp_headers)
        self._chunks: list[bytes] = []
        self._size = len(req_body or b"")
        self.overflowed = self._size > limit

    def feed(self, chunk: bytes) -> None:
        if self.overflowed:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self.overflowed = True
            self._chunks.clear()
        else:
            self._chunks.append(chunk)

    def build(self, capture_id: int = -1) -> Capture | None:
        """The capture (its ID is its metrics record's), or None if it cannot fit or its
        compressed body is corrupt."""
        if self.overflowed:
            return None
        encoding = ""
        headers = []
        for name, value in self._resp_headers:
            if name.lower() == "content-encoding":
                encoding = value
            else:
                headers.append((name, value))
        body = decode_content(b"".join(self._chunks), encoding, self._limit)
        if body is None:
            return None
        capture = Capture.build(
            capture_id, self._req_path, self._req_headers, self._req_body, headers, body
        )
        return capture if capture.size <= self._limit else None
