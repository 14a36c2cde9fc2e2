"""Every exception swapd raises on purpose, in one tree.

::

    SwapdError
    ├── ConfigError              a config file is wrong; carries every ConfigProblem found
    ├── RequestError             the client's fault or our refusal (4xx / 503)
    │   ├── BadRequest           400  malformed body, missing model
    │   ├── Unauthorized         401  missing or wrong API key
    │   ├── Forbidden            403  the key's scope or role does not cover it
    │   ├── ModelNotFound        404  no model, alias or peer by that name
    │   ├── Conflict             409  the model's state forbids it (sleeping a busy model)
    │   ├── PayloadTooLarge      413  body over the configured limit
    │   ├── QueueFull            429  the model's wait queue is full
    │   └── ModelUnavailable     503  the model is stopping or swapd is shutting down
    └── UpstreamError            the backend's fault (5xx)
        ├── StartFailed          502  the process could not be started, exited while starting
        │                             or was not healthy within healthCheckTimeout (as llama-swap)
        └── UpstreamUnreachable  502  connecting to or talking with the upstream failed

Each class carries its HTTP meaning (``http_status``, ``api_error_type``) so the web layer
translates errors in one place. This module imports only the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "retry_after_for",
    "BadRequest",
    "ConfigError",
    "ConfigProblem",
    "Conflict",
    "DoesNotFit",
    "Forbidden",
    "ModelNotFound",
    "ModelUnavailable",
    "PayloadTooLarge",
    "QueueFull",
    "RequestError",
    "StartFailed",
    "SwapdError",
    "Unauthorized",
    "UpstreamError",
    "UpstreamUnreachable",
]


class SwapdError(Exception):
    """Base of everything swapd raises deliberately."""

    http_status: int = 500
    api_error_type: str = "server_error"
    api_error_code: str = "internal_error"


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file, located as precisely as the parser allows.

    ``path`` is the field path (``models.llama-8b.ttl``); ``line`` and ``column`` are
    1-based and 0 when unknown (a problem with the file as a whole).
    """

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line:
            where += f":{self.line}"
            if self.column:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class ConfigError(SwapdError):
    """A config file failed to load. ``problems`` lists every problem found, in file order."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems: Sequence[ConfigProblem] = tuple(
            sorted(problems, key=lambda p: (p.file, p.line, p.column, p.path))
        )
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems in the configuration:"]
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)


# --- requests ----------------------------------------------------------------------------


class RequestError(SwapdError):
    """The request cannot be served as asked; the client can fix it or retry."""

    http_status = 400
    api_error_type = "invalid_request_error"
    api_error_code = "bad_request"


class BadRequest(RequestError):
    pass


class Unauthorized(RequestError):
    http_status = 401
    api_error_type = "authentication_error"
    api_error_code = "unauthorized"


class Forbidden(RequestError):
    """The API key is valid but its scope or role does not cover this request."""

    http_status = 403
    api_error_type = "permission_error"
    api_error_code = "forbidden"


class ModelNotFound(RequestError):
    http_status = 404
    api_error_type = "invalid_request_error"
    api_error_code = "model_not_found"


class Conflict(RequestError):
    """The model is not in a state that allows the operation (e.g. sleeping a busy model)."""

    http_status = 409
    api_error_code = "conflict"


class PayloadTooLarge(RequestError):
    http_status = 413
    api_error_code = "payload_too_large"


class QueueFull(RequestError):
    """Too many requests are already waiting for this model."""

    http_status = 429
    api_error_type = "rate_limit_error"
    api_error_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_for(remaining: float | None, *, default: int = 1) -> int:
    """``Retry-After`` seconds for a request refused while its model loads: the predicted
    time left, rounded up and at least 1 s; ``default`` when nothing is predicted (the
    model is not loading, or its load has overrun the prediction)."""
    if remaining is None or not math.isfinite(remaining):
        return default
    return max(1, math.ceil(remaining))


class ModelUnavailable(RequestError):
    """The model is going away (stopping, swapd shutting down); retry later."""

    http_status = 503
    api_error_type = "service_unavailable"
    api_error_code = "service_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DoesNotFit(RequestError):
    """The model's footprint alone exceeds a device's memory budget (``memory.budgets``):
    it can never start with this config, so its requests fail at once. 507 (Insufficient
    Storage) says it is a capacity limit of this server, not a transient state: retrying
    does not help until the budget or the footprint changes."""

    http_status = 507
    api_error_type = "server_error"
    api_error_code = "insufficient_memory"


# --- upstreams ---------------------------------------------------------------------------


class UpstreamError(SwapdError):
    """The backend failed us."""

    http_status = 502
    api_error_type = "server_error"
    api_error_code = "bad_gateway"


class StartFailed(UpstreamError):
    """The model's process could not be started or died while starting.

    ``phase`` says where it failed (``spawn``, ``port``, ``health``, ``wake``), ``exit``
    describes how the process ended (``exit code 1``, ``signal SIGKILL``) when it did, and
    ``log_tail`` holds its last output lines.
    """

    def __init__(
        self,
        model: str,
        message: str,
        *,
        phase: str,
        exit: str | None = None,  # noqa: A002 - the natural name, only a keyword
        log_tail: Sequence[str] = (),
    ) -> None:
        self.model = model
        self.phase = phase
        self.exit = exit
        self.log_tail = tuple(log_tail)
        text = f"model {model!r} failed to start ({phase}): {message}"
        if exit:
            text += f" [{exit}]"
        if self.log_tail:
            text += "; last output: " + " | ".join(self.log_tail)
        super().__init__(text)


class UpstreamUnreachable(UpstreamError):
    """``connect_failed``: no connection could be made at all (nothing was sent)."""

    def __init__(self, message: str = "", *, connect_failed: bool = False) -> None:
        super().__init__(*((message,) if message else ()))
        self.connect_failed = connect_failed
