"""A fast fake OpenAI upstream for the benchmarks (standard library only, asyncio).

::

    python benchmarks/fake_upstream.py --port 0 [--ready-after 0.5] [--chunks 100]
                                       [--chunk-delay 0] [--launch-log FILE] [--model NAME]

Why not swapd's demo upstream (``swapd.testing.upstream``): that one is a complete test
tool on trio + h11 and costs ~60 µs of CPU per SSE event and ~0.3 ms per small request on
the benchmark machine, which makes "direct" mostly a measure of itself. This server does
the least an HTTP/1.1 server can: ``asyncio.Protocol`` callbacks, a hand-written parser
for the requests the benchmarks send, pre-built responses. Properties the benchmarks rely
on:

* **TCP_NODELAY** on every connection and **keep-alive** (HTTP/1.1; ``Connection: close``
  honoured); pipelined requests are answered in order;
* ``POST <any path>``: a JSON body is read (``Content-Length`` or chunked). With
  ``"stream": true`` the answer is an event stream of ``x_chunks`` content events (default
  ``--chunks``), then a usage event and ``data: [DONE]``, in chunked encoding, **one socket
  write per event** like llama-server, ``x_delay_ms`` apart (default ``--chunk-delay``).
  Otherwise a ~400-byte ``chat.completion`` with ``usage``;
* ``GET /health``: 503 until ``--ready-after`` seconds **after the process was launched**
  (its start time in ``/proc/self/stat``, so interpreter start-up counts), then 200; POSTs
  are 503 until then as well. ``GET /v1/models`` lists ``--model``;
* ``--launch-log FILE`` appends one JSON line at start (``pid``, ``launched``, ``ready_at``,
  ``listening`` in CLOCK_BOOTTIME seconds): the burst scenario counts launches with it and
  the cold-start scenario reads when the process really started;
* prints ``fake upstream listening on http://HOST:PORT pid PID`` once listening; SIGTERM
  and SIGINT exit 0 at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def boottime() -> float:
    """CLOCK_BOOTTIME, the clock /proc start times are counted in."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def launched_at() -> float:
    """When this process was started (fork/exec), in CLOCK_BOOTTIME seconds (10 ms steps)."""
    with open("/proc/self/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / CLK_TCK  # field 22, starttime, in clock ticks since boot


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _fixed(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        _head(status, [("content-type", content_type), ("content-length", str(len(body)))]) + body
    )


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Replies:
    """Every response the server sends, built once."""

    def __init__(self, model: str) -> None:
        self.model = model
        created = int(time.time())
        completion = {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How can I help you?"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
        }
        self.small = _fixed("200 OK", _json(completion))
        self.health_ok = _fixed("200 OK", b'{"status":"ok"}')
        self.health_loading = _fixed("503 Service Unavailable", b'{"status":"loading"}')
        self.not_ready = _fixed(
            "503 Service Unavailable", b'{"error":{"message":"loading model","code":503}}'
        )
        self.models = _fixed(
            "200 OK", _json({"object": "list", "data": [{"id": model, "object": "model"}]})
        )
        self.not_found = _fixed("404 Not Found", b'{"error":{"message":"not found"}}')
        self.bad_request = _fixed("400 Bad Request", b'{"error":{"message":"bad request"}}')
        self.stream_head = _head(
            "200 OK",
            [
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("transfer-encoding", "chunked"),
            ],
        )
        base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": created}
        delta = {**base, "model": model}
        self.event = _chunk(
            b"data: "
            + _json({**delta, "choices": [{"index": 0, "delta": {"content": " tok"}}]})
            + b"\n\n"
        )
        final = {
            **delta,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 100, "total_tokens": 109},
        }
        self.final = _chunk(b"data: " + _json(final) + b"\n\n")
        self.done = _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.replies = Replies(args.model)
        self.chunks = args.chunks
        self.chunk_delay = args.chunk_delay
        self.ready_at = launched_at() + args.ready_after
        self.ready = args.ready_after <= 0

    def is_ready(self) -> bool:
        if not self.ready and boottime() >= self.ready_at:
            self.ready = True
        return self.ready


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a stream is being written; later requests wait their turn
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        """Answer every complete request in the buffer, in order."""
        while self.transport is not None and not self.busy and not self.closing:
            request = self.take_request()
            if request is None:
                return
            self.answer(*request)

    def take_request(self) -> tuple[bytes, bytes, dict[bytes, bytes], bytes] | None:
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            method, target, _version = lines[0].split(b" ", 2)
        except ValueError:
            self.fail()
            return None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parsed = _dechunk(buf, start)
            if parsed is None:
                return None
            body, consumed = parsed
        else:
            length = int(headers.get(b"content-length", b"0") or 0)
            if len(buf) - start < length:
                return None
            body, consumed = bytes(buf[start : start + length]), start + length
        del buf[:consumed]
        if headers.get(b"connection", b"").lower() == b"close":
            self.closing = True
        return method, target, headers, body

    def answer(
        self, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> None:
        replies = self.server.replies
        path = target.split(b"?", 1)[0]
        if method == b"GET" and path == b"/health":
            self.send(replies.health_ok if self.server.is_ready() else replies.health_loading)
        elif method == b"GET" and path in (b"/v1/models", b"/models"):
            self.send(replies.models)
        elif method != b"POST":
            self.send(replies.not_found)
        elif not self.server.is_ready():
            self.send(replies.not_ready)
        else:
            try:
                request = json.loads(body) if body else {}
            except ValueError:
                request = None
            if not isinstance(request, dict):
                self.send(replies.bad_request)
            elif request.get("stream") is True:
                chunks = int(request.get("x_chunks", self.server.chunks))
                delay = float(request.get("x_delay_ms", self.server.chunk_delay * 1000)) / 1000
                self.busy = True
                asyncio.get_running_loop().create_task(self.stream(chunks, delay))
                return
            else:
                self.send(replies.small)
        if self.closing:
            self.close()

    async def stream(self, chunks: int, delay: float) -> None:
        replies = self.server.replies
        try:
            self.send(replies.stream_head)
            for _ in range(chunks):
                if delay > 0:
                    await asyncio.sleep(delay)
                if self.transport is None:
                    return
                self.send(replies.event)
                if self.transport.get_write_buffer_size() > 256 * 1024:
                    await asyncio.sleep(0)  # a slow reader: let the loop flush
            self.send(replies.final)
            self.send(replies.done)
        finally:
            self.busy = False
        if self.closing:
            self.close()
        elif self.buffer:
            self.process()

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def fail(self) -> None:
        self.send(self.server.replies.bad_request)
        self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def _dechunk(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """A complete chunked body at ``buf[start:]``: (body, end offset), or None if partial."""
    parts: list[bytes] = []
    pos = start
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0] or b"0", 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", line_end)
            if buf[line_end : line_end + 4] == b"\r\n\r\n":
                return b"".join(parts), line_end + 4
            if trailer_end < 0:
                return None
            return b"".join(parts), trailer_end + 4
        data_start = line_end + 2
        if len(buf) < data_start + size + 2:
            return None
        parts.append(bytes(buf[data_start : data_start + size]))
        pos = data_start + size + 2


def append_line(path: str, record: dict[str, float]) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(record) + "\n")


async def main(args: argparse.Namespace) -> int:
    server = Server(args)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    listener = await loop.create_server(
        lambda: Connection(server), args.host, args.port, backlog=1024, reuse_address=True
    )
    port = listener.sockets[0].getsockname()[1]
    if args.launch_log:
        record = {"pid": os.getpid(), "launched": launched_at(), "ready_at": server.ready_at}
        append_line(args.launch_log, {**record, "listening": boottime()})
    print(f"fake upstream listening on http://{args.host}:{port} pid {os.getpid()}", flush=True)
    await stop.wait()
    listener.close()
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--model", default="bench")
    parser.add_argument("--ready-after", type=float, default=0.0, help="s after launch")
    parser.add_argument("--chunks", type=int, default=100, help="content events per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="s between events")
    parser.add_argument("--launch-log", default=None, help="append a JSON line at start")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
