"""Finding a few top-level keys of a large JSON text without building the rest.

``json.loads`` builds every value: a body of millions of tiny arrays costs ~25 times its
size in memory and holds the GIL for seconds. :func:`top_level` walks only the outer
object: keys and wanted values are read with the standard library's own string scanner,
other values are skipped. Between two strings, brackets are counted with ``str.count``
(C speed); a value ends in the run of closing brackets before the next string or the
end, where the depth only falls, found there by bisection. Skipped values are checked
only as far as their strings and bracket balance go; the upstream judges the rest.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["TooLong", "top_level"]

_WS = re.compile(r"[ \t\n\r]*")
_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_scanstring: Any = json.decoder.scanstring  # type: ignore[attr-defined]


class TooLong(ValueError):
    """A wanted value too long to be what it should be (a model name, a flag)."""


def top_level(body: bytes, wanted: tuple[str, ...], *, max_value: int) -> dict[str, str]:
    """The source text of each ``wanted`` key of a top-level object (the last of
    duplicates); empty for a body that is not an object. Raises ValueError with a
    position for what is not JSON on the way, ``TooLong`` for a wanted value over
    ``max_value`` characters."""
    try:
        text = body.decode(json.detect_encoding(body))
    except UnicodeDecodeError as exc:
        raise ValueError(f"byte {exc.start} is not valid {exc.encoding}") from None
    text = text.removeprefix("\ufeff")
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("{", pos):
        return {}
    found: dict[str, str] = {}
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if text.startswith("}", pos):
        return found
    while True:
        if not text.startswith('"', pos):
            raise ValueError(f"expecting a property name in double quotes (char {pos})")
        key, pos = _scanstring(text, pos + 1)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if not text.startswith(":", pos):
            raise ValueError(f"expecting ':' delimiter (char {pos})")
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        end = _skip_value(text, pos)
        if key in wanted:
            if end - pos > max_value:
                raise TooLong(f"the '{key}' value is {end - pos} characters long, too long")
            found[key] = text[pos:end]
        pos = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text.startswith("}", pos):
            break
        if not text.startswith(",", pos):
            raise ValueError(f"expecting ',' delimiter (char {pos})")
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    if pos != len(text):
        raise ValueError(f"extra data (char {pos})")
    return found


def _skip_value(text: str, pos: int) -> int:
    """The end of the JSON value starting at ``pos``, without building it."""
    if text.startswith('"', pos):
        return int(_scanstring(text, pos + 1)[1])
    if not (text.startswith("[", pos) or text.startswith("{", pos)):
        match = _SCALAR.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"expecting a value (char {pos})")
        return match.end()
    depth = 0
    while True:
        quote = text.find('"', pos)
        stop = len(text) if quote < 0 else quote
        opens = text.count("[", pos, stop) + text.count("{", pos, stop)
        closes = text.count("]", pos, stop) + text.count("}", pos, stop)
        if depth + opens - closes > 0:
            if quote < 0:
                raise ValueError(f"unterminated array or object (char {len(text)})")
            depth += opens - closes
            pos = int(_scanstring(text, quote + 1)[1])
            continue
        run = pos + len(text[pos:stop].rstrip(_CLOSERS))
        depth += _opens(text, pos, run) - _closes(text, pos, run)
        if depth <= 0:
            raise ValueError(f"unbalanced brackets (char {run})")
        low, high = run, stop  # the value ends at the first i with depth - closes == 0
        while low < high:
            mid = (low + high) // 2
            if depth - _closes(text, run, mid) <= 0:
                high = mid
            else:
                low = mid + 1
        return low


_CLOSERS = "]} \t\n\r,"


def _opens(text: str, start: int, end: int) -> int:
    return text.count("[", start, end) + text.count("{", start, end)


def _closes(text: str, start: int, end: int) -> int:
    return text.count("]", start, end) + text.count("}", start, end)
