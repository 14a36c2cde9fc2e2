"""Request bodies: reading the requested model and applying the configured rewrites.

This module owns the byte-level work an inference route does before forwarding a body
(reference sections 5.5, 5.6 and 6), as pure functions on ``bytes`` so every edge case
is testable without a server:

* JSON bodies: :func:`read_fields` (``model`` and ``stream`` in one parse, bounded for
  large bodies, with the parser's message for invalid JSON), :func:`extract_model`,
  :func:`rewrite_json_body` (``useModelName`` → ``stripParams`` → ``setParams``) and
  :func:`is_streaming`.
* ``multipart/form-data`` bodies: :func:`parse_multipart_model` and
  :func:`rewrite_multipart_model`, which edits the ``model`` field in place and keeps every
  other byte, unlike llama-swap's rebuild (sharp edge 23).

JSON is parsed strictly with the standard library: a body that is not valid JSON (this
includes ``NaN``/``Infinity`` and numbers too large for a double) has no model, where
llama-swap's lenient scanner would still find one. Duplicate keys: the last one wins, as
in most JSON parsers.

``stripParams``/``setParams`` keys are llama-swap's ``sjson`` paths (sharp edge 24, kept for
compatibility): ``a.b`` addresses ``b`` inside the object ``a``, ``\\.`` is a literal dot,
and a component made of digits indexes an existing array. A top-level ``model`` is never
stripped or set.

(About 470 lines: both body kinds live here because they share what "the model" of a
request means; the large-body JSON walk is its own module, ``jsonscan.py``.)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value
from typing import Any, Protocol

from swapd.web.jsonscan import TooLong, top_level

__all__ = [
    "MAX_PARTS",
    "PARSE_WHOLE",
    "JsonFields",
    "extract_model",
    "read_fields",
    "is_streaming",
    "parse_multipart_model",
    "rewrite_json_body",
    "rewrite_multipart_model",
]

# --- JSON --------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


class _RawNumber(str):
    """A JSON float kept as its source text (to name a model exactly as it was written)."""


def _loads(body: bytes, *, raw_floats: bool = False) -> Any:
    """Parse strictly; ``None`` when ``body`` is not valid JSON (never raises)."""
    try:
        return json.loads(
            body,
            parse_float=_RawNumber if raw_floats else _finite_float,
            parse_constant=_reject_constant,
        )
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, ours
        return None


def _parse_error(body: bytes) -> str | None:
    """Why ``body`` is not valid JSON (the parser's message and position), else None."""
    if not body.strip():  # 'Expecting value: line 1 column 1' would not say what is wrong
        return "the body is empty: expected a JSON object"
    try:
        json.loads(body, parse_float=_finite_float, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return f"the body is not valid JSON: {exc}"
    except UnicodeDecodeError as exc:
        return f"the body is not valid JSON: byte {exc.start} is not valid {exc.encoding}"
    except RecursionError:
        return "the body is nested too deeply to be read"
    except ValueError as exc:
        return f"the body is not valid JSON: {exc}"
    return None


def _compact(value: Any, *, ensure_ascii: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=False)


def extract_model(body: bytes, *, parsed: Any = None) -> str | None:
    """The top-level ``model`` of a JSON object body, rendered as a string.

    A JSON string is returned as is; a number, boolean, object or array as its compact JSON
    text (``false`` → ``"false"``, ``12`` → ``"12"``, ``1.50`` → ``"1.50"``). ``None`` when
    the key is missing, ``null`` or ``""``, or the body is not a JSON object.
    ``parsed``: ``body`` already parsed (not parsed again).
    """
    obj = _loads(body) if parsed is None else parsed
    if not isinstance(obj, dict):
        return None
    value = obj.get("model")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float):  # rare: re-read to keep the number's exact spelling
        raw = _loads(body, raw_floats=True)
        return str(raw["model"]) if isinstance(raw, dict) else None
    try:
        return _compact(value)
    except (ValueError, RecursionError):
        return None


#: Bodies up to this size are parsed whole (and so checked whole); larger ones are
#: scanned for their top-level ``model`` and ``stream`` only, without building the rest:
#: a body of millions of tiny arrays would otherwise cost ~25 times its size in memory
#: and block for seconds. Callers scan those off the event loop (``trio.to_thread``).
PARSE_WHOLE = 1024 * 1024
_MAX_FIELD = 64 * 1024  # a model or stream value longer than this is no model name


@dataclass(frozen=True, slots=True)
class JsonFields:
    """What the inference routes need from a JSON body: its ``model`` (as
    :func:`extract_model` renders it), whether it asks for a stream, and why it is not
    valid JSON (``error``, with the parser's position) when it is not."""

    model: str | None
    stream: bool
    error: str | None = None


def read_fields(body: bytes) -> JsonFields:
    """``model`` and ``stream`` of a JSON body, parsing it once. Never raises.

    Over :data:`PARSE_WHOLE` only the top level is walked: other values are skipped, not
    built (and not checked beyond their brackets and strings; the upstream judges them).
    Duplicate keys: the last wins, as in the whole parse."""
    if len(body) <= PARSE_WHOLE:
        obj = _loads(body)
        if obj is None:
            error = _parse_error(body)
            if error is not None:
                return JsonFields(None, False, error)
        if not isinstance(obj, dict):
            return JsonFields(None, False)
        return JsonFields(extract_model(body, parsed=obj), _truthy(obj.get("stream")))
    try:
        raw = top_level(body, ("model", "stream"), max_value=_MAX_FIELD)
    except TooLong as exc:
        return JsonFields(None, False, str(exc))
    except ValueError as exc:
        return JsonFields(None, False, f"the body is not valid JSON: {exc}")
    model = raw.get("model")
    stream = raw.get("stream")
    return JsonFields(
        extract_model(b'{"model":' + model.encode() + b"}") if model is not None else None,
        is_streaming(b'{"stream":' + stream.encode() + b"}") if stream is not None else False,
    )


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):  # gjson: strconv.ParseBool(strings.ToLower(s))
        return value.lower() in ("1", "t", "true")
    return False


