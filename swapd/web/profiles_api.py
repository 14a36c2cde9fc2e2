"""Profiles (llama-swap v241): list them, and pick the active one.

- ``GET /api/profiles`` → ``{"active": null|"<name>", "profiles": [{"id", "description",
  "pins": {"<pin>": "<target or empty>"}}]}``, sorted by id; a disabled pin shows as ``""``.
- ``PUT /api/profiles/active`` with ``{"name": "<name>"}`` activates a profile;
  ``{"name": null}`` or ``{"name": ""}`` deactivates. 200 ``{"active": ...}``; 400 for a
  body that is not JSON, has no ``name`` or a name that is not a string or null; 404 for
  an unknown profile.

While a profile is active, a request whose model equals one of its pins goes to the pin's
target (``Router.pinned``). The selection lives in the router, so a reload or a restart
ends it, as in llama-swap. A change is published as ``ProfileChanged`` (the event stream's
``profileChanged``, whose data is ``{"active": ...}``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs
from quart import Quart, Response, request

from swapd.web import problems
from swapd.web.app import Services, json_response

__all__ = ["ProfileChanged", "register"]

log = logging.getLogger(__name__)


@attrs.frozen
class ProfileChanged:
    """The active profile changed (None: no profile is active)."""

    kind = "profileChanged"
    active: str | None

    def as_json(self) -> dict[str, Any]:
        return {"active": self.active}


def register(app: Quart, services: Services) -> None:
    async def list_profiles() -> Response:
        profiles = [
            {
                "id": profile_id,
                "description": profile.description,
                "pins": {pin: target or "" for pin, target in sorted(profile.pins.items())},
            }
            for profile_id, profile in sorted(services.config.profiles.items())
        ]
        return json_response(200, {"active": services.router.active_profile, "profiles": profiles})

    async def set_active() -> Response:
        try:
            body = json.loads(await request.get_data(as_text=True))
        except ValueError:
            return _error(400, "invalid profile request")
        if not isinstance(body, dict) or "name" not in body:
            return _error(400, "profile name is required")
        name = body["name"]
        if name is not None and not isinstance(name, str):
            return _error(400, "profile name must be a string or null")
        if name and name not in services.config.profiles:
            return _error(404, f'profile "{name}" not found')
        services.router.activate(name or None)
        log.info('active profile changed to "%s"', name or "")
        services.bus.publish(ProfileChanged(services.router.active_profile))
        return json_response(200, {"active": services.router.active_profile})

    app.add_url_rule("/api/profiles", "profiles", list_profiles, methods=["GET"])
    app.add_url_rule("/api/profiles/active", "profiles-active", set_active, methods=["PUT"])


def _error(status: int, message: str) -> Response:
    return json_response(status, problems.openai_error(status, message))
