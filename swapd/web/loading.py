"""``sendLoadingState``: show a chat client that its model is loading, then the answer.

For a streaming ``/v1/chat/completions`` request whose model is not ready, swapd answers
at once with an event stream and sends progress as ``reasoning_content`` deltas (chat
UIs show them as "thinking") while the model loads: a line with the stage, percentage and
time left whenever the ``loadProgress`` readings on the bus move
(:mod:`swapd.observe.progress`), a dot each quiet second; then the upstream's own events
follow in the same stream. Unlike llama-swap, a failure never looks like a success: a
failed load or an upstream error status ends the stream with an error event and
``data: [DONE]``.

The answer is metered like any relayed one (``metered``: token metrics, the activity
row) and the request counts against its API key's limits (``scopes.admit``, called by
``inference.py`` before the stream starts: over a limit, 429 and nothing is loaded).

The stream is produced by a task in the app's nursery that writes into a memory channel;
the request's cleanup cancels it, so a client that leaves stops the load wait (leaving
the queue) or the upstream request at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import trio

from swapd.core.events import LoadProgressed
from swapd.errors import SwapdError
from swapd.observe.bus import Subscription
from swapd.observe.metrics import UsageTap
from swapd.observe.telemetry import Telemetry
from swapd.supervise.supervisor import Lease, Supervisor
from swapd.web.forward import Exchange
from swapd.web.recording import RequestActivity
from swapd.web.relay import CUT_STREAM

__all__ = ["loading_stream", "metered", "progress_line"]

log = logging.getLogger(__name__)

OpenExchange = Callable[[Lease], Awaitable[Exchange]]
#: Wraps the upstream body of a successful exchange (token usage, activity; ``metered``).
Meter = Callable[[Exchange], AsyncGenerator[bytes, None]]


def _frame(data: object) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


def _progress(text: str) -> bytes:
    return _frame(
        {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}],
        }
    )


def _error(message: str, status: int) -> bytes:
    return _frame({"error": {"message": message, "type": "server_error", "code": status}})


DONE = b"data: [DONE]\n\n"


def progress_line(reading: LoadProgressed) -> str:
    """One line for a person: the stage, the percentage, the time left."""
    percent = f"~{reading.percent}% (estimated)" if reading.is_estimate else f"{reading.percent}%"
    if reading.eta is not None:
        left = f"about {reading.eta:.0f}s left"
    else:
        left = f"taking longer than the predicted {reading.predicted:.0f}s"
    return f"{reading.label}: {percent}, {left}\n"


async def _report_progress(
    events: Subscription[object], model_id: str, send: trio.MemorySendChannel[bytes]
) -> None:
    """A line whenever the model's stage or percentage moves; a dot a second otherwise."""
    shown: tuple[str, int] | None = None

    async def next_change() -> LoadProgressed:
        while True:
            event = await events.receive()
            if (
                isinstance(event, LoadProgressed)
                and event.model == model_id
                and event.stage != "ready"  # "Done!" says that
                and (event.stage, event.percent) != shown
            ):
                return event

    dotted = False  # the last thing sent was a dot: start the next line on a new line
    try:
        while True:
            reading: LoadProgressed | None = None
            with trio.move_on_after(1):
                reading = await next_change()
            if reading is None:
                await send.send(_progress("."))
                dotted = True
            else:
                shown = (reading.stage, reading.percent)
                line = progress_line(reading)
                await send.send(_progress("\n" + line if dotted else line))
                dotted = False
    except trio.EndOfChannel:
        return  # the bus closed: swapd is stopping, and acquire() will say so


