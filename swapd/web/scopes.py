"""Scoped API keys at the HTTP edge: who presented which key, what its role opens, and
whether the model a request finally reaches is in the key's scope (docs/keys.md).

:class:`KeyGate` is an ASGI wrapper that identifies the key once per request (the
constant-time comparison in ``auth.py``) and leaves the :class:`~swapd.core.keys.Grant`
in the ASGI scope and in a context variable, so the Quart guard, the fast path, the relay
and the activity recorder all read the same answer without comparing again. The model
check runs where the target is final (``admit``, called by the relay for every upstream
exchange, after profiles, selectors, aliases and ``/upstream/`` paths were resolved).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

import trio

from swapd.config.model import KeyRole
from swapd.core.keys import Family, Grant, role_allows
from swapd.core.routing import Route
from swapd.errors import Forbidden, QueueFull
from swapd.observe.metrics import CounterFamily, MetricFamily
from swapd.web import recording
from swapd.web.model_routes import JSON_ROUTES, MULTIPART_ROUTES, QUERY_ROUTES

if TYPE_CHECKING:
    from swapd.web.app import Services

__all__ = [
    "GRANT_KEY",
    "KeyGate",
    "admit",
    "check_log",
    "check_model",
    "check_route",
    "current",
    "family_of",
    "in_scope",
    "names_of",
    "scoped_models",
    "visible",
    "visible_names",
]

GRANT_KEY: Final = "swapd.grant"
#: One line per model request made with a key: who (the key's name, never the secret).
request_log = logging.getLogger("swapd.requests")
_CURRENT: ContextVar[Grant | None] = ContextVar("swapd_key_grant", default=None)

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

_INFERENCE_EXACT = frozenset(
    {
        "/api/key",  # who the key is (key_api.py): every role may ask
        "/v1/models",
        "/models",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/show",
        "/api/tags",
        "/api/ps",
        "/api/version",
        *MULTIPART_ROUTES,
        *QUERY_ROUTES,
    }
)
# /v/… and /audioapi/… are the versionless and audio-task spellings of the model routes,
# /comfyui/… is comfyui_auto's passthrough (extra_routes.py): each reaches a model
# through relay.forward, which checks the model against the key's scope.
_INFERENCE_PREFIXES = ("/sdapi/v1/", "/upstream/", "/v/", "/audioapi/", "/comfyui")
_MODEL_ROUTES = frozenset(JSON_ROUTES)
#: Inference-family routes that list models (or describe the key) rather than use one
#: (not counted per key).
_LISTINGS = frozenset({"/v1/models", "/models", "/api/tags", "/api/ps", "/api/version", "/api/key"})
_OBSERVE_EXACT = frozenset(
    {"/running", "/metrics", "/api/hardware", "/api/performance", "/api/inflight"}
)
_OBSERVE_PREFIXES = ("/api/metrics", "/api/events", "/logs")
#: Observer routes a key limited to some models may read: they show only its models' data
#: (``scope_filters.py``), or no model's data at all (hardware, system samples).
_SCOPED_OBSERVE = frozenset(
    {
        "/api/metrics",
        "/api/metrics/activity",
        "/api/metrics/stats",
        "/api/events",
        "/api/events/ws",
        "/running",
        "/metrics",
        "/api/hardware",
        "/api/performance",
    }
)
#: Logs of swapd itself and of every model at once (a model's own log is ``/logs/stream/<id>``).
_WHOLE_LOGS = frozenset({"/logs", "/logs/stream", "/logs/stream/proxy", "/logs/stream/upstream"})


def family_of(method: str, path: str, json_routes: frozenset[str]) -> Family:
    """The route family of a request (by path; unknown paths count as admin)."""
    if path in json_routes or path in _INFERENCE_EXACT or path.startswith(_INFERENCE_PREFIXES):
        return Family.INFERENCE
    if method in ("GET", "HEAD", "WEBSOCKET") and (
        path in _OBSERVE_EXACT or path.startswith(_OBSERVE_PREFIXES)
    ):
        return Family.OBSERVE
    return Family.ADMIN


def check_route(grant: Grant | None, method: str, path: str, json_routes: frozenset[str]) -> None:
    """Raise ``Forbidden`` when ``grant``'s role does not open this route, or when the route
    would show more than the key's models and cannot be filtered to them.

    The one place that decides 403 versus filtered: for a key limited to some models (not
    admin), the observe routes in ``_SCOPED_OBSERVE`` answer filtered (``scope_filters``),
    ``/logs/stream/<model>`` answers when the model is in scope (``check_log``), the other
    observe routes (swapd's own and the combined logs) answer 403."""
    if grant is None:
        return
    family = family_of(method, path, json_routes)
    if not role_allows(grant.role, family):
        raise Forbidden(f"forbidden: the API key '{grant.name}' may not use {path}")
    if family is not Family.OBSERVE or grant.role is KeyRole.ADMIN or grant.all_models:
        return
    path = path.rstrip("/") or "/"
    if path in _SCOPED_OBSERVE:
        return
    if path in _WHOLE_LOGS:
        raise Forbidden(
            f"forbidden: {path} holds swapd's own log and every model's output; the API key "
            f"'{grant.name}' is limited to some models: read a model's log at "
            "/logs/stream/<model>"
        )
    if path.startswith("/logs/stream/"):
        return  # one model's log: the handler checks the model (check_log)
    raise Forbidden(
        f"forbidden: {path} shows every model; the API key '{grant.name}' is limited to some models"
    )


def check_log(services: Services, name: str, model_id: str | None) -> None:
    """403 naming ``name`` (only) when the current key may not read that log: a model's
    own log needs the model in scope; swapd's own and the combined logs (``model_id``
    None) need an admin key or a key of every model."""
    grant = current()
    if grant is None or grant.role is KeyRole.ADMIN or grant.all_models:
        return
    if model_id is None:
        raise Forbidden(
            f"forbidden: the log '{name}' shows every model; the API key '{grant.name}' is "
            "limited to some models"
        )
    spec = services.config.models.get(model_id)
    if not grant.covers([model_id, *(spec.aliases if spec is not None else ())]):
        raise Forbidden(f"the API key '{grant.name}' may not read the log of the model '{name}'")


def current() -> Grant | None:
    """The grant of the request being handled (None: no keys configured)."""
    return _CURRENT.get()


def names_of(services: Services, route: Route) -> list[str]:
    """Every name the route's final target answers to."""
    config = services.config
    if route.kind == "local":
        spec = config.models.get(route.target)
        return [route.target, *(spec.aliases if spec is not None else ())]
    model = route.requested.removeprefix(f"{route.target}/")
    return [route.target, f"{route.target}/{model}", model]


def check_model(services: Services, route: Route, asked: str) -> None:
    """403 naming ``asked`` (only) when the route's final target is outside the key's scope."""
    grant = current()
    if grant is not None and not grant.covers(names_of(services, route)):
        raise Forbidden(f"the API key '{grant.name}' may not use the model '{asked}'")


def visible(grant: Grant | None, names: list[str]) -> bool:
    """Whether a model known by ``names`` may be shown to ``grant``."""
    return grant is None or grant.covers(names)


def admit(services: Services, route: Route, register_cleanup: Callable[[Any], None]) -> None:
    """The scope check at the final target, then the key's limits (429 + Retry-After)."""
    check_model(services, route, route.requested)
    grant = current()
    if grant is None:
        return
    wait = services.key_limits.admit(grant, trio.current_time(), time.time())
    if wait is not None:
        raise QueueFull(
            f"the API key '{grant.name}' is over its limit; retry later",
            retry_after=int(wait),
        )
    activity = recording.current()

    def done() -> None:
        # Runs after the exchange closed (cleanups run in reverse), so the usage is known.
        services.key_limits.release(grant)
        metrics = activity.metrics if activity is not None else None
        if metrics is not None:
            used = metrics.input_tokens + metrics.output_tokens
            services.key_limits.count_tokens(grant.name, used, time.time())

    register_cleanup(done)


class KeyGate:
    """ASGI wrapper: identify the presented key once and remember it for the request."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not self.services.keys.enabled:
            await self.app(scope, receive, send)
            return
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
        if scope["type"] == "websocket":
            # Browsers cannot set headers on a WebSocket: the key may come as ?api_key=.
            from urllib.parse import parse_qs

            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            headers += [("x-api-key", k) for k in query.get("api_key", [])[:1]]
        grant = self.services.keys.identify(headers)
        scope[GRANT_KEY] = grant
        token = _CURRENT.set(grant)
        counted = (
            grant is not None
            and scope["type"] == "http"
            and family_of(scope["method"], scope["path"], _MODEL_ROUTES) is Family.INFERENCE
            and scope["path"] not in _LISTINGS
        )
        if not counted:
            try:
                await self.app(scope, receive, send)
            finally:
                _CURRENT.reset(token)
            return
        assert grant is not None
        status = 0

        async def watch(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            _CURRENT.reset(token)
            self.services.key_limits.count_request(grant.name, status)
            request_log.info(
                "%s %s key=%s status=%s", scope["method"], scope["path"], grant.name, status or "-"
            )


def in_scope(services: Services, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model list entries (``{"id": ...}``) the current key may see: a name that routes
    somewhere is shown when its final target is in scope; a selector when its name is."""
    grant = current()
    if grant is None or grant.all_models:
        return records
    shown = []
    for record in records:
        name = str(record.get("id", ""))
        peer = record.get("meta", {}).get("llamaswap", {}).get("peerID")
        route = Route("peer", peer, f"{peer}/{name}") if peer else services.router.resolve(name)
        names = names_of(services, route) if route is not None else [name]
        if grant.covers(names):
            shown.append(record)
    return shown


def scoped_models(services: Services) -> tuple[str, ...] | None:
    """The model names (local IDs, peer models as asked) whose activity the current key may
    read; None: every model. Rows store a local model's ID or a peer model's name."""
    grant = current()
    if grant is None or grant.all_models or grant.role is KeyRole.ADMIN:
        return None
    config = services.config
    names = [m for m, spec in config.models.items() if grant.covers([m, *spec.aliases])]
    for peer_id, peer in config.peers.items():
        for model in peer.models:
            if grant.covers([peer_id, f"{peer_id}/{model}", model]):
                names += [model, f"{peer_id}/{model}"]
    return tuple(names)


def visible_names(services: Services, names: Iterable[str]) -> list[str]:
    """``names`` (model IDs, aliases, peer models, selectors) the current key may be told
    about: an error listing "available models" must not name models out of its scope."""
    grant = current()
    if grant is None or grant.all_models:
        return list(names)
    shown = []
    for name in names:
        route = services.router.resolve(name)
        if grant.covers(names_of(services, route) if route is not None else [name]):
            shown.append(name)
    return shown


def key_metrics(services: Services) -> list[MetricFamily]:
    """Prometheus families labelled by key name (names from the config only: bounded)."""
    requests, tokens = services.key_limits.totals()
    return [
        CounterFamily(
            "swapd_key_requests",
            "Model requests by API key name and status class.",
            tuple(((("key", k), ("code", c)), float(n)) for (k, c), n in sorted(requests.items())),
        ),
        CounterFamily(
            "swapd_key_tokens",
            "Prompt and generated tokens by API key name.",
            tuple(((("key", k),), float(n)) for k, n in sorted(tokens.items())),
        ),
    ]
