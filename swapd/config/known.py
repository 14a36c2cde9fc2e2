"""What to tell a user about a key swapd does not read.

llama-swap ignores unknown keys silently; swapd warns (and ``--strict`` refuses), with the
most useful hint it has, in this order:

1. a key of a newer llama-swap version that swapd does not implement yet: say so;
2. a key users write meaning something llama-swap never read (``listen``, ``port``,
   ``unloadAfter``, ...): say what does that;
3. a note key (``tags``, ``recommended_use``, ...): point at ``metadata``;
4. a spelling close to a known key: "did you mean";
5. otherwise list the known keys.

Tables are keyed by the name of the model class (``"ModelConfig"``), so this module needs
no import of ``model.py``. Pure data and one function; no I/O.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["NEWER", "NOT_A_MAPPING", "unknown_key_message"]

#: Class name → the error for a value that is not a mapping, where llama-swap words it.
NOT_A_MAPPING: dict[str, str] = {
    "Profile": "profile must be a mapping with description and pins; "
    "the legacy list syntax is no longer supported",
}

#: (class, key) → the llama-swap version that added it, for keys swapd does not read yet.
#: Empty today: every key llama-swap v250 knows is read (some are accepted and reported as
#: not active yet, see ``v250.py``); kept for the next version's keys.
NEWER: dict[tuple[str, str], str] = {}

#: (class, key) → what the user probably meant. "*" matches every class.
_MEANT: dict[tuple[str, str], str] = {
    ("Config", "listen"): "the address is a command-line option: swapd --listen HOST:PORT",
    ("Config", "host"): "the address is a command-line option: swapd --listen HOST:PORT",
    ("Config", "port"): "the address is a command-line option: swapd --listen HOST:PORT "
    "(the first model port is 'startPort')",
    ("Config", "health_check_timeout"): "did you mean 'healthCheckTimeout'?",
    ("Config", "unloadAfter"): "did you mean 'globalTTL' (idle seconds before unloading)?",
    ("Config", "ttl"): "did you mean 'globalTTL'? ('ttl' is a model setting)",
    ("ModelConfig", "port"): "swapd gives each model a port through ${PORT} in cmd; for a "
    "fixed port write it in cmd and set 'proxy' to it",
    ("ModelConfig", "host"): "the upstream address is 'proxy' (e.g. http://127.0.0.1:8081)",
    ("ModelConfig", "listen"): "the upstream address is 'proxy' (e.g. http://127.0.0.1:8081)",
    ("ModelConfig", "unloadAfter"): "did you mean 'ttl' (idle seconds before unloading)?",
    ("ModelConfig", "health_check_timeout"): "'healthCheckTimeout' is a global setting "
    "(top level of the file), not a model setting",
    ("ModelConfig", "healthCheckTimeout"): "'healthCheckTimeout' is a global setting "
    "(top level of the file), not a model setting",
    ("ModelConfig", "tools"): "did you mean 'capabilities: {tools: true}'?",
    ("ModelConfig", "workarounds"): "llama-swap renamed it before any release: use "
    "'compat: {ignoreWebsockets: true}'",
    ("ModelConfig", "priority"): "llama-swap has no per-model priority; it is read from "
    "routing.scheduler.settings.fifo.priority",
}

#: Keys people use for their own notes; they belong under ``metadata``.
_NOTES = frozenset(
    {
        "recommended_use",
        "recommendedUse",
        "tags",
        "notes",
        "note",
        "comment",
        "comments",
        "url",
        "source",
        "license",
        "family",
        "category",
        "size",
        "quant",
        "quantization",
        "vram",
        "homepage",
    }
)


def unknown_key_message(cls_name: str, key: str, known: Iterable[str]) -> str:
    """The warning for ``key``, which is not a setting of the class named ``cls_name``."""
    version = NEWER.get((cls_name, key))
    if version is not None:
        return f"'{key}' is a llama-swap {version} setting swapd does not implement yet; ignored"
    meant = _MEANT.get((cls_name, key))
    if meant is not None:
        return f"unknown setting '{key}' ignored: {meant}"
    if key in _NOTES:
        return f"'{key}' is not a setting; ignored (notes shown in /v1/models go under 'metadata')"
    names = list(known)
    folded = {k.lower(): k for k in names}
    close = folded.get(key.lower()) or next(
        iter(difflib.get_close_matches(key, names, n=1, cutoff=0.6)), None
    )
    if close:
        return f"unknown setting '{key}' ignored (did you mean '{close}'?)"
    return f"unknown setting '{key}' ignored; known settings: {', '.join(sorted(names))}"