def is_streaming(body: bytes | Mapping[str, Any]) -> bool:
    """Whether the request asks for a stream: ``stream`` is JSON true, a non-zero number or
    a string that reads as true (``"true"``, ``"1"``, ``"t"``, any case). Never raises."""
    obj = _loads(body) if isinstance(body, bytes) else body
    return isinstance(obj, Mapping) and _truthy(obj.get("stream"))


def _split_path(path: str) -> list[str] | None:
    """``a.b\\.c`` → ``["a", "b.c"]``; ``None`` for an empty path or an empty component."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(path)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return None if "" in parts else parts


def _index(part: str, length: int) -> int | None:
    if part.isascii() and part.isdigit() and int(part) < length:
        return int(part)
    return None


def _child(container: Any, part: str) -> Any:
    """The object or array at ``container[part]``, else ``None``."""
    if isinstance(container, dict):
        found = container.get(part)
    elif isinstance(container, list) and (i := _index(part, len(container))) is not None:
        found = container[i]
    else:
        return None
    return found if isinstance(found, dict | list) else None


def _delete(obj: dict[str, Any], parts: list[str]) -> bool:
    container: Any = obj
    for part in parts[:-1]:
        container = _child(container, part)
    last = parts[-1]
    if isinstance(container, dict) and last in container:
        del container[last]
        return True
    if isinstance(container, list) and (i := _index(last, len(container))) is not None:
        del container[i]
        return True
    return False


def _set(obj: dict[str, Any], parts: list[str], value: Any) -> bool:
    container: Any = obj
    for part in parts[:-1]:
        child = _child(container, part)
        if child is None:
            if not isinstance(container, dict):
                return False  # no such array element: leave the array alone
            child = container[part] = {}  # missing or a scalar: becomes an object
        container = child
    last = parts[-1]
    if isinstance(container, dict):
        if last in container and _same(container[last], value):
            return False
        container[last] = value
        return True
    if isinstance(container, list) and (i := _index(last, len(container))) is not None:
        if _same(container[i], value):
            return False
        container[i] = value
        return True
    return False


def _same(a: Any, b: Any) -> bool:
    try:
        return _compact(a) == _compact(b)  # strict: 1, 1.0 and true all differ
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """A fresh JSON-ready copy of a config value (mappings → dict, sequences → list)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def rewrite_json_body(
    body: bytes,
    *,
    use_model_name: str,
    strip: Sequence[str],
    set_items: Sequence[tuple[str, Any]],
) -> bytes:
    """Apply ``useModelName`` (when non-empty), then ``strip``, then ``set_items``, in order.

    Returns ``body`` itself (the same object) when nothing changes, including when there is
    nothing to do or the body is not a JSON object (the caller rejects those via
    :func:`extract_model`). Otherwise the result is compact UTF-8 JSON: untouched keys keep
    their order, new keys are appended. Paths starting at ``model`` are ignored.
    """
    if not use_model_name and not strip and not set_items:
        return body
    obj = _loads(body)
    if not isinstance(obj, dict):
        return body
    changed = False
    if use_model_name and obj.get("model") != use_model_name:
        obj["model"] = use_model_name
        changed = True
    for key in strip:
        parts = _split_path(key)
        if parts is not None and parts[0] != "model":
            changed = _delete(obj, parts) or changed
    for key, value in set_items:
        parts = _split_path(key)
        if parts is not None and parts[0] != "model":
            changed = _set(obj, parts, _plain(value)) or changed
    if not changed:
        return body
    try:
        return _compact(obj).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: stay escaped
        return _compact(obj, ensure_ascii=True).encode("ascii")


