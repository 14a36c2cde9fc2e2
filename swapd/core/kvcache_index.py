"""Saved llama-server slots: what they are called, which fit a launch, which to evict.

A *saved slot* is one slot's KV cache written by llama-server (``POST /slots/<id>?action=
save``) into the ``kvCache.dir`` directory. swapd keeps an index of them (model, command-
line hash, slot, tokens, size, times); the file store lives in ``swapd.supervise.kvcache``.
This module holds the pure parts: file names, the command-line fingerprint, the index's JSON
shape and the least-recently-used eviction choice (docs/kvcache.md).

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "SLOT_FILE_SUFFIX",
    "SavedSlot",
    "command_hash",
    "decode_index",
    "encode_index",
    "is_slot_file_name",
    "model_file_arguments",
    "over_budget",
    "slot_file_name",
]

#: Every file swapd asks llama-server to write ends so; only such files are ever deleted
#: as orphans, so a directory shared with other files is safe.
SLOT_FILE_SUFFIX = ".swapd-kv"

_INDEX_VERSION = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Options whose value is the port: a port is not part of what makes a cache reusable.
_PORT_OPTIONS = ("--port",)
_MODEL_OPTIONS = ("-m", "--model")


@attrs.frozen(kw_only=True)
class SavedSlot:
    """One slot file swapd wrote and trusts, as recorded in the index."""

    file: str  # the name inside the directory, never a path
    model: str
    cmd_hash: str
    slot: int
    tokens: int
    size: int  # bytes, as llama-server reported and the disk confirmed
    saved_at: float  # wall-clock seconds
    used_at: float  # last save or restore, for least-recently-used eviction

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "model": self.model,
            "cmdHash": self.cmd_hash,
            "slot": self.slot,
            "tokens": self.tokens,
            "size": self.size,
            "savedAt": self.saved_at,
            "usedAt": self.used_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SavedSlot:
        return cls(
            file=str(data["file"]),
            model=str(data["model"]),
            cmd_hash=str(data["cmdHash"]),
            slot=int(data["slot"]),
            tokens=int(data["tokens"]),
            size=int(data["size"]),
            saved_at=float(data["savedAt"]),
            used_at=float(data["usedAt"]),
        )


def slot_file_name(model_id: str, cmd_hash: str, slot: int) -> str:
    """The file a slot is saved to: keyed by model, command line and slot.

    llama-server accepts plain file names only (no directories), so the model ID is reduced
    to safe characters; the hash keeps two IDs that reduce alike apart.
    """
    safe = _UNSAFE.sub("_", model_id).strip("._") or "model"
    return f"{safe[:80]}-{cmd_hash}-slot{slot}{SLOT_FILE_SUFFIX}"


def is_slot_file_name(name: str) -> bool:
    return name.endswith(SLOT_FILE_SUFFIX) and "/" not in name


def model_file_arguments(argv: Sequence[str]) -> list[str]:
    """The model files named on a command line (``-m PATH``, ``--model PATH``, ``--model=PATH``),
    whose size and modification time join the fingerprint: a file replaced in place (a new
    quantisation under the same name) must not be fed an old cache."""
    found: list[str] = []
    for index, arg in enumerate(argv):
        if arg in _MODEL_OPTIONS and index + 1 < len(argv):
            found.append(argv[index + 1])
        elif arg.startswith("--model="):
            found.append(arg.partition("=")[2])
    return found


def command_hash(
    argv: Sequence[str],
    env: Sequence[str],
    model_files: Mapping[str, tuple[int, int] | None],
) -> str:
    """A fingerprint of everything that decides whether a saved cache fits a launch.

    The command line (model file, context size, quantisation, flags), the extra environment,
    and each model file's (size, mtime_ns) go in; the port's value does not, so a model that
    gets another port after a restart still finds its cache.
    """
    normalised: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            normalised.append("<port>")
            skip_next = False
            continue
        if arg in _PORT_OPTIONS:
            skip_next = True
        elif any(arg.startswith(option + "=") for option in _PORT_OPTIONS):
            arg = arg.partition("=")[0] + "=<port>"
        normalised.append(arg)
    payload = json.dumps(
        {
            "argv": normalised,
            "env": sorted(env),
            "files": {path: model_files[path] for path in sorted(model_files)},
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def encode_index(entries: Iterable[SavedSlot]) -> str:
    ordered = sorted(entries, key=lambda e: e.file)
    return json.dumps(
        {"version": _INDEX_VERSION, "slots": [e.as_json() for e in ordered]}, indent=1
    )


def decode_index(text: str) -> list[SavedSlot]:
    """The entries in ``text``; an unreadable index reads as empty (its files then become
    orphans and are deleted: a cache is an optimisation, never worth trusting blindly)."""
    try:
        data = json.loads(text)
        if data.get("version") != _INDEX_VERSION:
            return []
        return [SavedSlot.from_json(item) for item in data["slots"]]
    except (ValueError, TypeError, KeyError, AttributeError):
        return []


def over_budget(entries: Iterable[SavedSlot], budget: int) -> list[SavedSlot]:
    """The least recently used entries to delete so the rest fit in ``budget`` bytes."""
    ordered = sorted(entries, key=lambda e: (e.used_at, e.file))
    total = sum(e.size for e in ordered)
    evict: list[SavedSlot] = []
    for entry in ordered:
        if total <= budget:
            break
        evict.append(entry)
        total -= entry.size
    return evict
