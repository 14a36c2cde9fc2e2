"""Multipart uploads (audio, images) forwarded without holding them in memory.

swapd needs one thing from a form before it can forward it: the ``model`` field (unless
``?model=`` names the model), and it may have to rewrite that field (``useModelName``).
So it reads the start of the body, at most ``HEAD_BYTES``:

- the whole form fits: it is handled in memory (small forms, the common case);
- a complete ``model`` field is in the start (clients send fields before files, as the
  OpenAI SDK and ``curl -F model=… -F file=@…`` do): the start is forwarded, with the
  field rewritten if need be, followed by the rest of the body *as it arrives*;
- the ``model`` field comes after a large file: the body is spooled to a temporary file
  (at most ``HEAD_BYTES`` in memory) and scanned there through ``mmap``, then streamed
  from the file.

A form may have at most ``bodies.MAX_PARTS`` parts, and the scans run in a thread, so a
form of many tiny parts neither blocks the event loop nor costs seconds. A streamed body
goes upstream with chunked framing. Only the first ``model`` field is
rewritten in the streamed cases (a form has one).
"""

from __future__ import annotations

import mmap
import tempfile
from collections.abc import AsyncIterator
from functools import partial
from typing import IO

import trio

from swapd.web.bodies import (
    ByteSource,
    _boundary,
    _Field,
    _model_fields,
    parse_multipart_model,
    rewrite_multipart_model,
)

__all__ = ["HEAD_BYTES", "Upload", "read_upload"]

HEAD_BYTES = 1024 * 1024
_READ = 256 * 1024


class _Mapped:
    """A read-only file mapping that the multipart scanner can search like ``bytes``."""

    def __init__(self, file: IO[bytes]) -> None:
        self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)

    def __len__(self) -> int:
        return len(self._map)

    def __getitem__(self, index: slice, /) -> bytes:
        return self._map[index]

    def find(self, sub: bytes, start: int = 0, end: int | None = None, /) -> int:
        return self._map.find(sub, start, len(self._map) if end is None else end)

    def startswith(self, prefix: bytes, start: int = 0, end: int | None = None, /) -> bool:
        stop = start + len(prefix)
        if end is not None and stop > end:
            return False
        return self._map[start:stop] == prefix

    def close(self) -> None:
        self._map.close()


class Upload:
    """A multipart body being forwarded; see the module docstring. Close it when done."""

    def __init__(
        self,
        content_type: str,
        *,
        head: bytes,
        rest: AsyncIterator[bytes] | None = None,
        spool: IO[bytes] | None = None,
        field: _Field | None = None,
        model: str | None = None,
    ) -> None:
        self.content_type = content_type
        self.model = model
        self._head = head
        self._rest = rest
        self._spool = spool
        self._field = field

    @property
    def in_memory(self) -> bool:
        return self._rest is None and self._spool is None

    def body(self, new_model: str | None = None) -> bytes | AsyncIterator[bytes]:
        """The body to forward, its first ``model`` value replaced by ``new_model``."""
        if self.in_memory:
            if new_model is None:
                return self._head
            return rewrite_multipart_model(self.content_type, self._head, new_model)[1]
        replacement = None
        if new_model is not None and self._field is not None and new_model != self.model:
            replacement = new_model.encode("utf-8")
            dash = b"--" + _boundary(self.content_type)
            if b"\n" + dash in b"\n" + replacement:
                raise ValueError("the new model name contains the multipart boundary")
        return self._stream(replacement)

    async def _stream(self, replacement: bytes | None) -> AsyncIterator[bytes]:
        field = self._field
        if self._spool is not None:
            spool = self._spool
            spool.seek(0)
            offset = 0
            while chunk := spool.read(_READ):
                yield _replace(chunk, offset, field, replacement)
                offset += len(chunk)
                await trio.lowlevel.checkpoint()
            return
        yield _replace(self._head, 0, field, replacement)
        assert self._rest is not None
        async for chunk in self._rest:
            yield chunk

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _replace(chunk: bytes, offset: int, field: _Field | None, new: bytes | None) -> bytes:
    """``chunk`` (at ``offset`` in the body) with the model value swapped for ``new``.

    The value is small and was found whole, but may straddle two reads of a spool."""
    if new is None or field is None:
        return chunk
    start, end = field.start - offset, field.end - offset
    if end <= 0 or start >= len(chunk):
        return chunk
    head = chunk[: max(start, 0)]
    tail = chunk[max(end, 0) :]
    return head + (new if start >= 0 else b"") + tail


async def read_upload(
    content_type: str, chunks: AsyncIterator[bytes], *, head_limit: int = HEAD_BYTES
) -> Upload:
    """Read as much of the form as needed to know its model; see the module docstring.

    Raises ValueError for a body that is not a multipart form (or not a complete one)."""
    it = aiter(chunks)
    head = bytearray()
    ended = False
    while len(head) < head_limit:
        try:
            head += await anext(it)
        except StopAsyncIteration:
            ended = True
            break
    data = bytes(head)
    # The scans below are Python code over up to HEAD_BYTES (or a whole spooled body):
    # run in a thread so the event loop keeps serving meanwhile.
    if ended:
        model = await trio.to_thread.run_sync(parse_multipart_model, content_type, data)
        return Upload(content_type, head=data, model=model)

    _, fields = await trio.to_thread.run_sync(
        partial(_model_fields, content_type, data, partial=True)
    )
    if fields:
        return Upload(
            content_type, head=data, rest=it, field=fields[0], model=_value(data, fields[0])
        )

    spool: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Upload.close
    try:
        spool.write(data)
        async for chunk in it:
            spool.write(chunk)
        spool.flush()
        mapped = _Mapped(spool)
        try:
            _, fields = await trio.to_thread.run_sync(_model_fields, content_type, mapped)
            field = fields[0] if fields else None
            model = _value(mapped, field) if field is not None else None
        finally:
            mapped.close()
    except BaseException:
        spool.close()
        raise
    return Upload(content_type, head=b"", spool=spool, field=field, model=model)


def _value(body: ByteSource, field: _Field) -> str:
    return body[field.start : field.end].decode("utf-8", "replace")
