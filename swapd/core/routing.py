"""Which target serves a requested model name: a local model (by ID or alias) or a peer.

Local names always win; a name served by several peers goes to the first peer in sorted
order (llama-swap v193's rule); ``<peer>/<model>`` always names one peer's model (v242).
Built once per config, so a lookup is a dict access.

The active profile (llama-swap v241 ``profiles``) is the router's one piece of state: while
one is active, a name equal to one of its pins is first rewritten to the pin's target (one
level, no chaining); an empty target makes the name unroutable. A reload builds a new
router, so the selection ends with it, as in llama-swap.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from swapd.config.model import Config

__all__ = ["Route", "Router"]


@attrs.frozen
class Route:
    """``kind`` is ``local`` (``target`` is a model ID) or ``peer`` (a peer ID)."""

    kind: str
    target: str
    requested: str


class Router:
    def __init__(self, config: Config) -> None:
        self._profiles = config.profiles
        #: selector ID → target → requests in flight (spillover's reservations)
        self.reservations: dict[str, dict[str, int]] = {}
        self.active_profile: str | None = None
        self._pins: dict[str, str | None] = {}
        self._local: dict[str, str] = {}
        for model_id, model in config.models.items():
            for alias in model.aliases:
                self._local.setdefault(alias, model_id)
        for model_id in config.models:
            self._local[model_id] = model_id  # an ID wins over an alias
        # name → (peer ID, the name the peer knows). Every peer model is also reachable as
        # "<peer>/<model>" (llama-swap v242); the upstream then sees the bare name.
        self._peers: dict[str, tuple[str, str]] = {}
        for peer_id in sorted(config.peers):
            for name in config.peers[peer_id].models:
                self._peers.setdefault(name, (peer_id, name))
        for peer_id in sorted(config.peers):
            for name in config.peers[peer_id].models:
                self._peers.setdefault(f"{peer_id}/{name}", (peer_id, name))

    def activate(self, profile: str | None) -> None:
        """Make ``profile`` the active one (None: no profile). Raises KeyError if unknown."""
        pins = {} if profile is None else dict(self._profiles[profile].pins)
        self.active_profile, self._pins = profile, pins

    def pinned(self, name: str) -> str | None:
        """The name a request for ``name`` is rewritten to: the pin's target, ``""`` for a
        disabled pin, or ``name`` itself when no active pin matches."""
        if name not in self._pins:
            return name
        return self._pins[name] or ""

    def pins(self) -> dict[str, str | None]:
        return dict(self._pins)

    def resolve(self, name: str) -> Route | None:
        """The route for a requested name, after the active profile's pins."""
        return self.lookup(self.pinned(name) or "")

    def lookup(self, name: str) -> Route | None:
        """The route for ``name`` itself (pins already applied, or not wanted)."""
        if not name:
            return None
        model_id = self._local.get(name)
        if model_id is not None:
            return Route("local", model_id, name)
        peer = self._peers.get(name)
        if peer is not None:
            return Route("peer", peer[0], peer[1])
        return None

    def resolve_local(self, name: str) -> str | None:
        return self._local.get(self.pinned(name) or "")

    def reserve(self, selector_id: str, target: str, delta: int) -> None:
        """Count a request a spillover selector sent to ``target`` (+1), or its end (-1)."""
        counts = self.reservations.setdefault(selector_id, {})
        counts[target] = counts.get(target, 0) + delta

    def names(self) -> Iterator[str]:
        """Every name a client may ask for (for "did you mean" messages)."""
        yield from self._local
        yield from self._peers