# --- multipart/form-data -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    """A ``model`` form value inside the body: its value is ``body[start:end]``."""

    start: int
    end: int


def _boundary(content_type: str) -> bytes:
    header = Message()
    header["content-type"] = content_type
    if header.get_content_type() != "multipart/form-data":
        raise ValueError(f"content type {content_type[:100]!r} is not multipart/form-data")
    boundary = header.get_boundary()
    if not boundary:
        raise ValueError("multipart content type has no boundary parameter")
    if not boundary.isascii():
        raise ValueError("multipart boundary is not ASCII")
    return boundary.encode("ascii")


#: Forms have a handful of fields; a body of many tiny parts would make the scan (a
#: header parse for each part whose name mentions "model") cost seconds.
MAX_PARTS = 1000


class ByteSource(Protocol):
    """What the multipart scanner reads: ``bytes``, or a mapped file (``upload.py``)."""

    def __len__(self) -> int: ...
    def __getitem__(self, index: slice, /) -> bytes: ...
    def find(self, sub: bytes, start: int = ..., end: int = ..., /) -> int: ...
    def startswith(self, prefix: bytes, start: int = ..., end: int = ..., /) -> bool: ...


def _after_delimiter(body: ByteSource, i: int) -> tuple[bool, int, bytes] | None:
    """Just after ``--boundary`` at ``i``: ``(closing, next part start, line ending)``, or
    ``None`` when these bytes only start with the boundary text and are content."""
    if body.startswith(b"--", i):
        return True, i + 2, b""
    j = i
    while body.startswith(b" ", j) or body.startswith(b"\t", j):
        j += 1
    if body.startswith(b"\r\n", j):
        return False, j + 2, b"\r\n"
    if body.startswith(b"\n", j):
        return False, j + 1, b"\n"
    return None


