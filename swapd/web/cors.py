"""Cross-origin rules: the CORS preflight answer and the WebSocket ``Origin`` check.

Preflight (reference section 5.1 item 3): the headers of the 204 swapd answers to every
``OPTIONS`` request. Browsers ask which request headers they may send
(``Access-Control-Request-Headers``); swapd allows whatever was asked, after dropping
anything that is not a valid header name so nothing odd is echoed back into a response
header. Preflights need no API key; other responses get no CORS headers from here.

WebSocket origins (``origin_allowed``): a WebSocket is not subject to CORS, so any page a
user visits could open ``/api/events/ws`` on a local swapd and read the logs and events
(a browser sends cached Basic credentials along). Browsers always send ``Origin`` on a
WebSocket handshake and pages cannot forge it, so a handshake is accepted only when it
has no ``Origin`` (not a browser: curl, SDKs, scripts), or when the Origin's host and port
are the ones the request was addressed to: ``Host``, or what a reverse proxy says the
client asked for (``X-Forwarded-Host``, ``Forwarded: host=``; a page cannot set those on
a WebSocket either). That is the same-origin rule the UI needs; a page on another site
is refused (403), as it is refused reading ``/api/events`` by CORS.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_ALLOW_HEADERS",
    "addressed_hosts",
    "origin_allowed",
    "preflight_headers",
    "sanitize_request_headers",
]

DEFAULT_ALLOW_HEADERS = "Content-Type, Authorization, Accept, X-Requested-With"
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
MAX_AGE = "86400"

_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
# What Go's strings.TrimSpace trims (unicode.IsSpace). Python's str.strip() also trims
# \x1c-\x1f, which Go keeps (and the entry is then dropped as invalid).
_GO_SPACE = (
    " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


def sanitize_request_headers(value: str | None) -> str | None:
    """Split on ``,``, trim, keep the entries that are RFC 7230 tokens (case preserved),
    join them with ``", "``; ``None`` when nothing survives."""
    if not value:
        return None
    kept = [entry for part in value.split(",") if _TOKEN.fullmatch(entry := part.strip(_GO_SPACE))]
    return ", ".join(kept) or None


def preflight_headers(request_headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """The headers of the 204 answer to a preflight with these request headers.

    ``Access-Control-Allow-Headers`` echoes the sanitised ``Access-Control-Request-Headers``,
    is omitted when that sanitises to nothing, and is the default list when the request
    header is absent or empty.
    """
    requested = next(
        (v for k, v in request_headers.items() if k.lower() == "access-control-request-headers"),
        "",
    )
    allow = sanitize_request_headers(requested) if requested else DEFAULT_ALLOW_HEADERS
    headers = [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Methods", ALLOW_METHODS),
    ]
    if allow is not None:
        headers.append(("Access-Control-Allow-Headers", allow))
    headers.append(("Access-Control-Max-Age", MAX_AGE))
    return headers


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
_FORWARDED_HOST = re.compile(r'(?:^|[;,\s])host\s*=\s*"?([^";,\s]+)', re.IGNORECASE)


def addressed_hosts(headers: Iterable[tuple[str, str]]) -> list[str]:
    """The ``host[:port]`` values a request was addressed to: ``Host``, every
    ``X-Forwarded-Host`` entry and every ``Forwarded: host=`` parameter."""
    hosts: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "host":
            hosts.append(value.strip())
        elif lowered == "x-forwarded-host":
            hosts.extend(part.strip() for part in value.split(","))
        elif lowered == "forwarded":
            hosts.extend(_FORWARDED_HOST.findall(value))
    return [host for host in hosts if host]


def _host_port(netloc: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + netloc)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or parts.username is not None or parts.path:
        return None
    return host.lower().rstrip("."), port or default_port


def origin_allowed(origin: str | None, hosts: Iterable[str]) -> bool:
    """Whether a WebSocket handshake with this ``Origin`` may proceed (module docstring):
    no Origin, or an Origin whose host and port are one of ``hosts`` (ports compared
    after filling in the scheme's default). ``Origin: null`` (sandboxed pages, files) and
    anything unparsable are refused."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        return False
    wanted = _host_port(parts.netloc, default)
    return wanted is not None and any(_host_port(host, default) == wanted for host in hosts)
