"""The few GGUF header fields a memory estimate needs, and the estimate itself.

A GGUF file starts with a header (magic ``GGUF``, version, tensor count, metadata count)
and then typed key/value metadata. ``read_shape`` walks that metadata from a binary
stream the caller opened and keeps only what sizes the KV cache: the architecture,
``<arch>.block_count``, ``<arch>.embedding_length``, ``<arch>.attention.head_count``,
``<arch>.attention.head_count_kv``, the optional ``<arch>.attention.key_length`` /
``value_length`` and ``<arch>.context_length``. It stops reading at the tensor table.

``kv_cache_bytes`` and ``estimate_bytes`` turn that into a rough footprint: the model
file's size (the weights, loaded whole) plus the KV cache its context implies::

    kv = n_layer * n_ctx * n_head_kv * (key_length * k_bytes + value_length * v_bytes)

with the element sizes of the cache types (f16 by default; ``-ctk``/``-ctv`` change them)
and ``n_ctx`` from ``-c``/``--ctx-size`` in the command line, else the model's trained
context (what current llama-server uses when ``-c`` is absent or 0). It ignores compute
buffers, the CUDA/ROCm context (hundreds of MiB), partial offload (``-ngl``), sliding-
window and recurrent layers, and mmap sharing; treat it as a starting guess that the
first measurement replaces.

Pure: the caller opens files and passes file sizes; no trio.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import BinaryIO

import attrs

__all__ = [
    "GgufError",
    "GgufShape",
    "cache_types_in",
    "ctx_size_in",
    "estimate_bytes",
    "gguf_path_in",
    "kv_cache_bytes",
    "read_shape",
]

# gguf value types: fixed-size scalars by (struct format), then string=8, array=9.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_MAX_KEY = 1 << 16  # a sanity bound: real keys are short
_MAX_STRING = 1 << 30

#: Bytes per cache element for llama.cpp's cache types (block size and bytes per block).
CACHE_TYPE_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "iq4_nl": 18 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}


class GgufError(ValueError):
    """The stream is not a GGUF file this reader understands."""


@attrs.frozen
class GgufShape:
    """What the KV cache estimate needs from a GGUF header."""

    architecture: str
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    context_length: int
    key_length: int | None = None
    value_length: int | None = None

    @property
    def head_dims(self) -> tuple[int, int]:
        """Per-head key and value sizes (``embedding_length / head_count`` by default)."""
        default = self.embedding_length // max(self.head_count, 1)
        return (self.key_length or default, self.value_length or default)


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise GgufError("the file ends inside its header")
    return data


def _unpack(stream: BinaryIO, fmt: str) -> object:
    return struct.unpack("<" + fmt, _read(stream, struct.calcsize("<" + fmt)))[0]


def _integer(stream: BinaryIO, fmt: str) -> int:
    value = _unpack(stream, fmt)
    assert isinstance(value, int)
    return value


def _string(stream: BinaryIO) -> str:
    length = _integer(stream, "Q")
    if length > _MAX_STRING:
        raise GgufError("a header string is implausibly long")
    return _read(stream, length).decode("utf-8", errors="replace")


def _value(stream: BinaryIO, kind: int) -> object:
    """Read one value of ``kind``; arrays are skipped (never kept) to bound memory."""
    if kind in _SCALARS:
        return _unpack(stream, _SCALARS[kind])
    if kind == _STRING:
        return _string(stream)
    if kind == _ARRAY:
        item_kind = _integer(stream, "I")
        count = _integer(stream, "Q")
        if item_kind in _SCALARS:
            stream.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), 1)
        elif item_kind == _STRING:  # e.g. the vocabulary: skip, do not decode
            for _ in range(count):
                stream.seek(_integer(stream, "Q"), 1)
        else:
            for _ in range(count):
                _value(stream, item_kind)
        return None
    raise GgufError(f"unknown metadata value type {kind}")


def read_shape(stream: BinaryIO) -> GgufShape:
    """The model shape from the GGUF header at the start of ``stream`` (seekable)."""
    if _read(stream, 4) != b"GGUF":
        raise GgufError("not a GGUF file (no GGUF magic)")
    version = _integer(stream, "I")
    if version not in (2, 3):
        raise GgufError(f"GGUF version {version} is not supported (2 and 3 are)")
    _unpack(stream, "Q")  # tensor count
    count = _integer(stream, "Q")
    values: dict[str, object] = {}
    for _ in range(count):
        key = _string(stream)
        if len(key) > _MAX_KEY:
            raise GgufError("a metadata key is implausibly long")
        kind = _integer(stream, "I")
        value = _value(stream, kind)
        if value is not None:
            values[key] = value
    arch = values.get("general.architecture")
    if not isinstance(arch, str):
        raise GgufError("the header names no general.architecture")

    def number(name: str, default: int | None = None) -> int | None:
        value = values.get(f"{arch}.{name}", default)
        return int(value) if isinstance(value, int | float) else default

    required = {
        "block_count": number("block_count"),
        "embedding_length": number("embedding_length"),
        "head_count": number("attention.head_count"),
        "context_length": number("context_length"),
    }
    missing = [f"{arch}.{k}" for k, v in required.items() if v is None]
    if missing:
        raise GgufError("the header lacks " + ", ".join(missing))
    head_count = required["head_count"] or 0
    return GgufShape(
        architecture=arch,
        block_count=required["block_count"] or 0,
        embedding_length=required["embedding_length"] or 0,
        head_count=head_count,
        head_count_kv=number("attention.head_count_kv", head_count) or head_count,
        context_length=required["context_length"] or 0,
        key_length=number("attention.key_length"),
        value_length=number("attention.value_length"),
    )


def _option(argv: Sequence[str], names: tuple[str, ...]) -> str | None:
    """The value of the last ``--name value`` / ``--name=value`` in ``argv``."""
    found = None
    for index, arg in enumerate(argv):
        for name in names:
            if arg == name and index + 1 < len(argv):
                found = argv[index + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                found = arg[len(name) + 1 :]
    return found


def ctx_size_in(argv: Sequence[str]) -> int | None:
    """``-c``/``--ctx-size`` from a command line; None when absent, 0 or unreadable."""
    text = _option(argv, ("-c", "--ctx-size"))
    try:
        size = int(text) if text is not None else 0
    except ValueError:
        return None
    return size if size > 0 else None


def cache_types_in(argv: Sequence[str]) -> tuple[str, str]:
    """The K and V cache types (``-ctk``/``-ctv``), f16 when absent."""
    k = _option(argv, ("-ctk", "--cache-type-k")) or "f16"
    v = _option(argv, ("-ctv", "--cache-type-v")) or "f16"
    return k.lower(), v.lower()


def gguf_path_in(argv: Sequence[str]) -> str | None:
    """The model file a command line names: ``-m``/``--model``, else the first ``*.gguf``."""
    named = _option(argv, ("-m", "--model"))
    if named is not None:
        return named
    return next((arg for arg in argv if arg.lower().endswith(".gguf")), None)


def kv_cache_bytes(shape: GgufShape, n_ctx: int, cache_types: tuple[str, str]) -> int:
    """Bytes of KV cache for ``n_ctx`` tokens (unknown cache types count as f16)."""
    key_len, value_len = shape.head_dims
    k_bytes = CACHE_TYPE_BYTES.get(cache_types[0], 2.0)
    v_bytes = CACHE_TYPE_BYTES.get(cache_types[1], 2.0)
    per_token = shape.head_count_kv * (key_len * k_bytes + value_len * v_bytes)
    return int(shape.block_count * n_ctx * per_token)


def estimate_bytes(shape: GgufShape, file_size: int, argv: Sequence[str]) -> int:
    """The rough footprint: ``file_size`` plus the KV cache the command line implies."""
    n_ctx = ctx_size_in(argv) or shape.context_length
    return file_size + kv_cache_bytes(shape, n_ctx, cache_types_in(argv))
