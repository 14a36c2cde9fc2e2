"""The relay: send a request to an upstream and stream its answer back untouched.

Rules:
- bytes pass through as they arrive (``aiter_raw``): no decoding, no re-chunking, no
  per-chunk parsing; the upstream's ``content-encoding`` reaches the client unchanged;
- hop-by-hop headers are dropped both ways, ``X-Forwarded-For`` is appended, and an
  event stream gets ``X-Accel-Buffering: no`` so nginx in front does not buffer it;
- a client that sent no ``Accept-Encoding`` gets ``identity`` upstream, so it never
  receives a compressed body it did not ask for (httpx would ask for gzip otherwise);
- one ``httpx.AsyncClient`` per upstream base URL, with explicit limits, no proxy from
  the environment, and no read timeout (a model may think for minutes);
- every opened upstream response is closed by its owner (``Exchange.aclose``), shielded,
  whatever happens to the client — a leaked stream would hold a model slot forever;
- httpx's exceptions are translated here and nowhere else (``UpstreamUnreachable``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable

import attrs
import httpx
import trio

from swapd.errors import UpstreamUnreachable

__all__ = ["HOP_BY_HOP", "Exchange", "Forwarder", "request_headers", "response_headers"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
_DROP_REQUEST = HOP_BY_HOP | {"host", "content-length"}


def _named_by_connection(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(part.strip().lower() for part in value.split(","))
    return named


def request_headers(
    headers: Iterable[tuple[str, str]], *, client_ip: str | None
) -> list[tuple[str, str]]:
    """Headers to send upstream: hop-by-hop removed, X-Forwarded-For appended."""
    headers = list(headers)
    drop = _DROP_REQUEST | _named_by_connection(headers)
    out = [(n, v) for n, v in headers if n.lower() not in drop]
    names = {n.lower() for n, _ in out}
    if "accept-encoding" not in names:
        out.append(("accept-encoding", "identity"))
    if client_ip:
        forwarded = [v for n, v in out if n.lower() == "x-forwarded-for"]
        out = [(n, v) for n, v in out if n.lower() != "x-forwarded-for"]
        out.append(("x-forwarded-for", ", ".join([*forwarded, client_ip])))
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers to send back to the client."""
    headers = list(headers)
    drop = HOP_BY_HOP | _named_by_connection(headers)
    out = [(n, v) for n, v in headers if n.lower() not in drop]
    content_type = next((v for n, v in out if n.lower() == "content-type"), "")
    if "text/event-stream" in content_type.lower():
        out.append(("x-accel-buffering", "no"))
    return out


@attrs.define(eq=False)
class Exchange:
    """An upstream response whose body is still to be streamed."""

    status: int
    headers: list[tuple[str, str]]
    _response: httpx.Response

    async def body(self) -> AsyncIterator[bytes]:
        """The raw body, chunk by chunk as it arrives. Ends quietly if the upstream dies."""
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.HTTPError:
            return  # the client sees a truncated body, as with any proxy
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the upstream response (idempotent, shielded)."""
        with trio.CancelScope(shield=True):
            await self._response.aclose()


class Forwarder:
    """Opens upstream exchanges; owns one pooled client per upstream base URL."""

    def __init__(self, *, connect_timeout: float = 10.0) -> None:
        self._timeout = httpx.Timeout(None, connect=connect_timeout)
        # Building a TLS context reads the CA bundle (~50 ms, measured): do it once, not
        # per upstream client, or every model's first request pays for it.
        self._tls = ssl.create_default_context()
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client_for(self, base: str, *, max_connections: int = 64) -> httpx.AsyncClient:
        """The pooled client for ``base``. The pool is sized to what the upstream may
        serve at once: httpcore scans every pooled connection on each request, so a pool
        larger than the model's concurrency only costs CPU."""
        client = self._clients.get(base)
        if client is None:
            limits = httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=60.0,
            )
            client = httpx.AsyncClient(
                timeout=self._timeout,
                limits=limits,
                trust_env=False,
                follow_redirects=False,
                verify=self._tls,
            )
            self._clients[base] = client
        return client

    async def open(
        self,
        base: str,
        method: str,
        path_and_query: str,
        headers: list[tuple[str, str]],
        content: bytes | AsyncIterator[bytes] | None,
        *,
        max_connections: int = 64,
    ) -> Exchange:
        """Send the request; return once the upstream's status and headers arrived."""
        client = self.client_for(base, max_connections=max_connections)
        url = base.rstrip("/") + path_and_query
        request = client.build_request(method, url, headers=headers, content=content)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamUnreachable(f"upstream {base} did not answer: {_describe(exc)}") from exc
        return Exchange(
            response.status_code, response_headers(response.headers.multi_items()), response
        )

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for client in self._clients.values():
                await client.aclose()
            self._clients.clear()


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    return text
