"""The stack's floor: what hypercorn, Quart and swapd's relay cost with no swapd logic.

::

    python benchmarks/stack_floor.py --mode hello|quart|relay --port N [--upstream URL]

Served the way swapd serves (``hypercorn.trio.serve`` in this process, access log off):

* ``hello``: a bare ASGI app that reads the body and answers a fixed small JSON body, or,
  for a body with ``"stream":true``, ``x_chunks`` SSE events (one ``send`` each, as a relay
  sends what each upstream read brought) and ``[DONE]``;
* ``quart``: the same answer from a QuartTrio route (``request.get_data()``, ``Response``);
* ``relay``: a bare ASGI app that forwards every request to ``--upstream`` with swapd's own
  relay (``swapd.web.forward.Forwarder``, the hop-by-hop header rules included) and
  streams the answer back: everything swapd does for a request minus routing, the
  supervisor lease, the usage tap, telemetry and Quart.

``bench.py`` loads these side by side with swapd, so "swapd - relay" is swapd's own logic
and "hello" is the least any request costs on hypercorn. SIGTERM exits at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from swapd.web.forward import Forwarder, request_headers

BODY = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","model":"bench","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Hello! How can I help you?"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":8}}'
)
EVENT = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'
)
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def hello(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await _lifespan(receive, send)
        return
    body = await _read_body(receive)
    if b'"stream":true' in body:
        chunks = int(json.loads(body).get("x_chunks", 100))
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(chunks):
            await send({"type": "http.response.body", "body": EVENT, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def relay_app(upstream: str) -> Callable[..., Awaitable[None]]:
    forwarder = Forwarder()

    async def relay(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await _lifespan(receive, send)
            return
        body = await _read_body(receive)
        client = scope.get("client")
        headers = request_headers(
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]],
            client_ip=client[0] if client else None,
        )
        exchange = await forwarder.open(
            upstream, scope["method"], scope["path"], headers, body, max_connections=128
        )
        raw = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in exchange.headers]
        await send({"type": "http.response.start", "status": exchange.status, "headers": raw})
        async for chunk in exchange.body():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return relay


def quart_app() -> QuartTrio:
    app = QuartTrio("floor")

    @app.route("/<path:rest>", methods=["GET", "POST"])
    async def answer(rest: str) -> Response:
        await request.get_data()
        return Response(BODY, content_type="application/json")

    return app


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["hello", "quart", "relay"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="")
    args = parser.parse_args(argv)
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.include_server_header = False
    app: Any = {"hello": hello, "quart": quart_app(), "relay": relay_app(args.upstream)}[args.mode]

    async def run() -> None:
        await serve(app, config)

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    trio.run(run)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
