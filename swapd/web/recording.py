"""One activity row per inference request, whatever becomes of it.

:class:`ActivityRecorder` is the outermost ASGI wrapper. For every ``POST`` to a
model-dispatched route (the JSON and multipart inference routes, ``/sdapi/v1/...``,
``/upstream/<model>/...``) it notes the arrival, watches the response go out (status,
content type, first body byte, the end, and the body of an error) and, once the request is
over, hands one :class:`~swapd.observe.store.ActivityRow` to ``Telemetry.record_activity``:
answered, refused (400, 401, 404, 413, 429), failed (502, 503, 504), cut by the upstream
or abandoned by the client.

What only the inner layers know (the model, the wait for a lease, the token usage and the
capture) they add to the request's :class:`RequestActivity`, found with :func:`current`.
It travels in a context variable because the relay is shared by the Quart routes and the
ASGI fast path, and neither hands it a request object; the recorder sets it before the
request starts, so every task the request spawns sees the same entry, and resets it after.

Rows the client never saw completed: a client that went away gets status 499 when no
response had started (nginx's "client closed request") and its response status otherwise,
with ``error_msg`` saying so; an upstream that stopped mid-answer is recorded as 502.
"""

from __future__ import annotations

import http
import json
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Final

import attrs
import trio

from swapd.observe.metrics import TokenMetrics
from swapd.observe.store import ActivityRow
from swapd.observe.telemetry import Telemetry

__all__ = ["ActivityRecorder", "RequestActivity", "current", "error_message"]

Message = dict[str, Any]
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

CLIENT_CLOSED: Final = 499
ERROR_BODY_MAX: Final = 64 * 1024  # bytes of an error body kept to find its message
ERROR_MSG_MAX: Final = 500  # llama-swap cuts error_msg here and adds "..."

_CURRENT: ContextVar[RequestActivity | None] = ContextVar("swapd_request_activity", default=None)


@attrs.define(eq=False)
class RequestActivity:
    """What the inner layers learn about one recorded request (all optional)."""

    started: float  # trio clock
    model: str = ""
    queue_ms: int = -1
    metrics: TokenMetrics | None = None
    cut: bool = False  # the upstream stopped before it finished its answer

    def note_model(self, name: str) -> None:
        self.model = name

    def note_wait(self, seconds: float) -> None:
        self.queue_ms = max(0, round(seconds * 1000))

    def note_finished(self, metrics: TokenMetrics | None, *, cut: bool) -> None:
        self.metrics = metrics
        self.cut = cut


def current() -> RequestActivity | None:
    """The activity entry of the request being handled, if it is one that is recorded."""
    return _CURRENT.get()


def error_message(status: int, body: bytes) -> str:
    """The first text at ``error.message``, ``error``, ``message`` or ``detail`` of a JSON
    error body (cut to 500 characters), else ``"<code> <reason>"`` (llama-swap's rule)."""
    text = ""
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        error = decoded.get("error")
        candidates = [
            error.get("message") if isinstance(error, dict) else None,
            error,
            decoded.get("message"),
            decoded.get("detail"),
        ]
        text = next((c for c in candidates if isinstance(c, str) and c), "")
    if not text:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Client Closed Request" if status == CLIENT_CLOSED else ""
        return f"{status} {reason}".rstrip()
    return text if len(text) <= ERROR_MSG_MAX else text[:ERROR_MSG_MAX] + "..."


class ActivityRecorder:
    """ASGI wrapper that records the requests ``paths`` (exact) and ``prefixes`` name."""

    def __init__(
        self,
        app: ASGIApp,
        telemetry: Telemetry,
        *,
        paths: frozenset[str],
        prefixes: tuple[str, ...],
    ) -> None:
        self.app = app
        self.telemetry = telemetry
        self.paths = paths
        self.prefixes = prefixes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or (scope["path"] not in self.paths and not scope["path"].startswith(self.prefixes))
        ):
            await self.app(scope, receive, send)
            return
        entry = RequestActivity(started=trio.current_time())
        response = _ResponseWatch(send)
        token = _CURRENT.set(entry)
        failed = False
        try:
            await self.app(scope, receive, response.send)
        except BaseException:
            failed = True
            raise
        finally:
            _CURRENT.reset(token)
            self.telemetry.record_activity(response.row(entry, scope["path"], failed=failed))


class _ResponseWatch:
    """Passes the response on while noting what the row needs."""

    def __init__(self, send: Callable[[Message], Awaitable[None]]) -> None:
        self._send = send
        self.status = 0
        self.content_type = ""
        self.first_byte: float | None = None
        self.complete = False
        self.error_body = bytearray()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            for name, value in message.get("headers", ()):
                if name.lower() == b"content-type":
                    self.content_type = value.decode("latin-1")
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if body and self.first_byte is None:
                self.first_byte = trio.current_time()
            if self.status >= 400 and len(self.error_body) < ERROR_BODY_MAX:
                self.error_body += body[: ERROR_BODY_MAX - len(self.error_body)]
            if not message.get("more_body", False):
                self.complete = True
        await self._send(message)

    def row(self, entry: RequestActivity, path: str, *, failed: bool) -> ActivityRow:
        now = trio.current_time()
        status = self.status
        error = ""
        if entry.cut:
            status = 502
            error = "the upstream stopped before it finished its answer"
        elif status == 0:
            status = 500 if failed else CLIENT_CLOSED
            error = (
                "internal error in swapd"
                if failed
                else "the client went away before the response started"
            )
        elif status >= 400:
            error = error_message(status, bytes(self.error_body))
        elif not self.complete:
            error = "the client went away before the response ended"
        total_ms = max(0, round((now - entry.started) * 1000))
        ttfb_ms = -1
        if self.first_byte is not None:
            ttfb_ms = max(0, round((self.first_byte - entry.started) * 1000))
        m = entry.metrics
        return ActivityRow(
            ts_ms=int(time.time() * 1000),
            req_path=path,
            model=entry.model,
            status=status,
            content_type=self.content_type,
            queue_ms=entry.queue_ms,
            ttfb_ms=ttfb_ms,
            total_ms=total_ms,
            # llama-swap v250: the wall clock, raised to the upstream's own prompt +
            # generation time when that is longer.
            duration_ms=total_ms if m is None else max(total_ms, m.duration_ms),
            error_msg=error,
            **({} if m is None else _token_fields(m)),
        )


def _token_fields(m: TokenMetrics) -> dict[str, Any]:
    return {
        "cache_tokens": m.cache_tokens,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "prompt_per_second": m.prompt_per_second,
        "tokens_per_second": m.tokens_per_second,
        "capture_id": m.id if m.has_capture else -1,
    }
