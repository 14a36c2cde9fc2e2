"""``GET /api/key``: what the presented API key is and may see (docs/keys.md).

``{"name", "role", "models", "limits"}``: the key's name from the config (never the
secret), its role (``inference``, ``observer``, ``admin``), its model patterns (``"*"``
for every model) and its limits (0: none). The UI reads it to hide controls the key
cannot use. Every role may ask (``scopes`` counts it with the model list, not as a model
request); without a valid key it is 401 like every route; with no keys configured the
answer is the everything-key: ``{"name": null, "role": "admin", "models": "*", ...}``.
"""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from swapd.core.keys import Grant
from swapd.web import scopes
from swapd.web.app import Services, json_response

__all__ = ["register"]


def describe(grant: Grant | None) -> dict[str, Any]:
    """The JSON answer for ``grant`` (None: keys are not enabled)."""
    if grant is None:
        return {"name": None, "role": "admin", "models": "*", "limits": _limits(None)}
    return {
        "name": grant.name,
        "role": grant.role.value,
        "models": "*" if grant.all_models else list(grant.patterns),
        "limits": _limits(grant),
    }


def _limits(grant: Grant | None) -> dict[str, int]:
    return {
        "maxConcurrent": grant.max_concurrent if grant else 0,
        "requestsPerMinute": grant.requests_per_minute if grant else 0,
        "dailyTokens": grant.daily_tokens if grant else 0,
    }


def register(app: Quart, services: Services) -> None:
    async def key() -> Response:
        # The guard answered 401 already when keys are enabled and none valid came.
        grant = scopes.current() if services.keys.enabled else None
        response = json_response(200, describe(grant))
        response.headers["Cache-Control"] = "no-store"  # the answer depends on the key
        return response

    app.add_url_rule("/api/key", "key", key, methods=["GET"])
