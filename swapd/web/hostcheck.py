"""The DNS-rebinding guard: a loopback listener answers only to local Host names.

A web page can make the browser resolve its own name to 127.0.0.1 (DNS rebinding) and then
read swapd's answers as same-origin: config, logs, models. Such a request reaches swapd on
a loopback socket with the attacker's name in ``Host``. So a request arriving on a
loopback address (127.0.0.0/8, ::1; also a wildcard listener reached through loopback)
must name swapd by:

- an IP address (a page cannot rebind an address literal: its origin would be that address),
- a name without a dot (``localhost``, a container or LAN name: a rebinding page needs a
  name it controls in public DNS, which always has one) or a ``*.localhost`` name
  (RFC 6761: always loopback),
- this machine's host name,
- or a name listed in the config's ``allowedHosts`` (``*`` turns the check off: for a
  reverse proxy on the same machine that passes the public Host through).

Other requests get 403 with a JSON error naming the setting; a WebSocket handshake is
refused the same way. Requests on other addresses (a LAN interface, a unix socket) are
not checked: a page cannot rebind a name onto them without the network's help, and a
reverse proxy's Host there is not ours to judge. Ollama fixed the same hole
(CVE-2024-28224) with the same kind of rule.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from swapd.web import problems

if TYPE_CHECKING:
    from swapd.web.app import Services

__all__ = ["HostCheck", "host_allowed"]

log = logging.getLogger(__name__)

Message = dict[str, Any]
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


# Cached: a listener's address and the Host names clients send are few and repeat on
# every request, and ``ipaddress`` parsing cost ~30 µs a request (benchmarks/README.md).
@functools.lru_cache(maxsize=64)
def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def _hostname(host: str) -> str:
    """The name in a Host value, without port and brackets, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


@functools.lru_cache(maxsize=256)
def _allowed_cached(host: str, allowed: tuple[str, ...], machine: str) -> bool:
    return host_allowed(host, allowed, machine)


def host_allowed(host: str, allowed: Iterable[str], machine: str) -> bool:
    """Whether a request with ``Host: host`` may be served on a loopback listener."""
    name = _hostname(host)
    if not name:
        return False
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
        return True
    except ValueError:
        pass
    if "." not in name or name.endswith(".localhost") or name == machine:
        return True  # localhost, a LAN or container name: no outside page controls those
    extra = {_hostname(entry) for entry in allowed}
    return "*" in extra or name in extra


class HostCheck:
    """ASGI wrapper refusing foreign Host names on loopback listeners (module docstring)."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.machine = socket.gethostname().lower().rstrip(".")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and not self._allows(scope):
            await self._refuse(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allows(self, scope: dict[str, Any]) -> bool:
        server = scope.get("server")
        if not server or not isinstance(server[0], str) or not _is_loopback(server[0]):
            return True
        host = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
                break
        if host is None:
            return True  # HTTP/1.0 without Host: no browser sends that (HTTP/2 maps :authority)
        allowed = self.services.config.allowed_hosts
        if len(host) > 255:  # not a name any client sends twice: not worth a cache entry
            return host_allowed(host, allowed, self.machine)
        return _allowed_cached(host, allowed, self.machine)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        host = next((v for n, v in scope["headers"] if n == b"host"), b"")
        shown = host.decode("latin-1")[:200]
        log.warning("refused a request for host %r on a loopback listener", shown)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        message = (
            f"host '{shown}' is not allowed on a loopback listener (DNS-rebinding guard); "
            "add it to allowedHosts in the config to serve it"
        )
        path: str = scope.get("path", "")
        body = (
            problems.anthropic_error(403, message)
            if problems.is_anthropic_path(path)
            else problems.openai_error(403, message, code="host_not_allowed")
        )
        data = problems.json_bytes(body)
        await send(
            {
                "type": "http.response.start",
                "status": 403,
                "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"content-length", str(len(data)).encode()),
                    (b"connection", b"close"),  # an unread body must not pass for a request
                ],
            }
        )
        await send({"type": "http.response.body", "body": data, "more_body": False})
