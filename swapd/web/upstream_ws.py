"""WebSocket upgrades through ``/upstream/<model>/<path>`` (llama-swap v224), and
``compat.ignoreWebsockets`` (v249).

A WebSocket to a local model is relayed message by message to the same path on the
model's ``proxy`` (``ws://`` for ``http://``, ``wss://`` for ``https://``). Normally it is
a request like any other: it waits for the model to load, holds a lease while open (so
the model counts it as in flight and is not evicted under it), and ends when either side
closes. With ``compat.ignoreWebsockets: true`` it bypasses that: it cannot start the model
(409 while the model is not ready), takes no lease, and a swap may cut it off.
"""

from __future__ import annotations

import urllib.parse

import trio
import trio_websocket
from quart import Quart, Response, websocket

from swapd.core.states import ModelState
from swapd.web import problems, scopes
from swapd.web.app import Services, json_response

__all__ = ["register"]


def register(app: Quart, services: Services) -> None:
    async def relay(rest: str) -> Response | None:
        raw = _raw_path().removeprefix("/upstream/")
        segments = raw.split("/")
        model_id, remainder = None, []
        for end in range(1, len(segments) + 1):
            candidate = "/".join(urllib.parse.unquote(s) for s in segments[:end])
            model_id = services.router.resolve_local(candidate)
            if model_id is not None:
                remainder = segments[end:]
                break
        if model_id is None:
            return _reject(404, "model not found")
        grant = scopes.current()
        if not scopes.visible(grant, [model_id, *services.config.models[model_id].aliases]):
            return _reject(403, "this API key may not use the model")
        spec = services.config.models[model_id]
        lease = None
        if spec.compat.ignore_websockets:
            if services.supervisor.runner(model_id).state is not ModelState.READY:
                message = (
                    f"model {model_id} is not loaded; ignored websocket requests cannot start it"
                )
                return _reject(409, message)
            proxy = spec.proxy
        else:
            lease = await services.supervisor.acquire(model_id)
            proxy = lease.proxy
        accepted: list[bool] = []
        try:
            await _pump(proxy, "/" + "/".join(remainder), accepted)
        except (OSError, trio_websocket.HandshakeError) as exc:
            if accepted:
                raise
            return _reject(502, f"upstream {proxy} refused the websocket: {exc}")
        finally:
            if lease is not None:
                lease.release()
        return None

    app.add_websocket("/upstream/<path:rest>", "upstream-websocket", relay)


async def relay_websocket(proxy: str, path: str, accepted: list[bool]) -> None:
    """Relay this WebSocket to ``path`` on ``proxy`` until either side closes
    (``accepted`` gets an entry once the client's upgrade is accepted)."""
    await _pump(proxy, path, accepted)


async def _pump(proxy: str, path: str, accepted: list[bool]) -> None:
    parts = urllib.parse.urlsplit(proxy)
    scheme = "wss" if parts.scheme == "https" else "ws"
    url = f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}{path}"
    query = websocket.query_string.decode("latin-1")
    if query:
        url += "?" + query
    offered = websocket.requested_subprotocols
    async with trio_websocket.open_websocket_url(
        url, subprotocols=offered or None, max_message_size=64 * 1024 * 1024
    ) as upstream:
        await websocket.accept(subprotocol=upstream.subprotocol)
        accepted.append(True)
        async with trio.open_nursery() as nursery:

            async def to_upstream() -> None:
                while True:
                    await upstream.send_message(await websocket.receive())

            async def to_client() -> None:
                try:
                    while True:
                        await websocket.send(await upstream.get_message())
                except trio_websocket.ConnectionClosed:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(to_upstream)
            nursery.start_soon(to_client)


def _reject(status: int, message: str) -> Response:
    return json_response(status, problems.openai_error(status, message))


def _raw_path() -> str:
    raw = websocket.scope.get("raw_path")
    if not raw:
        return urllib.parse.quote(websocket.path)
    return str(raw.decode("latin-1"))
