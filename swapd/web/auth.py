"""API keys: which credentials a request presents and whether one of them is configured.

Reference section 5.2, with sharp edge 18 fixed: every presented credential is checked
(a wrong ``Authorization`` no longer hides a right ``x-api-key``) and comparisons are
constant-time (``hmac.compare_digest``; only a key's length can leak). Credentials come
from ``Authorization: Basic base64(user:password)`` (the password; the user is ignored),
``Authorization: Bearer <key>`` and ``x-api-key: <key>``. Header names are
case-insensitive; the scheme words ``Basic`` and ``Bearer`` are case-sensitive, exactly
as in llama-swap.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping

from swapd.config.model import ApiKey
from swapd.core.keys import Grant, full_access, grant_of

__all__ = ["WWW_AUTHENTICATE", "KeyChecker", "presented_keys", "strip_credentials"]

# Sent with every 401: browsers then prompt for a password, which is how the UI's
# EventSource authenticates (Basic, any user name, the API key as password).
WWW_AUTHENTICATE = 'Basic realm="swapd"'

_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


def _pairs(headers: Headers) -> Iterable[tuple[str, str]]:
    return headers.items() if isinstance(headers, Mapping) else headers


def _basic_password(encoded: str) -> str | None:
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return None
    # Any bytes may follow the colon; surrogateescape keeps them exact for the comparison.
    user_pass = decoded.decode("utf-8", "surrogateescape")
    _, colon, password = user_pass.partition(":")
    return password if colon else None


def presented_keys(headers: Headers) -> list[str]:
    """Every non-empty credential in ``headers``, in header order."""
    keys: list[str] = []
    for name, value in _pairs(headers):
        lowered = name.lower()
        key: str | None = None
        if lowered == "authorization":
            if value.startswith("Basic "):
                key = _basic_password(value[len("Basic ") :])
            elif value.startswith("Bearer "):
                key = value[len("Bearer ") :]
        elif lowered == "x-api-key":
            key = value
        if key:
            keys.append(key)
    return keys


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class KeyChecker:
    """Decides whether a request may pass, and as which key, given ``apiKeys`` (full
    access, named ``apiKeys[i]``) and the scoped ``keys`` (compared by SHA-256 digest)."""

    __slots__ = ("_grants", "_keys")

    def __init__(self, keys: Iterable[str], scoped: Iterable[ApiKey] = ()) -> None:
        plain = [k for k in keys if k]
        named = [k for k in scoped if k.digest]
        # (compared value, digest comparison?, grant)
        self._keys: tuple[tuple[bytes, bool], ...] = (
            *((_encode(k), False) for k in plain),
            *((k.digest.encode("ascii"), True) for k in named),
        )
        self._grants: tuple[Grant, ...] = (
            *(full_access(f"apiKeys[{i}]") for i in range(len(plain))),
            *(grant_of(k) for k in named),
        )

    @property
    def enabled(self) -> bool:
        """Whether any key is configured (otherwise every request passes)."""
        return bool(self._keys)

    def identify(self, headers: Headers) -> Grant | None:
        """The grant of the first configured key a presented credential equals, or None.

        Every credential is compared with every key, with no early exit, so timing does not
        tell which key (or which header) matched."""
        found: Grant | None = None
        for presented in presented_keys(headers):
            candidate = _encode(presented)
            digest = hashlib.sha256(candidate).hexdigest().encode("ascii")
            for (key, hashed), grant in zip(self._keys, self._grants, strict=True):
                if hmac.compare_digest(digest if hashed else candidate, key) and found is None:
                    found = grant
        return found

    def allows(self, headers: Headers) -> bool:
        """True when no keys are configured, else iff a presented credential equals a key."""
        if not self._keys:
            return True
        return self.identify(headers) is not None


def strip_credentials(headers: Headers) -> list[tuple[str, str]]:
    """``headers`` without ``Authorization`` and ``x-api-key`` (what goes upstream)."""
    return [(n, v) for n, v in _pairs(headers) if n.lower() not in _CREDENTIAL_HEADERS]
