"""Error bodies: every error swapd itself answers, in the caller's API dialect.

Fixes sharp edge 17 (text, ``{"error": "..."}`` and empty bodies mixed): OpenAI-style
``{"src": "swapd", "error": {"message", "type", "param", "code"}}`` everywhere, with
llama-swap main's type/code per status (reference section 15), and Anthropic's
``{"type": "error", "error": {"type", "message"}}`` on the Anthropic routes. Messages are
the exceptions' own texts; no traceback is ever rendered. Also builds the "did you mean"
text for unknown models.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from swapd.errors import ModelUnavailable, QueueFull, SwapdError

__all__ = [
    "anthropic_error",
    "close_matches",
    "error_for",
    "is_anthropic_path",
    "json_bytes",
    "openai_error",
    "unknown_model_message",
]

# status → (type, code); llama-swap main, internal/swaputil/httperror.go.
_OPENAI: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "payload_too_large"),  # ours
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}

# https://docs.anthropic.com/en/api/errors
_ANTHROPIC: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

_MAX_LISTED = 20
_MAX_NAME = 200
_MAX_MATCHED = 256  # a longer name looks like no model: no similarity is computed
_CUTOFF = 0.6


def openai_error(
    status: int,
    message: str,
    *,
    code: str | None = None,
    type_: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """``{"src": "swapd", "error": {...}}``; ``type``/``code`` default from ``status``
    (other 4xx: ``invalid_request_error``/``invalid_request``; else
    ``server_error``/``internal_error``)."""
    default_type, default_code = _OPENAI.get(
        status,
        ("invalid_request_error", "invalid_request")
        if 400 <= status < 500
        else ("server_error", "internal_error"),
    )
    return {
        "src": "swapd",
        "error": {
            "message": message,
            "type": type_ or default_type,
            "param": param,
            "code": code or default_code,
        },
    }


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    """Anthropic's shape; other 4xx are ``invalid_request_error``, other 5xx ``api_error``."""
    default = "invalid_request_error" if 400 <= status < 500 else "api_error"
    return {"type": "error", "error": {"type": _ANTHROPIC.get(status, default), "message": message}}


def json_bytes(body: Any) -> bytes:
    """``body`` as UTF-8 JSON ending with a newline (so a shell prompt after ``curl``
    starts on its own line). Text that is not valid Unicode (a lone surrogate from a
    ``\\ud800`` escape in a request) stays escaped instead of failing the response."""
    try:
        return (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(body, ensure_ascii=True) + "\n").encode("ascii")


def is_anthropic_path(path: str) -> bool:
    """Errors on this path take Anthropic's shape."""
    return path.startswith("/v1/messages")


def error_for(
    exc: SwapdError, *, anthropic: bool
) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """``(status, body, extra headers)`` for a deliberate error; ``Retry-After`` for 429/503."""
    status = exc.http_status
    message = str(exc) or _phrase(status)
    if anthropic:
        body = anthropic_error(status, message)
    else:
        body = openai_error(status, message, code=exc.api_error_code, type_=exc.api_error_type)
    headers: list[tuple[str, str]] = []
    if isinstance(exc, QueueFull | ModelUnavailable):
        headers.append(("Retry-After", str(max(0, int(exc.retry_after)))))
    return status, body, headers


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def close_matches(name: str, candidates: Iterable[str]) -> list[str]:
    """Up to three candidates that look like ``name`` (ignoring case): best first, ties in
    alphabetical order (``difflib`` similarity of at least 0.6). None for a name over
    256 characters: difflib's cost grows with the name, and no model ID is that long."""
    if len(name) > _MAX_MATCHED:
        return []
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(name.lower())
    scored: list[tuple[float, str]] = []
    for candidate in set(candidates):
        matcher.set_seq1(candidate.lower())
        if (
            matcher.real_quick_ratio() >= _CUTOFF
            and matcher.quick_ratio() >= _CUTOFF
            and (ratio := matcher.ratio()) >= _CUTOFF
        ):
            scored.append((-ratio, candidate))
    return [candidate for _, candidate in sorted(scored)[:3]]


def unknown_model_message(name: str, candidates: Iterable[str]) -> str:
    """``model 'x' not found; did you mean: a, b?`` or ``...; available models: a, b, …``."""
    names = sorted(set(candidates))
    shown = name if len(name) <= _MAX_NAME else name[:_MAX_NAME] + "…"
    text = f"model '{shown}' not found"
    if similar := close_matches(name, names):
        return f"{text}; did you mean: {', '.join(similar)}?"
    if not names:
        return f"{text}; no models are configured"
    listed = names[:_MAX_LISTED] + (["…"] if len(names) > _MAX_LISTED else [])
    return f"{text}; available models: {', '.join(listed)}"
