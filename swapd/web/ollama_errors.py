"""Ollama's error shape: ``{"error": "message"}`` with the matching HTTP status.

``OllamaError`` is raised by the Ollama routes for their own refusals; ``ollama_errors``
wraps a handler so those, translation errors (``ValueError`` from ``ollama_translate`` and
``ollama_answer``) and swapd's own errors (unknown model, model unavailable, upstream
unreachable) all leave in that shape; ``swapd_error`` and ``http_error`` serve the
blueprint's handlers for what fails before or around a handler (API key, body size).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Response
from werkzeug.exceptions import HTTPException

from swapd.errors import SwapdError, Unauthorized
from swapd.web import problems
from swapd.web.app import json_response
from swapd.web.auth import WWW_AUTHENTICATE

__all__ = [
    "OllamaError",
    "error",
    "guard_error",
    "http_error",
    "ollama_errors",
    "swapd_error",
]


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def ollama_errors(
    handler: Callable[[], Awaitable[Response]],
) -> Callable[[], Awaitable[Response]]:
    """Answer errors in Ollama's shape: ``{"error": message}`` with the right status."""

    async def wrapped() -> Response:
        try:
            return await handler()
        except OllamaError as exc:
            return error(exc.status, str(exc))
        except ValueError as exc:
            return error(400, str(exc))
        except SwapdError as exc:
            return swapd_error(exc)

    wrapped.__name__ = handler.__name__
    return wrapped


def swapd_error(exc: SwapdError) -> Response:
    status, body, headers = problems.error_for(exc, anthropic=False)
    if isinstance(exc, Unauthorized):
        headers = [*headers, ("WWW-Authenticate", WWW_AUTHENTICATE)]
    return json_response(status, {"error": str(exc) or body["error"]["message"]}, headers)


async def http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = "request body too large" if status == 413 else exc.description or exc.name
    return error(status, message)


async def guard_error(exc: SwapdError) -> Response:
    """Errors raised before a handler runs (the API key check) in Ollama's shape too."""
    return swapd_error(exc)
