"""The relay: send a request to an upstream and stream its answer back untouched.

Rules:
- bytes pass through as they arrive: no decoding, no re-chunking, no per-chunk parsing;
  the upstream's ``content-encoding`` reaches the client unchanged;
- hop-by-hop headers are dropped both ways, ``X-Forwarded-For`` is appended, and an
  event stream gets ``X-Accel-Buffering: no`` so nginx in front does not buffer it;
- a client that sent no ``Accept-Encoding`` gets ``identity`` upstream, so it never
  receives a compressed body it did not ask for;
- one connection pool per upstream base URL, bounded by the model's concurrency, with no
  read timeout (a model may think for minutes) and a connect timeout;
- every opened upstream response is closed by its owner (``Exchange.aclose``), shielded,
  whatever happens to the client — a leaked stream would hold a model slot forever;
- network and protocol errors are translated here and nowhere else
  (``UpstreamUnreachable``).

Why not httpx here (measured, see benchmarks/README.md): the relay speaks HTTP/1.1 to a
known upstream and passes bytes through, which needs none of httpx's client features
(cookies, auth flows, redirects, URL and header models, decoders). httpx + httpcore cost
~1.2 ms of CPU per forwarded request on the benchmark machine, against ~0.35 ms for the same
exchange over h11 (httpcore's own protocol engine) directly, and httpcore's pool scans every
pooled connection, with a ``poll()`` each, twice per request: after a burst at c=64 every
later request paid for 64 idle connections. This module keeps h11 for the protocol (framing,
chunked encoding, keep-alive rules, 1xx, HEAD) and adds a small LIFO pool: taking or
returning a connection is O(1), and a connection is checked for staleness only when it is
taken (one ``poll``).
"""

from __future__ import annotations

import re
import select
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import cast
from urllib.parse import urlsplit

import h11
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
_READ_SIZE = 64 * 1024
_MAX_HEAD = 100 * 1024  # response line + headers (httpcore's limit)
_KEEPALIVE_EXPIRY = 60.0  # seconds an idle upstream connection is kept


