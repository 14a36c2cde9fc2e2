"""Which target serves a requested model name: a local model (by ID or alias) or a peer.

Local names always win; a name served by several peers goes to the first peer in sorted
order (llama-swap's rule). Built once per config, so a lookup is a dict access.
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
        self._local: dict[str, str] = {}
        for model_id, model in config.models.items():
            for alias in model.aliases:
                self._local.setdefault(alias, model_id)
        for model_id in config.models:
            self._local[model_id] = model_id  # an ID wins over an alias
        self._peers: dict[str, str] = {}
        for peer_id in sorted(config.peers):
            for name in config.peers[peer_id].models:
                self._peers.setdefault(name, peer_id)

    def resolve(self, name: str) -> Route | None:
        model_id = self._local.get(name)
        if model_id is not None:
            return Route("local", model_id, name)
        peer_id = self._peers.get(name)
        if peer_id is not None:
            return Route("peer", peer_id, name)
        return None

    def resolve_local(self, name: str) -> str | None:
        return self._local.get(name)

    def names(self) -> Iterator[str]:
        """Every name a client may ask for (for "did you mean" messages)."""
        yield from self._local
        yield from self._peers
