"""Long-lived streams end when the key they were opened with is revoked.

A request is authorised once, when it starts, but ``/logs/stream``, ``/api/events`` and
``/api/events/ws`` may run for days. Each of them remembers the credentials it presented
and watches the bus: after every successful reload (``ConfigReloaded``, published once
the new keys are in place) the credentials are checked against the new ``apiKeys``; if
they would no longer be accepted, the stream's ``end`` is called. That covers a removed
key and also keys configured where there were none before. A scoped key whose role or
models changed (docs/keys.md) ends its streams too: the client reconnects under the new
scope.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from swapd.reload import ConfigReloaded
from swapd.web.auth import KeyChecker, presented_keys

if TYPE_CHECKING:
    from swapd.web.app import Services

__all__ = ["credentials_of", "ended_when_revoked"]


def credentials_of(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Only the credentials in ``headers``, as headers the key checker reads (a stream
    keeps these, not the whole request head)."""
    return [("x-api-key", key) for key in presented_keys(list(headers))]


@contextmanager
def ended_when_revoked(
    services: Services, credentials: list[tuple[str, str]], end: Callable[[], None]
) -> Iterator[None]:
    """Call ``end`` (synchronously, in the reloading task) once a reload has made
    ``credentials`` invalid; ``end`` must not block."""

    def scope_of(keys: KeyChecker) -> tuple[object, ...] | None:
        grant = keys.identify(credentials) if keys.enabled else None
        return None if grant is None else (grant.role, grant.patterns)

    before = scope_of(services.keys)

    def check(event: object) -> None:
        if not isinstance(event, ConfigReloaded) or not event.result.ok:
            return
        if not services.keys.allows(credentials):
            end()
        elif before is not None and scope_of(services.keys) not in (before, None):
            end()  # the key's role or models changed: reconnect under the new scope

    with services.bus.watch(check, (ConfigReloaded,)):
        yield