def request_headers(
    headers: Iterable[tuple[str, str]], *, client_ip: str | None
) -> list[tuple[str, str]]:
    """Headers to send upstream: hop-by-hop removed, X-Forwarded-For appended."""
    out: list[tuple[str, str]] = []
    forwarded: list[str] = []
    has_accept_encoding = False
    named: set[str] | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in _DROP_REQUEST:
            if lower == "connection":
                named = named or set()
                named.update(part.strip().lower() for part in value.split(","))
            continue
        if lower == "x-forwarded-for":
            forwarded.append(value)
            continue
        if lower == "accept-encoding":
            has_accept_encoding = True
        out.append((name, value))
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
        if "accept-encoding" in named:
            has_accept_encoding = False
        if "x-forwarded-for" in named:
            forwarded = []
    if not has_accept_encoding:
        out.append(("accept-encoding", "identity"))
    if client_ip:
        out.append(("x-forwarded-for", ", ".join([*forwarded, client_ip])))
    elif forwarded:
        out.extend(("x-forwarded-for", value) for value in forwarded)
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers to send back to the client. With ``Transfer-Encoding`` the body is
    decoded from its framing, so a ``Content-Length`` sent alongside it is dropped (it
    is to be ignored then: RFC 9112 section 6.3) and the server frames the body anew."""
    out: list[tuple[str, str]] = []
    named: set[str] | None = None
    event_stream = False
    headers = list(headers)
    framed = any(name.lower() == "transfer-encoding" for name, _ in headers)
    for name, value in headers:
        lower = name.lower()
        if framed and lower == "content-length":
            continue
        if lower in HOP_BY_HOP:
            if lower == "connection":
                named = named or set()
                named.update(part.strip().lower() for part in value.split(","))
            continue
        if lower == "content-type" and "text/event-stream" in value.lower():
            event_stream = True
        out.append((name, value))
    if named:
        out = [(n, v) for n, v in out if n.lower() not in named]
        event_stream = event_stream and "content-type" not in named
    if event_stream:
        out.append(("x-accel-buffering", "no"))
    return out


class _UpstreamError(Exception):
    """An exchange failed before the response head: on a ``reused`` keep-alive connection,
    and ``answered`` if any byte of an answer had arrived."""

    def __init__(
        self, message: str, *, reused: bool, answered: bool, connecting: bool = False
    ) -> None:
        super().__init__(message)
        self.reused = reused
        self.answered = answered
        self.connecting = connecting  # no connection could be made at all


_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class _Connection:
    """One HTTP/1.1 connection to an upstream: a trio stream, and h11's state for the
    request being sent and its response head."""

    __slots__ = ("_poll", "h11", "idle_since", "stream")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType | None) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self.idle_since = 0.0
        # Plain TCP only: a TLS peer may legitimately send bytes (session tickets) while
        # the connection idles, so a readable TLS socket proves nothing.
        self._poll: select.poll | None = None
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def stale(self, now: float) -> bool:
        """Idle too long, or the peer closed it (or sent bytes nobody asked for)."""
        if now - self.idle_since > _KEEPALIVE_EXPIRY:
            return True
        return self._poll is not None and bool(self._poll.poll(0))

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self.stream)


class _Pool:
    """The connections to one upstream base URL: idle ones LIFO, at most ``limit`` open."""

    def __init__(self, base: str, tls: ssl.SSLContext, connect_timeout: float, limit: int) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported upstream URL {base!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        default_port = 443 if self.https else 80
        self.port = parts.port or default_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if self.port == default_port else f"{host}:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._idle: list[_Connection] = []
        self._slots = trio.Semaphore(max(1, limit))
        self.closed = False

    async def acquire(self) -> tuple[_Connection, bool]:
        """A connection ready for a request, and whether it served one before. Waits for a
        free slot while ``limit`` connections are busy."""
        try:
            self._slots.acquire_nowait()  # the common case costs no checkpoint
        except trio.WouldBlock:
            await self._slots.acquire()
        try:
            now = trio.current_time()
            while self._idle:
                conn = self._idle.pop()
                if not conn.stale(now):
                    return conn, True
                await conn.aclose()
            return await self._connect(), False
        except BaseException:
            self._slots.release()
            raise

    async def _connect(self) -> _Connection:
        try:
            with trio.fail_after(self._connect_timeout):
                sock_stream = await trio.open_tcp_stream(self.host, self.port)
                if not self.https:
                    return _Connection(sock_stream, sock_stream.socket)
                tls_stream = trio.SSLStream(
                    sock_stream, self._tls, server_hostname=self.host, https_compatible=True
                )
                try:
                    await tls_stream.do_handshake()
                except BaseException:
                    await trio.aclose_forcefully(sock_stream)
                    raise
                return _Connection(tls_stream, None)
        except trio.TooSlowError:
            message = f"connect timed out after {self._connect_timeout:g} s"
            raise _UpstreamError(message, reused=False, answered=False, connecting=True) from None
        except _NETWORK_ERRORS as exc:
            raise _UpstreamError(
                _describe(exc), reused=False, answered=False, connecting=True
            ) from None

    def release(self, conn: _Connection | None) -> None:
        """Give back a slot, and ``conn`` (ready for a new request) unless it is None."""
        self._slots.release()
        if conn is not None:
            conn.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
            conn.idle_since = trio.current_time()
            self._idle.append(conn)

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


class _Body:
    """Body framing of one response (RFC 9112 section 6.3), decoded from raw reads.

    h11 parses the response head; the body is taken over from there because h11 costs
    ~12 µs per HTTP chunk (its event and state machinery), and an event stream is one
    chunk per token: here a whole read is decoded with a few ``find`` and slices. Kinds:
    ``none`` (HEAD, 1xx, 204, 304), ``length`` (Content-Length), ``chunked`` and ``close``
    (read until the upstream closes; never reused)."""

    __slots__ = ("_buf", "_in_chunk", "_trailers", "done", "extra", "kind", "remaining")

    def __init__(self, kind: str, length: int = 0) -> None:
        self.kind = kind
        self.remaining = length  # length: bytes still due; chunked: of the current chunk
        self.done = kind == "none" or (kind == "length" and length == 0)
        self.extra = False  # bytes arrived after the body: the connection is not reusable
        self._buf = bytearray()  # chunked: framing bytes not parsed yet
        self._in_chunk = False
        self._trailers = False

    def feed(self, data: bytes, out: list[bytes | bytearray]) -> None:
        """Decode ``data``; body pieces are appended to ``out``. Raises ValueError on bad
        framing."""
        if self.done:
            self.extra = self.extra or bool(data)
        elif self.kind == "close":
            out.append(data)
        elif self.kind == "length":
            if len(data) <= self.remaining:
                out.append(data)
                self.remaining -= len(data)
            else:
                out.append(data[: self.remaining])
                self.remaining = 0
                self.extra = True
            self.done = self.remaining == 0
        else:
            self._feed_chunked(data, out)

    def _feed_chunked(self, data: bytes, out: list[bytes | bytearray]) -> None:
        buf = self._buf
        view: bytes | bytearray = data
        if buf:
            buf += data
            view = buf
        pos = 0
        end = len(view)
        while pos < end and not self.done:
            if self._in_chunk:  # the rest of a chunk that began in an earlier read
                if self.remaining:
                    take = min(self.remaining, end - pos)
                    out.append(view[pos : pos + take])
                    self.remaining -= take
                    pos += take
                    continue
                if end - pos < 2:
                    break
                if not view.startswith(b"\r\n", pos):
                    raise ValueError("chunk data not followed by CRLF")
                pos += 2
                self._in_chunk = False
                continue
            if not self._trailers:
                match = _CHUNK_HEAD.match(view, pos)
                if match is not None:
                    size = int(match.group(1), 16)
                    start = match.end()
                    if not size:
                        self._trailers = True
                        pos = start
                        continue
                    if start + size + 2 <= end:  # the whole chunk is here: the common case
                        if not view.startswith(b"\r\n", start + size):
                            raise ValueError("chunk data not followed by CRLF")
                        out.append(view[start : start + size])
                        pos = start + size + 2
                        continue
                    self.remaining = size
                    self._in_chunk = True
                    pos = start
                    continue
            line_end = view.find(b"\n", pos)
            if line_end < 0:
                if end - pos > _MAX_HEAD:
                    raise ValueError("chunk header too long")
                break
            line = bytes(view[pos:line_end]).rstrip(b"\r")
            pos = line_end + 1
            if self._trailers:
                self.done = not line  # trailer fields are read and dropped
            else:
                raise ValueError(f"bad chunk header {line[:20]!r}")
        if self.done and pos < end:
            self.extra = True
        self._buf = bytearray(view[pos:]) if pos < end else bytearray()


#: A chunk's size line: hex size, optional extensions (ignored), CRLF (a bare LF as well).
_CHUNK_HEAD = re.compile(rb"([0-9A-Fa-f]{1,16})[\t ]*(?:;[^\r\n]*)?\r?\n")


def _framing(method: bytes, response: h11.Response) -> _Body:
    """How the body of ``response`` to a ``method`` request is delimited."""
    status = response.status_code
    if method == b"HEAD" or status < 200 or status in (204, 304):
        return _Body("none")
    encoding = b""
    length = None
    for name, value in response.headers:
        if name == b"transfer-encoding":
            encoding = value.lower()
        elif name == b"content-length":
            length = int(value)  # h11 has checked it is one valid number
    if encoding:
        return _Body("chunked" if encoding.rsplit(b",", 1)[-1].strip() == b"chunked" else "close")
    if length is not None:
        return _Body("length", length)
    return _Body("close")


def _keeps_alive(response: h11.Response) -> bool:
    if response.http_version != b"1.1":
        return False
    for name, value in response.headers:
        if name == b"connection" and b"close" in value.lower():
            return False
    return True


class Exchange:
    """An upstream response whose body is still to be streamed."""

    __slots__ = (
        "_body",
        "_conn",
        "_first",
        "_keep_alive",
        "_pool",
        "complete",
        "headers",
        "status",
    )

    def __init__(
        self,
        response: h11.Response,
        method: bytes,
        first: bytes,
        pool: _Pool,
        conn: _Connection,
    ) -> None:
        self.status = response.status_code
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in response.headers]
        self.headers = response_headers(headers)
        #: True once the whole body has arrived: set before ``body()`` yields its last
        #: chunk, so a server can send that chunk as the end of the response.
        self.complete = False
        self._body = _framing(method, response)
        self._keep_alive = _keeps_alive(response)
        self._first = first  # body bytes that came with the head
        self._pool = pool
        self._conn: _Connection | None = conn

    async def body(self) -> AsyncGenerator[bytes, None]:
        """The raw body, as it arrives. Ends quietly if the upstream dies.

        One chunk per network read: the pieces of body that one read brought (several
        HTTP chunks, i.e. several SSE events when the upstream is faster than the client)
        leave together, at once. Splitting them would only add one trip through every
        layer per piece (measured: ~150 µs of CPU each), and SSE does not care where
        chunk boundaries fall."""
        conn = self._conn
        if conn is None:
            return
        framing = self._body
        receive = _receiver(conn)
        data, self._first = self._first, b""
        pieces: list[bytes | bytearray] = []
        try:
            while True:
                if data:
                    framing.feed(data, pieces)
                if framing.done:
                    break
                if pieces:
                    yield _joined(pieces)
                data = await receive(_READ_SIZE)
                if not data:  # the upstream closed: the end of a "close" body, else a cut
                    framing.done = framing.kind == "close"
                    break
        except (ValueError, *_NETWORK_ERRORS):
            pass  # the client sees a truncated body, as with any proxy
        try:
            if framing.done:
                self.complete = True
                if (
                    self._keep_alive
                    and framing.kind != "close"
                    and not framing.extra
                    and not self._pool.closed
                    and self._conn is conn
                ):
                    # Back to the pool before the last bytes leave: kept even if nobody
                    # asks for more.
                    self._conn = None
                    self._pool.release(conn)
            if pieces:
                yield _joined(pieces)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the upstream response (idempotent, shielded). A body not read to its end
        takes its connection down with it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(None)
            await conn.aclose()


class Forwarder:
    """Opens upstream exchanges; owns one connection pool per upstream base URL."""

    def __init__(self, *, connect_timeout: float = 10.0) -> None:
        self._connect_timeout = connect_timeout
        # Building a TLS context reads the CA bundle (~50 ms, measured): do it once, not
        # per upstream, or every model's first request pays for it.
        self._tls = ssl.create_default_context()
        self._pools: dict[str, _Pool] = {}

    def _pool_for(
        self, base: str, max_connections: int, connect_timeout: float | None = None
    ) -> _Pool:
        """The pool for ``base``, sized to what the upstream may serve at once."""
        pool = self._pools.get(base)
        if pool is None:
            timeout = self._connect_timeout if connect_timeout is None else connect_timeout
            try:
                pool = _Pool(base, self._tls, timeout, max_connections)
            except ValueError as exc:
                raise UpstreamUnreachable(f"upstream {base}: {exc}") from None
            self._pools[base] = pool
        return pool

    async def open(
        self,
        base: str,
        method: str,
        path_and_query: str,
        headers: list[tuple[str, str]],
        content: bytes | AsyncIterator[bytes] | None,
        *,
        max_connections: int = 64,
        connect_timeout: float | None = None,
        response_header_timeout: float = 0,
    ) -> Exchange:
        """Send the request; return once the upstream's status and headers arrived.

        ``connect_timeout`` (the config's ``timeouts.connect``; 0 for none) applies to the
        pool of ``base`` when it is made; ``response_header_timeout`` (0 for none) bounds
        the wait for the response head once the request was sent.

        A reused keep-alive connection found dead before any answer came (the upstream
        closed it as the request went out) is replaced once by a fresh connection, when
        the body can be sent again (bytes or none)."""
        if connect_timeout == 0:
            connect_timeout = float("inf")
        pool = self._pool_for(base, max_connections, connect_timeout)
        head = [(b"host", pool.host_header.encode("latin-1"))]
        head += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        if isinstance(content, bytes | bytearray):
            head.append((b"content-length", str(len(content)).encode()))
        elif content is not None:
            head.append((b"transfer-encoding", b"chunked"))
        elif method not in ("GET", "HEAD", "OPTIONS", "DELETE", "TRACE"):
            head.append((b"content-length", b"0"))
        try:
            request = h11.Request(method=method, target=pool.prefix + path_and_query, headers=head)
        except h11.LocalProtocolError as exc:
            raise UpstreamUnreachable(f"cannot forward to {base}: {exc}") from None
        replayable = content is None or isinstance(content, bytes | bytearray)
        for attempt in (1, 2):
            try:
                conn, reused = await pool.acquire()
                return await _exchange(
                    pool, conn, reused, request, content, response_header_timeout
                )
            except _UpstreamError as exc:
                if attempt == 1 and exc.reused and not exc.answered and replayable:
                    continue
                raise UpstreamUnreachable(
                    f"upstream {base} did not answer: {exc}", connect_failed=exc.connecting
                ) from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            pools = list(self._pools.values())
            self._pools.clear()
            for pool in pools:
                await pool.aclose()


async def _send(
    conn: _Connection, request: h11.Request, content: bytes | AsyncIterator[bytes] | None
) -> None:
    """Write the request: head and a bytes body in one write, a streamed body by chunks."""
    state = conn.h11
    send_all = conn.stream.send_all
    if content is None or isinstance(content, bytes | bytearray):
        head = state.send(request) or b""
        if not content or len(content) <= _READ_SIZE:  # small: one write
            body = state.send(h11.Data(data=content)) or b"" if content else b""
            await send_all(head + body + (state.send(h11.EndOfMessage()) or b""))
            return
        await send_all(head)  # large: the body goes out as it is, not copied into one buffer
        for piece in state.send_with_data_passthrough(h11.Data(data=content)) or ():
            await send_all(piece)
        end = state.send(h11.EndOfMessage())
        if end:
            await send_all(end)
        return
    await send_all(state.send(request) or b"")
    async for chunk in content:
        if chunk:
            await send_all(state.send(h11.Data(data=chunk)) or b"")
    await send_all(state.send(h11.EndOfMessage()) or b"")


async def _exchange(
    pool: _Pool,
    conn: _Connection,
    reused: bool,
    request: h11.Request,
    content: bytes | AsyncIterator[bytes] | None,
    head_timeout: float = 0,
) -> Exchange:
    """Send ``request`` on ``conn`` and read the response head (within ``head_timeout``
    seconds of the request being sent, when it is above 0). On any failure the
    connection is closed and its slot given back."""
    state = conn.h11
    answered = False
    send_error: BaseException | None = None
    try:
        try:
            await _send(conn, request, content)
        except (h11.LocalProtocolError, *_NETWORK_ERRORS) as exc:
            send_error = exc  # the upstream may still have answered (413 to a big upload)
        deadline = trio.current_time() + head_timeout if head_timeout > 0 else float("inf")
        try:
            while True:
                event = state.next_event()
                if event is h11.NEED_DATA:
                    if head_timeout <= 0:  # the common case: no cancel scope per read
                        data = await _receiver(conn)(_READ_SIZE)
                    else:
                        data = await _read_by(conn, deadline, head_timeout)
                    answered = answered or bool(data)
                    state.receive_data(data)
                elif type(event) is h11.Response:
                    first, _closed = state.trailing_data  # the start of the body, if any
                    return Exchange(event, request.method, first, pool, conn)
                elif type(event) is not h11.InformationalResponse:
                    raise h11.RemoteProtocolError("connection closed before a response")
        except (h11.ProtocolError, *_NETWORK_ERRORS) as exc:
            raise _UpstreamError(
                _describe(send_error or exc), reused=reused, answered=answered
            ) from None
    except BaseException:
        pool.release(None)
        await conn.aclose()
        raise


async def _read_by(conn: _Connection, deadline: float, head_timeout: float) -> bytes:
    """One read of the response head, before ``deadline`` (``timeouts.responseHeader``)."""
    with trio.move_on_at(deadline):
        return await _receiver(conn)(_READ_SIZE)
    raise _UpstreamError(
        f"no response headers within {head_timeout:g} s (timeouts.responseHeader)",
        reused=False,
        answered=True,  # the request went out: never replay it
    )


def _joined(pieces: list[bytes | bytearray]) -> bytes:
    """The pieces (bytes, or bytearray slices of a read buffer) as one bytes; empties the
    list."""
    data = pieces[0] if len(pieces) == 1 and type(pieces[0]) is bytes else b"".join(pieces)
    pieces.clear()
    return data


def _receiver(conn: _Connection) -> Callable[[int], Awaitable[bytes]]:
    """``receive_some`` of the connection (bytes, or a bytearray h11 takes as well)."""
    return cast("Callable[[int], Awaitable[bytes]]", conn.stream.receive_some)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, h11.ProtocolError) and "before a response" not in text:
        return f"protocol error: {text}"
    return text
