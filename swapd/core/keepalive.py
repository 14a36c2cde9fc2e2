"""Ollama's ``keep_alive``: parse it, and record per-model TTL overrides.

Pure: no trio, no HTTP. ``parse_keep_alive`` reads the value of a request's ``keep_alive``
(or of the ``OLLAMA_KEEP_ALIVE`` environment variable) the way Ollama does:

- a number is seconds (``300``, ``2.5``);
- a string is a Go-style duration (``"5m"``, ``"1h30m"``, ``"500ms"``) or a bare number of
  seconds (``"300"``);
- ``0`` (or ``"0"``, ``"0s"``) means: unload the model as soon as the answer is done;
- a negative value (``-1``, ``"-1m"``) means: keep the model loaded, never unload it idle.

The result is a number of seconds: ``0.0`` to unload now, ``math.inf`` to keep forever.

``TtlOverrides`` records, per model, the keep-alive of the latest Ollama request that named
it. The supervisor's TTL logic may read it through ``ttl(model_id, configured)``, which
answers in swapd's TTL convention (``0`` = never unload when idle); the supervisor owns
one table (``Supervisor.ttl_overrides``) and applies it.
"""

from __future__ import annotations

import math
import re

__all__ = ["TtlOverrides", "parse_keep_alive"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_keep_alive(value: object) -> float:
    """Seconds to keep a model loaded after an answer: ``0.0`` unloads now, ``math.inf``
    keeps it forever. Raises ``ValueError`` with a message for the client otherwise.

    >>> parse_keep_alive("1h30m"), parse_keep_alive(-1), parse_keep_alive("0")
    (5400.0, inf, 0.0)
    """
    if isinstance(value, bool):
        raise ValueError(f"keep_alive must be a duration or a number of seconds, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration(value.strip())
    else:
        raise ValueError(f"keep_alive must be a duration or a number of seconds, got {value!r}")
    if math.isnan(seconds):
        raise ValueError("keep_alive must be a duration or a number of seconds, got NaN")
    return math.inf if seconds < 0 else seconds


def _parse_duration(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    total = 0.0
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(
                f"invalid keep_alive duration {text!r}: use e.g. '5m', '1h30m', '300' or -1"
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise ValueError("keep_alive duration is empty")
    return sign * total


class TtlOverrides:
    """Per-model keep-alive set by Ollama requests (seconds; ``math.inf`` = forever).

    A model without an override keeps the TTL its config gives it."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def set(self, model_id: str, seconds: float | None) -> None:
        """Record ``seconds`` for ``model_id``; ``None`` clears it (the config's TTL)."""
        if seconds is None:
            self._seconds.pop(model_id, None)
        else:
            self._seconds[model_id] = seconds

    def get(self, model_id: str) -> float | None:
        return self._seconds.get(model_id)

    def ttl(self, model_id: str, configured: float) -> float:
        """The idle TTL to apply, in swapd's convention: ``0`` never unloads when idle.

        An override of ``0`` (unload now) is carried out by whoever set it, once the answer
        is done; as a TTL it reads as "as soon as possible", the smallest positive TTL."""
        seconds = self._seconds.get(model_id)
        if seconds is None:
            return configured
        if math.isinf(seconds):
            return 0.0
        return max(seconds, 1e-3)
