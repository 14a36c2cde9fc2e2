"""CORS preflight: the headers of the 204 swapd answers to every ``OPTIONS`` request.

Reference section 5.1 item 3. Browsers ask which request headers they may send
(``Access-Control-Request-Headers``); swapd allows whatever was asked, after dropping
anything that is not a valid header name so nothing odd is echoed back into a response
header. Preflights need no API key; other responses get no CORS headers from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["DEFAULT_ALLOW_HEADERS", "preflight_headers", "sanitize_request_headers"]

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
