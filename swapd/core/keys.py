"""Scoped API keys, the pure part: which models a key may use, which route families its
role opens, and its per-key limits (requests in flight, per minute, tokens per day).

No I/O: the web layer (``swapd/web/scopes.py``) hands in names and clock readings.
"""

from __future__ import annotations

import collections
import enum
import fnmatch
import math
from collections.abc import Iterable

import attrs

from swapd.config.model import ApiKey, KeyRole

__all__ = ["Family", "Grant", "Limiter", "full_access", "grant_of", "role_allows"]


class Family(enum.Enum):
    """What a route does, for the role check."""

    PUBLIC = "public"
    INFERENCE = "inference"  # model routes and the model list
    OBSERVE = "observe"  # read-only metrics, activity, events, logs
    ADMIN = "admin"  # everything else: load/unload, config, reload, captures


_OPENS = {
    KeyRole.INFERENCE: frozenset({Family.PUBLIC, Family.INFERENCE}),
    KeyRole.OBSERVER: frozenset({Family.PUBLIC, Family.INFERENCE, Family.OBSERVE}),
    KeyRole.ADMIN: frozenset(Family),
}


@attrs.frozen
class Grant:
    """Who presented a key: its name, role, model patterns and limits."""

    name: str
    role: KeyRole
    patterns: tuple[str, ...] = ("*",)
    max_concurrent: int = 0
    requests_per_minute: int = 0
    daily_tokens: int = 0

    @property
    def all_models(self) -> bool:
        return "*" in self.patterns

    def covers(self, names: Iterable[str]) -> bool:
        """Whether one of ``names`` (a model's ID and aliases, a peer model's names)
        matches one of the key's patterns (globs, case-sensitive)."""
        if self.all_models:
            return True
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in self.patterns)


def full_access(name: str) -> Grant:
    """A plain ``apiKeys`` entry: every model, every route, no limits."""
    return Grant(name, KeyRole.ADMIN)


def grant_of(key: ApiKey) -> Grant:
    return Grant(
        key.name,
        key.role,
        key.models,
        key.max_concurrent,
        key.requests_per_minute,
        key.daily_tokens,
    )


def role_allows(role: KeyRole, family: Family) -> bool:
    return family in _OPENS[role]


DAY = 86400.0


@attrs.define
class _State:
    in_flight: int = 0
    starts: collections.deque[float] = attrs.field(factory=collections.deque)
    day: int = -1
    tokens: int = 0


@attrs.define
class Limiter:
    """Per-key counters; keyed by key name so a reload keeps them (limits may change)."""

    _states: dict[str, _State] = attrs.field(factory=dict)
    #: lifetime totals for Prometheus: (key, status class) → requests; key → tokens
    _requests: dict[tuple[str, str], int] = attrs.field(factory=dict)
    _tokens: dict[str, int] = attrs.field(factory=dict)

    def count_request(self, name: str, status: int) -> None:
        code = f"{status // 100}xx" if status else "none"
        self._requests[name, code] = self._requests.get((name, code), 0) + 1

    def totals(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        return dict(self._requests), dict(self._tokens)

    def admit(self, grant: Grant, now: float, wall: float) -> float | None:
        """Start one request of ``grant`` at trio time ``now`` (wall clock ``wall`` for the
        day). None: admitted (call ``release`` when it ends); else seconds to retry after."""
        state = self._states.setdefault(grant.name, _State())
        if grant.daily_tokens:
            day = int(wall // DAY)
            if state.day != day:
                state.day, state.tokens = day, 0
            if state.tokens >= grant.daily_tokens:
                return math.ceil((day + 1) * DAY - wall)
        if grant.max_concurrent and state.in_flight >= grant.max_concurrent:
            return 1.0
        if grant.requests_per_minute:
            while state.starts and state.starts[0] <= now - 60:
                state.starts.popleft()
            if len(state.starts) >= grant.requests_per_minute:
                return max(1.0, math.ceil(state.starts[0] + 60 - now))
            state.starts.append(now)
        state.in_flight += 1
        return None

    def release(self, grant: Grant) -> None:
        state = self._states.get(grant.name)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1

    def count_tokens(self, name: str, tokens: int, wall: float) -> None:
        """Add ``tokens`` used by key ``name`` to today's total."""
        state = self._states.setdefault(name, _State())
        day = int(wall // DAY)
        if state.day != day:
            state.day, state.tokens = day, 0
        state.tokens += max(0, tokens)
        self._tokens[name] = self._tokens.get(name, 0) + max(0, tokens)
