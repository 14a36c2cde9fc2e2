"""What an API key limited to some models sees of the observe routes (docs/keys.md).

``scopes.check_route`` decides whether a route answers 403 or is filtered; this module
does the filtering for the routes it lets through: the event feed (``events_api.py``),
``/running``, ``/api/metrics``, ``/metrics`` and a model's own log. A :class:`View` is
taken once per request, in the handler (a stream's body may run after the request's
context is gone), and answers "may this key see data of model ``m``?".
Admin keys and keys of every model get the everything-view: nothing is filtered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from swapd.config.model import KeyRole
from swapd.core.keys import Grant
from swapd.observe.metrics import CounterFamily, GaugeFamily, HistogramFamily, MetricFamily
from swapd.web import scopes

if TYPE_CHECKING:
    from swapd.web.app import Services

__all__ = ["FeedFilter", "View", "limited", "view_of"]


def limited(grant: Grant | None) -> bool:
    """Whether ``grant`` sees only its models' data (not admin, not every model)."""
    return grant is not None and grant.role is not KeyRole.ADMIN and not grant.all_models


@attrs.frozen
class View:
    """The model names (local IDs and their aliases, peer models bare and as
    ``<peer>/<model>``) whose data a key may see; ``models is None``: everything."""

    models: frozenset[str] | None = None
    key: str | None = None  # the key's name (its own ``swapd_key_*`` series stay visible)

    @property
    def everything(self) -> bool:
        return self.models is None

    def shows(self, model: object) -> bool:
        return self.models is None or (isinstance(model, str) and model in self.models)

    def records(self, records: Iterable[dict[str, Any]], field: str = "model") -> list[Any]:
        """The records whose ``field`` names a model this key may see."""
        return [r for r in records if self.shows(r.get(field))]

    def model_status(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``modelStatus`` entries: local models by ID, peer models by name."""
        if self.models is None:
            return entries
        return [
            e
            for e in entries
            if self.shows(e["id"]) or (e.get("peerID") and self.shows(f"{e['peerID']}/{e['id']}"))
        ]

    def prometheus(self, families: Iterable[MetricFamily]) -> list[MetricFamily]:
        """Samples whose ``model`` label is out of scope and other keys' ``key`` samples
        dropped; label-less (process-wide) series kept."""
        families = list(families)
        if self.models is None:
            return families

        def keep(labels: tuple[tuple[str, str], ...]) -> bool:
            for name, value in labels:
                if name == "model" and not self.shows(value):
                    return False
                if name == "key" and value != self.key:
                    return False
            return True

        kept: list[MetricFamily] = []
        for family in families:
            if isinstance(family, HistogramFamily):
                series = tuple(s for s in family.series if keep(s.labels))
                kept.append(attrs.evolve(family, series=series))
            elif isinstance(family, CounterFamily | GaugeFamily):
                samples = tuple(s for s in family.samples if keep(s[0]))
                kept.append(attrs.evolve(family, samples=samples))
        return kept


def view_of(services: Services) -> View:
    """The view of the current request's key (call it in the handler)."""
    grant = scopes.current()
    if not limited(grant):
        return View()
    assert grant is not None
    config = services.config
    names: set[str] = set()
    for model_id, spec in config.models.items():
        if grant.covers([model_id, *spec.aliases]):
            names.update((model_id, *spec.aliases))
    for peer_id, peer in config.peers.items():
        for model in peer.models:
            if grant.covers([peer_id, f"{peer_id}/{model}", model]):
                names.update((model, f"{peer_id}/{model}"))
    return View(frozenset(names), grant.name)


#: Event kinds that are about one model (``data["model"]``).
_PER_MODEL = frozenset(
    {
        "loadProgress",
        "modelPreloaded",
        "modelRestart",
        "kvCacheSaved",
        "kvCacheRestored",
        "kvCacheFailed",
        "kvCacheDeleted",
    }
)


@attrs.define
class FeedFilter:
    """One event-feed client's filter: which messages (and which parts) its key may see.

    Keeps the IDs of the in-flight requests it has shown, so their ``remove`` passes and
    other requests' do not."""

    view: View
    _inflight: set[str] = attrs.field(factory=set)

    def apply(self, kind: str, data: Any) -> Any | None:
        """``data`` as this key may see it; None: send nothing."""
        view = self.view
        if view.everything:
            return data
        if kind == "modelStatus":
            return view.model_status(data)
        if kind in _PER_MODEL:
            return data if view.shows(data.get("model")) else None
        if kind == "metrics":
            shown = view.records(data)
            return shown if shown or not data else None
        if kind == "inflight":
            return self._inflight_message(data)
        if kind == "configReload":
            # Which models a reload added or changed (and its error text) would name models
            # out of scope: only that a reload started and whether it worked.
            return {k: v for k, v in data.items() if k in ("state", "trigger", "ok")}
        if kind == "logData":
            return data  # the feed subscribes a limited key to its models' logs only
        # activity (the feed asks ``view.shows`` before queueing it: the row's model is
        # not in the message), memory (device totals), profileChanged: no model's data
        return data

    def _inflight_message(self, data: dict[str, Any]) -> dict[str, Any] | None:
        operation = data.get("operation")
        if operation == "snapshot":
            requests = self.view.records(data["requests"])
            self._inflight.update(r["id"] for r in requests)
            return {"operation": "snapshot", "requests": requests}
        if operation == "remove":
            if data["id"] in self._inflight:
                self._inflight.discard(data["id"])
                return data
            return None
        request = data.get("request") or {}
        if self.view.shows(request.get("model")):
            self._inflight.add(request["id"])
            return data
        return None