async def metered(
    telemetry: Telemetry,
    model_id: str,
    exchange: Exchange,
    activity: RequestActivity | None,
    *,
    path: str,
    started: float,
) -> AsyncGenerator[bytes, None]:
    """The upstream's answer after the load, passed on untouched while a tap reads its
    token usage: recorded as the relay records any answer (token metrics, Prometheus, the
    request's activity row), so a key's ``dailyTokens`` counts it too (``scopes.admit``)."""
    headers = {name.lower(): value for name, value in exchange.headers}
    tap = UsageTap(
        content_type=headers.get("content-type", ""),
        content_encoding=headers.get("content-encoding", ""),
        path=path,
    )
    first_byte_at: float | None = None
    try:
        async for chunk in exchange.body():
            if first_byte_at is None:
                first_byte_at = trio.current_time()
            tap.feed(chunk)
            yield chunk
    finally:
        cut = not exchange.complete
        record = telemetry.request_finished(
            model_id,
            502 if cut else exchange.status,
            None if cut else tap,
            started=started,
            first_byte_at=first_byte_at,
            ended=trio.current_time(),
        )
        if activity is not None:
            activity.note_finished(record, cut=cut)


async def loading_stream(
    nursery: trio.Nursery,
    supervisor: Supervisor,
    model_id: str,
    open_exchange: OpenExchange,
    on_done: Callable[[Callable[[], None]], None],
    meter: Meter | None = None,
) -> AsyncIterator[bytes]:
    """Start the producer; return the body iterator. ``on_done`` registers its canceller;
    ``meter`` (if any) wraps the upstream's answer (``metered``)."""
    send, receive = trio.open_memory_channel[bytes](32)
    scope = trio.CancelScope()
    on_done(scope.cancel)

    async def produce() -> None:
        # It runs in the app's nursery, shared by every request: nothing may escape it.
        # A client that leaves closes the channel before its cleanup cancels this task,
        # so the next send meets a closed channel; that is the normal end, not an error.
        with scope:
            try:
                await stream_into()
            except* (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except* Exception:
                log.exception("the loading stream for %s failed", model_id)

    async def stream_into() -> None:
        lease: Lease | None = None
        exchange: Exchange | None = None
        async with send:
            try:
                started = trio.current_time()
                await send.send(_progress("━━━━━\n"))
                await send.send(_progress(f"swapd: loading model {model_id}\n"))
                failure: SwapdError | None = None
                # Subscribed before acquiring, so the load's first readings are not missed.
                with supervisor.bus.subscribe() as events:
                    async with trio.open_nursery() as ticker:
                        ticker.start_soon(_report_progress, events, model_id, send)
                        try:
                            lease = await supervisor.acquire(model_id)
                        except SwapdError as exc:
                            failure = exc
                        ticker.cancel_scope.cancel()
                took = trio.current_time() - started
                if failure is not None:
                    await send.send(_progress(f"\nFailed after {took:.2f}s\n"))
                    await send.send(_error(str(failure), failure.http_status))
                    await send.send(DONE)
                    return
                assert lease is not None
                await send.send(_progress(f"\nDone! ({took:.2f}s)\n━━━━━\n"))
                try:
                    exchange = await open_exchange(lease)
                except SwapdError as exc:
                    await send.send(_error(str(exc), exc.http_status))
                    await send.send(DONE)
                    return
                if exchange.status != 200:
                    body = b""
                    async for chunk in exchange.body():
                        body += chunk
                        if len(body) > 2000:
                            break
                    text = body.decode("utf-8", "replace")[:2000]
                    await send.send(_error(f"upstream answered {exchange.status}: {text}", 502))
                    await send.send(DONE)
                    return
                answer = exchange.body() if meter is None else meter(exchange)
                async with aclosing(answer):  # a client gone: the meter still records
                    async for chunk in answer:
                        await send.send(chunk)
                if not exchange.complete:  # the upstream stopped mid-answer: say so
                    await send.send(CUT_STREAM)
            finally:
                with trio.CancelScope(shield=True):
                    if exchange is not None:
                        await exchange.aclose()
                    if lease is not None:
                        lease.release()

    nursery.start_soon(produce)

    async def body() -> AsyncIterator[bytes]:
        async with receive:
            async for chunk in receive:
                yield chunk

    return body()
