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

from swapd.observe.inflight import InflightRequest, InflightTracker
from swapd.observe.metrics import TokenMetrics
from swapd.observe.store import ActivityRow
from swapd.observe.telemetry import Telemetry
from swapd.web import problems

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
    inflight: InflightRequest
    tracker: InflightTracker
    model: str = ""
    queue_ms: int = -1
    metrics: TokenMetrics | None = None
    cut: bool = False  # the upstream stopped before it finished its answer

    def note_model(self, name: str) -> None:
        self.model = self.inflight.model = name
        self.tracker.changed(self.inflight, force=True)

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
        tracker = self.telemetry.inflight
        client = scope.get("client")
        inflight = tracker.open(
            method=scope["method"],
            path=scope["path"],
            headers=scope["headers"],
            remote_ip=client[0] if client else "",
        )
        entry = RequestActivity(started=trio.current_time(), inflight=inflight, tracker=tracker)
        response = _ResponseWatch(send, inflight, tracker)
        token = _CURRENT.set(entry)
        failed = False
        try:
            # The scope POST /api/inflight/<id>/cancel cancels: the request leaves the
            # queue or closes its upstream exchange, then the client is told below.
            with inflight.cancel_scope:
                await self.app(scope, receive, response.send)
            if inflight.cancel_scope.cancelled_caught:
                await response.end_cancelled(inflight.id, scope["path"])
        except BaseException:
            failed = True
            raise
        finally:
            _CURRENT.reset(token)
            tracker.close(inflight)
            row = response.row(entry, scope["path"], failed=failed)
            grant = scope.get("swapd.grant")  # scopes.GRANT_KEY: who asked (never the secret)
            if grant is not None:
                row = attrs.evolve(row, key_name=grant.name)
            self.telemetry.record_activity(row)


class _ResponseWatch:
    """Passes the response on while noting what the row needs."""

    def __init__(
        self,
        send: Callable[[Message], Awaitable[None]],
        inflight: InflightRequest,
        tracker: InflightTracker,
    ) -> None:
        self._send = send
        self._inflight = inflight
        self._tracker = tracker
        self.cancelled_id: str | None = None
        self.status = 0
        self.content_type = ""
        self.first_byte: float | None = None
        self.complete = False
        self.error_body = bytearray()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            headers = message.get("headers", [])
            for name, value in headers:
                if name.lower() == b"content-type":
                    self.content_type = value.decode("latin-1")
            self._inflight.resp_headers = headers
            self._tracker.changed(self._inflight, force=True)
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if body and self.first_byte is None:
                self.first_byte = trio.current_time()
            if body:
                self._inflight.resp_bytes += len(body)
                self._tracker.changed(self._inflight)
            if self.status >= 400 and len(self.error_body) < ERROR_BODY_MAX:
                self.error_body += body[: ERROR_BODY_MAX - len(self.error_body)]
            if not message.get("more_body", False):
                self.complete = True
        await self._send(message)

    async def end_cancelled(self, request_id: str, path: str) -> None:
        """Tell the client its request was cancelled: an error response if none had
        started; an error event and ``[DONE]`` ending an event stream; any other body is
        left cut short (the connection closes, so the client cannot take it as whole)."""
        if self.complete:
            return  # the cancel came after the whole answer was sent: nothing was cut
        self.cancelled_id = request_id
        message = f"the request was cancelled (POST /api/inflight/{request_id}/cancel)"
        if self.status == 0:
            body = (
                problems.anthropic_error(503, message)
                if problems.is_anthropic_path(path)
                else problems.openai_error(503, message)
            )
            data = json.dumps(body, ensure_ascii=False).encode()
            headers = [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"content-length", str(len(data)).encode()),
            ]
            await self.send({"type": "http.response.start", "status": 503, "headers": headers})
            await self.send({"type": "http.response.body", "body": data, "more_body": False})
        elif "text/event-stream" in self.content_type:
            event = {"error": {"message": message, "type": "cancelled", "code": "cancelled"}}
            data = b"\n\ndata: " + json.dumps(event).encode() + b"\n\ndata: [DONE]\n\n"
            await self.send({"type": "http.response.body", "body": data, "more_body": False})

    def row(self, entry: RequestActivity, path: str, *, failed: bool) -> ActivityRow:
        now = trio.current_time()
        status = self.status
        error = ""
        if self.cancelled_id is not None:
            error = f"cancelled through POST /api/inflight/{self.cancelled_id}/cancel"
        elif entry.cut:
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
        "draft_tokens": m.draft_tokens,
        "draft_acc_tokens": m.draft_acc_tokens,
        "capture_id": m.id if m.has_capture else -1,
    }
