"""A tiny random-weight llama GGUF model for end-to-end tests, written from scratch.

``write_tiny_gguf(path)`` writes a ~1 MB model that llama.cpp's ``llama-server`` loads in
milliseconds and runs at thousands of tokens per second on one CPU core. Its text is
gibberish, but everything a proxy cares about is real: tokenization, the chat template,
SSE streaming, ``usage`` and ``timings``, embeddings (``--embeddings --pooling mean``).

Properties the tests rely on:

- **No dependencies and byte-reproducible.** The GGUF container is written by hand (it is
  a small format) and the weights come from ``random.Random(seed)``, whose sequence Python
  keeps stable, so the same ``TinyModel`` gives the same bytes on every machine.
- **It never stops on its own.** End-of-text, control and raw-byte tokens can never be
  sampled, so a request with ``max_tokens=N`` always produces exactly ``N`` tokens with
  ``finish_reason: "length"``, and the text is always valid ASCII. How: channel 0 of every
  token embedding is a constant, no layer writes to channel 0, so after the final RMSNorm
  it is still a large positive constant; the output matrix gives those tokens a large
  negative weight on channel 0 (a logit of about -50). ``TinyModel(may_stop=True)`` drops
  the trick, for a model that ends replies at random.
- **A ChatML chat template**, so ``/v1/chat/completions`` works without ``--chat-template``.

``python -m swapd.testing.gguf OUT.gguf`` writes the default model.
"""

from __future__ import annotations

import argparse
import math
import random
import struct
import sys
from array import array
from collections.abc import Sequence
from pathlib import Path

import attrs

