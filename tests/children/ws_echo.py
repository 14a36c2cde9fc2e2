"""A WebSocket model server for tests: echoes each message back prefixed with the path
it was opened on (``<path>: <message>``). Usage: ``ws_echo.py PORT``."""

from __future__ import annotations

import sys
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def handler(request: WebSocketRequest) -> None:
    connection = await request.accept()
    try:
        while True:
            message = await connection.get_message()
            await connection.send_message(f"{request.path}: {message}")
    except ConnectionClosed:
        pass


def main() -> None:
    port = int(sys.argv[1])
    trio.run(partial(serve_websocket, handler, "127.0.0.1", port, ssl_context=None))


if __name__ == "__main__":
    main()
