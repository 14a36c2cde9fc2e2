"""One forwarded exchange, whoever serves it: lease, upstream request, metered body.

Shared by the Quart inference routes (``inference.py``) and the ASGI fast path
(``fastpath.py``), so the relay has one implementation: take a lease on a local model (the
wait for a load happens here) or use a peer, open the upstream exchange, and pass its body
on untouched while a tap reads token usage (and, with ``captureBuffer``, a recorder keeps
the exchange). Nothing here reads Quart's request context: the caller hands in the
method, target, headers and client address, and a ``register_cleanup`` that runs its
callbacks, shielded, when the request is completely over.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING

import attrs
import trio

from swapd.config.model import Timeouts
from swapd.core.routing import Route
from swapd.errors import UpstreamUnreachable
from swapd.observe.captures import CaptureRecorder
from swapd.observe.metrics import UsageTap
from swapd.supervise.supervisor import Lease
from swapd.web import recording, scopes
from swapd.web.auth import strip_credentials
from swapd.web.forward import Exchange, request_headers

if TYPE_CHECKING:
    from swapd.web.app import Services

__all__ = ["CUT_STREAM", "Cleanup", "StallWatch", "forward", "open_exchange"]

log = logging.getLogger(__name__)

Cleanup = Callable[[Callable[[], Awaitable[None] | None]], None]


async def forward(
    services: Services,
    route: Route,
    method: str,
    target: str,
    client_headers: list[tuple[str, str]],
    client_ip: str | None,
    content: bytes | AsyncIterator[bytes] | None,
    register_cleanup: Cleanup,
) -> tuple[Exchange, AsyncIterator[bytes]]:
    """Forward one request; return the exchange (status, headers) and its metered body.

    ``client_headers`` are the client's, without the credentials it used for swapd;
    ``target`` is the upstream path with its query string."""
    started = trio.current_time()
    headers = client_headers
    pool = 64
    activity = recording.current()
    if activity is not None:
        activity.note_model(route.target if route.kind == "local" else route.requested)
    scopes.admit(services, route, register_cleanup)  # the key's scope and limits
    lease: Lease | None = None
    if route.kind == "local":
        lease = await services.supervisor.acquire(route.target)
        if activity is not None:
            activity.note_wait(trio.current_time() - started)
        register_cleanup(lease.release)
        base = lease.proxy
        pool = services.config.models[route.target].effective_concurrency_limit
    else:
        peer = services.config.peers[route.target]
        base = peer.proxy
        if peer.api_key:
            headers = strip_credentials(headers)
            headers += [("authorization", f"Bearer {peer.api_key}"), ("x-api-key", peer.api_key)]
    upstream_headers = request_headers(headers, client_ip=client_ip)
    exchange = await open_exchange(
        services, route, base, method, target, upstream_headers, content, pool
    )
    register_cleanup(exchange.aclose)
    metered = _metered(
        services,
        route,
        exchange,
        started,
        method=method,
        path=target.split("?", 1)[0],
        sent_headers=headers,
        sent_body=content,
        lease=lease,
    )
    return exchange, metered


async def open_exchange(
    services: Services,
    route: Route,
    base: str,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    content: bytes | AsyncIterator[bytes] | None,
    pool: int,
) -> Exchange:
    """Open the upstream exchange; a local model that refuses the connection is re-checked
    (``Supervisor.recheck``)."""
    timeouts = _timeouts(services, route)
    try:
        return await services.forwarder.open(
            base,
            method,
            target,
            headers,
            content,
            max_connections=pool,
            connect_timeout=timeouts.connect if timeouts else None,
            response_header_timeout=timeouts.response_header if timeouts else 0,
        )
    except UpstreamUnreachable as exc:
        if exc.connect_failed and route.kind == "local":
            services.supervisor.recheck(route.target)
        raise


def _timeouts(services: Services, route: Route) -> Timeouts | None:
    """The config's ``timeouts`` for the route's model or peer (gone after a reload: None)."""
    config = services.config
    if route.kind == "local":
        model = config.models.get(route.target)
        return model.timeouts if model is not None else None
    peer = config.peers.get(route.target)
    return peer.timeouts if peer is not None else None


def _metered(
    services: Services,
    route: Route,
    exchange: Exchange,
    started: float,
    *,
    method: str,
    path: str,
    sent_headers: list[tuple[str, str]],
    sent_body: bytes | AsyncIterator[bytes] | None,
    lease: Lease | None,
) -> AsyncIterator[bytes]:
    """The upstream body, passed on untouched while a tap reads token usage from it (and,
    with ``captureBuffer``, a recorder keeps the exchange)."""
    tap = None
    capture = None
    headers = {name.lower(): value for name, value in exchange.headers}
    event_stream = "text/event-stream" in headers.get("content-type", "")
    if method == "POST" and exchange.status == 200:
        tap = UsageTap(
            content_type=headers.get("content-type", ""),
            content_encoding=headers.get("content-encoding", ""),
            path=path,
        )
        captures = services.telemetry.captures
        if captures.enabled:
            capture = CaptureRecorder(
                captures.capacity,
                req_path=path,
                req_headers=sent_headers,
                req_body=sent_body if isinstance(sent_body, bytes) else None,
                resp_headers=exchange.headers,
            )
    model = route.target if route.kind == "local" else route.requested
    activity = recording.current()

    async def stalled() -> None:
        log.warning(
            "%s: the client read nothing for %g s; the request is cut and the model freed",
            model,
            services.config.send_timeout,
        )
        if lease is not None:
            lease.release()
        await exchange.aclose()

    async def relay() -> AsyncIterator[bytes]:
        first_byte_at: float | None = None
        cut = False
        sending = services.stalls.track(stalled)
        try:
            # aclosing: a relay closed early (client gone, or the server stopped asking
            # after the last chunk) closes the upstream body at once, not at GC.
            async with aclosing(exchange.body()) as body:
                async for chunk in body:
                    if first_byte_at is None:
                        first_byte_at = trio.current_time()
                    if tap is not None:
                        tap.feed(chunk)
                        if capture is not None:
                            capture.feed(chunk)
                    # Resumed once the server sent the chunk on: a client that stops
                    # reading keeps us here, and the watch cuts the request.
                    sending.since = trio.current_time()
                    yield chunk
                    sending.since = None
            if not exchange.complete:
                # The upstream died mid-answer (crash, unload, reset). An event stream
                # says so and ends as streams end, so no client takes it for a whole
                # answer; nothing of it counts as a success.
                cut = True
                if event_stream:
                    yield CUT_STREAM
        finally:
            services.stalls.forget(sending)
            record = services.telemetry.request_finished(
                model,
                502 if cut else exchange.status,
                None if cut else tap,
                started=started,
                first_byte_at=first_byte_at,
                ended=trio.current_time(),
                capture=capture,
            )
            if activity is not None:
                activity.note_finished(record, cut=cut)

    return relay()


CUT_STREAM = (
    b'\n\ndata: {"error":{"message":"the upstream stopped before it finished its answer",'
    b'"type":"server_error","code":"upstream_cut"}}\n\ndata: [DONE]\n\n'
)


@attrs.define(eq=False)
class _Sending:
    """One response being relayed: since when its last chunk waits to be sent."""

    cut: Callable[[], Awaitable[None]]
    since: float | None = None


class StallWatch:
    """Cuts requests whose client stopped reading (``sendTimeout``).

    hypercorn writes to the socket in a shielded scope, so a client that never reads
    holds its response's send, and with it the request's lease, forever: its model
    could never be swapped out. Each relayed response says here when a chunk starts
    waiting to be sent; :meth:`run` (one task per app) checks every second or so and
    gives up the lease and the upstream exchange of a response that waited longer than
    the timeout. The stuck connection itself goes when the client reads or leaves."""

    def __init__(self, timeout: Callable[[], float]) -> None:
        self._timeout = timeout
        self._active: set[_Sending] = set()

    def track(self, cut: Callable[[], Awaitable[None]]) -> _Sending:
        sending = _Sending(cut)
        self._active.add(sending)
        return sending

    def forget(self, sending: _Sending) -> None:
        self._active.discard(sending)

    async def run(self) -> None:
        while True:
            timeout = self._timeout()
            await trio.sleep(min(1.0, timeout / 4) if timeout > 0 else 1.0)
            if timeout <= 0:
                continue
            now = trio.current_time()
            for sending in [s for s in self._active if s.since is not None]:
                if now - sending.since >= timeout:  # type: ignore[operator]
                    self._active.discard(sending)
                    with trio.CancelScope(shield=True):
                        await sending.cut()