def _model_fields(
    content_type: str, body: ByteSource, *, partial: bool = False
) -> tuple[bytes, list[_Field]]:
    """The boundary and every ``model`` value field (not file) of a form, in body order.

    ``partial``: ``body`` is the start of a form; the fields of its complete parts."""
    dash = b"--" + _boundary(content_type)
    candidates = [0] if body.startswith(dash) else []
    search = 0
    while True:  # the opening delimiter: at the very start or on a later line
        if candidates:
            found = candidates.pop()
        elif (newline := body.find(b"\n" + dash, search)) >= 0:
            found = newline + 1
        else:
            raise ValueError("multipart body has no opening boundary")
        opening = _after_delimiter(body, found + len(dash))
        if opening is not None:
            break
        search = found
    closing, start, nl = opening
    delimiter = nl + dash
    fields: list[_Field] = []
    parts = 0
    while not closing:
        parts += 1
        if parts > MAX_PARTS:
            raise ValueError(f"the form has more than {MAX_PARTS} parts")
        search = start
        while True:
            end = body.find(delimiter, search)
            if end < 0 and partial:
                return dash, fields
            if end < 0:
                raise ValueError("multipart body has no closing boundary")
            after = _after_delimiter(body, end + len(delimiter))
            if after is not None:
                break
            search = end + 1
        field = _model_field(body, start, end, nl)
        if field is not None:
            fields.append(field)
        closing, start, _ = after
    return dash, fields


def _model_field(body: ByteSource, start: int, end: int, nl: bytes) -> _Field | None:
    """The part ``body[start:end]`` as a ``model`` value field, else ``None``."""
    if body.startswith(nl, start, end):
        return None  # no headers, so no name
    blank = body.find(nl + nl, start, end)
    if blank < 0:
        raise ValueError("a multipart part has no blank line after its headers")
    block = body[start:blank]
    # Cheap pre-check so a form of many small parts is not parsed header by header;
    # escapes (\) and RFC 2231 (*=) could hide the name, so those are parsed too.
    if b"model" not in block and b"*" not in block and b"\\" not in block:
        return None
    headers = BytesHeaderParser(policy=compat32).parsebytes(block + nl + nl)
    if headers.get_content_disposition() != "form-data":
        return None
    name = headers.get_param("name", header="content-disposition")
    filename = headers.get_param("filename", header="content-disposition")
    if name is None or collapse_rfc2231_value(name) != "model":
        return None
    if filename is not None and collapse_rfc2231_value(filename) != "":
        return None  # a file upload named "model" is not the form value
    return _Field(blank + 2 * len(nl), end)


def parse_multipart_model(content_type: str, body: bytes) -> str | None:
    """The value of the first ``model`` form field (not a file), ``None`` when absent.

    Raises ``ValueError`` when ``content_type`` is not ``multipart/form-data`` with a
    boundary or the body is not a complete multipart body.
    """
    _, fields = _model_fields(content_type, body)
    if not fields:
        return None
    first = fields[0]
    return body[first.start : first.end].decode("utf-8", "replace")


def rewrite_multipart_model(content_type: str, body: bytes, new_model: str) -> tuple[str, bytes]:
    """Replace the value of every ``model`` form field with ``new_model``.

    Everything else stays byte for byte: part order, part headers (including each part's
    ``Content-Type``), the boundary, preamble and epilogue. Returns ``(content_type, body)``
    unchanged (the same objects) when there is no ``model`` field or nothing differs.
    Raises ``ValueError`` as :func:`parse_multipart_model` does, and when ``new_model``
    would contain a line starting with the boundary.
    """
    dash, fields = _model_fields(content_type, body)
    new = new_model.encode("utf-8")
    if all(body[f.start : f.end] == new for f in fields):
        return content_type, body
    if b"\n" + dash in b"\n" + new:
        raise ValueError("the new model name contains the multipart boundary")
    view = memoryview(body)
    pieces: list[bytes | memoryview] = []
    last = 0
    for field in fields:
        pieces += (view[last : field.start], new)
        last = field.end
    pieces.append(view[last:])
    return content_type, b"".join(pieces)
