"""The GGUF header reader and the rough estimate (swapd.core.gguf_meta), on real GGUF bytes."""

from __future__ import annotations

import io
import struct

import pytest

from swapd.core.gguf_meta import (
    GgufError,
    GgufShape,
    cache_types_in,
    ctx_size_in,
    estimate_bytes,
    gguf_path_in,
    kv_cache_bytes,
    read_shape,
)
from swapd.testing.gguf import TinyModel, tiny_gguf_bytes


def test_reads_the_shape_the_writer_wrote() -> None:
    model = TinyModel(n_embd=64, n_layer=3, n_head=4, n_head_kv=2, n_ctx=2048)
    shape = read_shape(io.BytesIO(tiny_gguf_bytes(model)))
    assert shape == GgufShape(
        architecture="llama",
        block_count=3,
        embedding_length=64,
        head_count=4,
        head_count_kv=2,
        context_length=2048,
    )
    assert shape.head_dims == (16, 16)


def test_kv_cache_formula() -> None:
    shape = GgufShape("llama", 32, 4096, 32, 8, 8192)
    # 32 layers * 8 kv heads * 128 dims * (2 bytes K + 2 bytes V) = 128 KiB per token.
    assert kv_cache_bytes(shape, 1, ("f16", "f16")) == 128 * 1024
    assert kv_cache_bytes(shape, 8192, ("f16", "f16")) == 1024**3
    assert kv_cache_bytes(shape, 8192, ("q8_0", "q8_0")) == int(1024**3 * 34 / 64)
    explicit = GgufShape("x", 1, 4096, 32, 1, 1, key_length=192, value_length=128)
    assert kv_cache_bytes(explicit, 1, ("f32", "f16")) == 192 * 4 + 128 * 2


def test_estimate_uses_ctx_size_from_argv_else_trained_context() -> None:
    shape = GgufShape("llama", 32, 4096, 32, 8, 8192)
    per_token = 128 * 1024
    assert estimate_bytes(shape, 1000, ["llama-server", "-m", "x.gguf"]) == 1000 + 8192 * per_token
    assert estimate_bytes(shape, 1000, ["llama-server", "-c", "1024"]) == 1000 + 1024 * per_token
    assert estimate_bytes(shape, 0, ["s", "--ctx-size=2048"]) == 2048 * per_token
    assert estimate_bytes(shape, 0, ["s", "-c", "0"]) == 8192 * per_token  # 0: the model's


def test_argv_readers() -> None:
    argv = ["llama-server", "--port", "9", "-m", "/m/a.gguf", "-c", "4096", "-ctk", "Q8_0"]
    assert gguf_path_in(argv) == "/m/a.gguf"
    assert gguf_path_in(["server", "--model=/m/b.gguf"]) == "/m/b.gguf"
    assert gguf_path_in(["server", "/m/c.GGUF"]) == "/m/c.GGUF"
    assert gguf_path_in(["vllm", "serve", "org/model"]) is None
    assert ctx_size_in(argv) == 4096
    assert ctx_size_in(["s", "-c", "lots"]) is None
    assert ctx_size_in(["s"]) is None
    assert cache_types_in(argv) == ("q8_0", "f16")


def test_rejects_what_is_not_gguf() -> None:
    with pytest.raises(GgufError, match="magic"):
        read_shape(io.BytesIO(b"PK\x03\x04" + bytes(40)))
    with pytest.raises(GgufError, match="version 9"):
        read_shape(io.BytesIO(b"GGUF" + struct.pack("<IQQ", 9, 0, 0)))
    truncated = tiny_gguf_bytes()[:200]
    with pytest.raises(GgufError, match="ends inside"):
        read_shape(io.BytesIO(truncated))
    no_arch = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    with pytest.raises(GgufError, match="architecture"):
        read_shape(io.BytesIO(no_arch))