__all__ = ["TinyModel", "tiny_gguf_bytes", "write_tiny_gguf"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Words the vocabulary knows as whole tokens (with and without a leading space), so the
# gibberish looks like words and prompts tokenize into few tokens.
_WORD_LINES = (
    "a an the and or but not no yes if then else when while for of to in on at by with from",
    "as is are was be been it this that these those here there what which who how why",
    "model models server proxy swap swapd group load loaded unload start stop ready sleep",
    "wake request response stream token tokens chat message reply answer question prompt",
    "local cache queue health metric metrics time fast slow small tiny random test tests",
    "hello world data text line word number value port process signal memory slot",
    "one two three four five six seven eight nine ten first last next more less",
    "ing ed er est ly tion ness ment able",
)
WORDS = tuple(word for line in _WORD_LINES for word in line.split())

# GGUF value types (gguf.h: enum gguf_type) and tensor types (ggml.h: enum ggml_type).
_UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY = 4, 5, 6, 7, 8, 9
_GGML_F32 = 0
_ALIGNMENT = 32

# Token types (llama.cpp's llama_token_type).
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6

_Value = str | int | float | bool | list[str] | list[float] | list[int]


@attrs.frozen
class TinyModel:
    """The shape of the generated model. The defaults give 0.9 MB, about 230k weights."""

    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 192
    n_ctx: int = 4096  # the trained context length it claims
    seed: int = 20240601
    name: str = "swapd-tiny-random"
    may_stop: bool = False  # True: end-of-text and control tokens can be sampled

    def __attrs_post_init__(self) -> None:
        if self.n_embd % self.n_head or self.n_head % self.n_head_kv:
            raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError("the head size must be even (RoPE rotates pairs)")


def _vocabulary() -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece ("llama") vocabulary: specials, byte fallback, characters, words."""
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []

    def add(text: str, score: float, kind: int) -> None:
        tokens.append(text)
        scores.append(score)
        types.append(kind)

    add("<unk>", 0.0, _UNKNOWN)  # 0
    for special in ("<s>", "</s>", "<|im_start|>", "<|im_end|>"):  # 1 BOS, 2 EOS, 3, 4 EOT
        add(special, 0.0, _CONTROL)
    for byte in range(256):  # any UTF-8 text tokenizes; llama.cpp finds "\n" as <0x0A>
        add(f"<0x{byte:02X}>", 0.0, _BYTE)
    known = set(tokens)
    characters = ["\u2581"] + [chr(code) for code in range(33, 127)]  # "▁" is SPM's space
    for rank, char in enumerate(characters):
        add(char, -1000.0 - rank, _NORMAL)
        known.add(char)
    # SentencePiece merges pairs of known pieces, so every prefix of a word must be a token.
    pieces: list[str] = []
    for word in WORDS:
        for form in ("\u2581" + word, word):
            for end in range(2, len(form) + 1):
                if (piece := form[:end]) not in known:
                    known.add(piece)
                    pieces.append(piece)
    for rank, piece in enumerate(pieces):
        add(piece, -float(rank), _NORMAL)
    return tokens, scores, types


class _Tensor:
    """A float32 tensor: numpy-style shape (rows, columns) and row-major values."""

    def __init__(self, name: str, shape: Sequence[int], values: array[float]) -> None:
        assert len(values) == math.prod(shape)
        self.name = name
        self.shape = tuple(shape)
        self.values = values


class _Weights:
    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - reproducible weights, not secrets

    def normal(self, rows: int, columns: int, std: float) -> array[float]:
        gauss = self._rng.gauss
        return array("f", [gauss(0.0, std) for _ in range(rows * columns)])

    @staticmethod
    def ones(size: int) -> array[float]:
        return array("f", [1.0]) * size


def _tensors(model: TinyModel, types: Sequence[int]) -> list[_Tensor]:
    weights = _Weights(model.seed)
    n_vocab, d, ff = len(types), model.n_embd, model.n_ff
    head = d // model.n_head
    kv = model.n_head_kv * head
    suppress = not model.may_stop

    def zero_row0(values: array[float], columns: int) -> array[float]:
        # Row 0 of an output projection writes residual channel 0: keep it untouched.
        if suppress:
            values[0:columns] = array("f", [0.0]) * columns
        return values

    embeddings = weights.normal(n_vocab, d, 1.0)
    if suppress:
        embeddings[0::d] = array("f", [4.0]) * n_vocab  # channel 0: a constant "bias" input
    tensors = [_Tensor("token_embd.weight", (n_vocab, d), embeddings)]
    for layer in range(model.n_layer):
        p = f"blk.{layer}."
        tensors += [
            _Tensor(p + "attn_norm.weight", (d,), weights.ones(d)),
            _Tensor(p + "attn_q.weight", (d, d), weights.normal(d, d, d**-0.5)),
            _Tensor(p + "attn_k.weight", (kv, d), weights.normal(kv, d, d**-0.5)),
            _Tensor(p + "attn_v.weight", (kv, d), weights.normal(kv, d, d**-0.5)),
            _Tensor(p + "attn_output.weight", (d, d), zero_row0(weights.normal(d, d, d**-0.5), d)),
            _Tensor(p + "ffn_norm.weight", (d,), weights.ones(d)),
            _Tensor(p + "ffn_gate.weight", (ff, d), weights.normal(ff, d, d**-0.5)),
            _Tensor(p + "ffn_up.weight", (ff, d), weights.normal(ff, d, d**-0.5)),
            _Tensor(p + "ffn_down.weight", (d, ff), zero_row0(weights.normal(d, ff, ff**-0.5), ff)),
        ]
    output = weights.normal(n_vocab, d, 0.3)
    output[0::d] = array("f", [-16.0 if suppress and t != _NORMAL else 0.0 for t in types])
    tensors += [
        _Tensor("output_norm.weight", (d,), weights.ones(d)),
        _Tensor("output.weight", (n_vocab, d), output),
    ]
    return tensors


def _metadata(model: TinyModel) -> tuple[dict[str, tuple[int, _Value]], list[int]]:
    tokens, scores, types = _vocabulary()
    arch = "llama"
    head = model.n_embd // model.n_head
    metadata: dict[str, tuple[int, _Value]] = {
        "general.architecture": (_STRING, arch),
        "general.name": (_STRING, model.name),
        "general.file_type": (_UINT32, 0),  # all F32
        f"{arch}.vocab_size": (_UINT32, len(tokens)),
        f"{arch}.context_length": (_UINT32, model.n_ctx),
        f"{arch}.embedding_length": (_UINT32, model.n_embd),
        f"{arch}.block_count": (_UINT32, model.n_layer),
        f"{arch}.feed_forward_length": (_UINT32, model.n_ff),
        f"{arch}.attention.head_count": (_UINT32, model.n_head),
        f"{arch}.attention.head_count_kv": (_UINT32, model.n_head_kv),
        f"{arch}.attention.layer_norm_rms_epsilon": (_FLOAT32, 1e-5),
        f"{arch}.rope.dimension_count": (_UINT32, head),
        f"{arch}.rope.freq_base": (_FLOAT32, 10000.0),
        "tokenizer.ggml.model": (_STRING, "llama"),
        "tokenizer.ggml.pre": (_STRING, "default"),
        "tokenizer.ggml.tokens": (_STRING, tokens),
        "tokenizer.ggml.scores": (_FLOAT32, scores),
        "tokenizer.ggml.token_type": (_INT32, types),
        "tokenizer.ggml.unknown_token_id": (_UINT32, 0),
        "tokenizer.ggml.bos_token_id": (_UINT32, 1),
        "tokenizer.ggml.eos_token_id": (_UINT32, 2),
        "tokenizer.ggml.eot_token_id": (_UINT32, 4),
        "tokenizer.ggml.padding_token_id": (_UINT32, 0),
        "tokenizer.ggml.add_bos_token": (_BOOL, True),
        "tokenizer.ggml.add_eos_token": (_BOOL, False),
        "tokenizer.ggml.add_space_prefix": (_BOOL, True),
        "tokenizer.chat_template": (_STRING, CHATML_TEMPLATE),
    }
    return metadata, types


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _scalar(kind: int, value: str | int | float | bool) -> bytes:
    if kind == _STRING:
        assert isinstance(value, str)
        return _string(value)
    fmt = {_UINT32: "<I", _INT32: "<i", _FLOAT32: "<f", _BOOL: "<?"}[kind]
    return struct.pack(fmt, value)


def _value(kind: int, value: _Value) -> bytes:
    """A metadata value: its type tag, then the scalar or (for lists) a typed array."""
    if isinstance(value, list):
        items = b"".join(_scalar(kind, item) for item in value)
        return struct.pack("<IIQ", _ARRAY, kind, len(value)) + items
    return struct.pack("<I", kind) + _scalar(kind, value)


def _pad(size: int) -> int:
    return -size % _ALIGNMENT


def tiny_gguf_bytes(model: TinyModel = TinyModel()) -> bytes:
    """The GGUF (version 3) file for ``model``: header, metadata, tensor table, data."""
    metadata, types = _metadata(model)
    tensors = _tensors(model, types)
    blobs = []
    for tensor in tensors:
        data = tensor.values
        if sys.byteorder == "big":  # GGUF is little-endian
            data = array("f", data)
            data.byteswap()
        blobs.append(data.tobytes())
    out = bytearray(b"GGUF")
    out += struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, (kind, value) in metadata.items():
        out += _string(key) + _value(kind, value)
    offset = 0
    for tensor, blob in zip(tensors, blobs, strict=True):
        dims = tensor.shape[::-1]  # ggml lists the fastest-varying dimension first
        out += _string(tensor.name) + struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
        out += struct.pack("<IQ", _GGML_F32, offset)
        offset += len(blob) + _pad(len(blob))
    out += bytes(_pad(len(out)))
    for blob in blobs:
        out += blob + bytes(_pad(len(blob)))
    return bytes(out)


def write_tiny_gguf(path: str | Path, model: TinyModel = TinyModel()) -> Path:
    """Write ``model`` to ``path`` (replacing it atomically) and return the path."""
    path = Path(path)
    staged = path.with_name(path.name + ".tmp")
    staged.write_bytes(tiny_gguf_bytes(model))
    staged.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m swapd.testing.gguf", description="Write a tiny random llama GGUF."
    )
    parser.add_argument("output", type=Path)
    parser.add_argument("--may-stop", action="store_true", help="let it sample end-of-text")
    parser.add_argument("--seed", type=int, default=TinyModel().seed)
    args = parser.parse_args(argv)
    write_tiny_gguf(args.output, TinyModel(seed=args.seed, may_stop=args.may_stop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
