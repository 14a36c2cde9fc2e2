"""Checks of the ``keys`` section (scoped API keys, docs/keys.md) and each key's digest.

Every key ends with one ``digest``: the SHA-256 of its secret, from ``secret`` (inline or
``${env.NAME}``, expanded before this runs), from the file ``secretFile`` names (read at
load and at every reload) or given as ``sha256``. Exactly one form per key; names are
unique because they label metrics and activity rows.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from swapd.config.shape import Problems

__all__ = ["check_keys"]

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


def check_keys(data: dict[str, Any], problems: Problems) -> None:
    """Validate ``keys`` and set each key's ``digest`` in place."""
    seen: set[str] = set()
    # A relative secretFile is relative to the config file (not for text without a file).
    file = problems.file
    base = "" if file.startswith("<") else os.path.dirname(os.path.abspath(file))
    for index, key in enumerate(data.get("keys", ())):
        if not isinstance(key, dict):
            continue  # the shape check reported it
        here = ("keys", index)
        name = key.get("name", "")
        if not _NAME.fullmatch(name):
            problems.add((*here, "name"), f"key name {name!r} must be 1-64 of A-Z a-z 0-9 _ . @ -")
        elif name in seen:
            problems.add((*here, "name"), f"key name {name!r} is used twice")
        seen.add(name)
        forms = [f for f in ("secret", "secretFile", "sha256") if key.get(f)]
        if len(forms) != 1:
            problems.add(here, "a key needs exactly one of secret, secretFile, sha256")
            continue
        if forms[0] == "secret":
            secret = key["secret"]
            if any(c.isspace() for c in secret):
                problems.add((*here, "secret"), "a key cannot contain whitespace")
                continue
            key["digest"] = _sha256(secret)
        elif forms[0] == "sha256":
            if not _HEX64.fullmatch(key["sha256"]):
                problems.add((*here, "sha256"), "sha256 must be 64 hexadecimal digits")
                continue
            key["digest"] = key["sha256"].lower()
        else:
            path = os.path.join(base, os.path.expanduser(key["secretFile"]))
            try:
                with open(path, encoding="utf-8") as f:
                    secret = f.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                problems.add((*here, "secretFile"), f"cannot read the key file: {exc}")
                continue
            if not secret or any(c.isspace() for c in secret):
                problems.add((*here, "secretFile"), "the key file must hold one key")
                continue
            key["digest"] = _sha256(secret)


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()
