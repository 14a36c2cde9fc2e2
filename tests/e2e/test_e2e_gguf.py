"""The tiny GGUF writer: reproducible bytes and a well-formed file (no llama-server needed,
so these run in the default suite too). That llama.cpp loads it and never stops early is
shown by the end-to-end tests."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import Any

import pytest

from swapd.testing.gguf import TinyModel, tiny_gguf_bytes, write_tiny_gguf

# The default model's digest: a change here changes every e2e test's gibberish.
TINY_SHA256 = "739aee520e720ab43c663dee1f933079d7200fb387776e2aa81a0acaf5334a57"


SCALARS = {4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q"}  # GGUF type -> struct format


class Reader:
    """Just enough of a GGUF reader to check what the writer wrote."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.take("<Q")
        self.pos += size
        return self.data[self.pos - size : self.pos].decode()

    def value(self, kind: int) -> Any:
        if kind == 8:
            return self.string()
        if kind == 9:
            item_kind, count = self.take("<I"), self.take("<Q")
            return [self.value(item_kind) for _ in range(count)]
        return self.take(SCALARS[kind])

    def parse(self) -> tuple[dict[str, Any], list[tuple[str, list[int], int, int]], int]:
        assert self.data[:4] == b"GGUF"
        self.pos = 4
        assert self.take("<I") == 3
        n_tensors, n_kv = self.take("<Q"), self.take("<Q")
        metadata = {}
        for _ in range(n_kv):
            key = self.string()
            metadata[key] = self.value(self.take("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = self.string()
            dims = [self.take("<Q") for _ in range(self.take("<I"))]
            tensors.append((name, dims, self.take("<I"), self.take("<Q")))
        data_start = self.pos + (-self.pos % 32)
        return metadata, tensors, data_start


def test_tiny_model_is_byte_reproducible(tmp_path: Path) -> None:
    data = tiny_gguf_bytes()
    assert hashlib.sha256(data).hexdigest() == TINY_SHA256
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert path.read_bytes() == data
    assert tiny_gguf_bytes(TinyModel(seed=1)) != data
    assert tiny_gguf_bytes(TinyModel(may_stop=True)) != data


@pytest.mark.parametrize(
    "model", [TinyModel(), TinyModel(n_embd=32, n_layer=1, n_head=2, n_head_kv=1, n_ff=48)]
)
def test_tiny_model_is_a_well_formed_llama_gguf(model: TinyModel) -> None:
    data = tiny_gguf_bytes(model)
    metadata, tensors, data_start = Reader(data).parse()

    assert metadata["general.architecture"] == "llama"
    assert metadata["llama.embedding_length"] == model.n_embd
    assert metadata["llama.block_count"] == model.n_layer
    assert metadata["llama.rope.dimension_count"] == model.n_embd // model.n_head
    tokens = metadata["tokenizer.ggml.tokens"]
    assert metadata["llama.vocab_size"] == len(tokens)
    assert len(set(tokens)) == len(tokens)
    assert len(metadata["tokenizer.ggml.scores"]) == len(metadata["tokenizer.ggml.token_type"])
    assert tokens[:5] == ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    assert tokens[5 + 0x0A] == "<0x0A>"  # byte fallback: llama.cpp's newline token
    assert "\u2581model" in tokens and "\u2581mode" in tokens  # words and their prefixes
    assert "<|im_start|>" in metadata["tokenizer.chat_template"]

    names = [name for name, *_ in tensors]
    assert len(names) == 3 + 9 * model.n_layer
    assert names[0] == "token_embd.weight" and names[-1] == "output.weight"
    shapes = {name: dims for name, dims, _, _ in tensors}
    assert shapes["token_embd.weight"] == [model.n_embd, len(tokens)]  # ggml order
    assert shapes["blk.0.ffn_down.weight"] == [model.n_ff, model.n_embd]
    end = 0
    for _, dims, kind, offset in tensors:
        assert kind == 0  # F32
        assert offset % 32 == 0
        assert offset >= end  # in order, no overlap
        end = offset + 4 * dims[0] * (dims[1] if len(dims) > 1 else 1)
    assert data_start + end + (-end % 32) == len(data)


def test_shape_checks() -> None:
    with pytest.raises(ValueError, match="n_head"):
        TinyModel(n_embd=60, n_head=8)
