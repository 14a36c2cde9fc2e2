"""Config routes: what swapd runs on, and reloading it.

- ``GET /api/config``: ``{"path", "yaml", "loaded_at", "last_reload"}``: the file the
  running config came from, its text as last loaded (not as it may read now),
  when it was loaded (epoch seconds) and the last reload's result (``null`` before one).
  The text is shown with the config's secrets (``apiKeys``, peers' ``apiKey``) replaced
  by ``REDACTED``: one key opens every route, and a browser tab showing the config, a
  screenshot or a support paste should not hand it on.
- ``POST /api/config/reload``: reload the file now (the same path as SIGHUP and
  ``--watch-config``). 200 with the result (``ok``, ``at``, ``trigger``, ``error``,
  ``added``, ``removed``, ``changed``, ``updated``, ``unchanged``); a broken file changes
  nothing and answers 400 with an OpenAI-style error whose message lists every problem,
  plus the same result under ``reload``.
"""

from __future__ import annotations

from quart import Quart, Response

from swapd.config.model import Config
from swapd.web import problems
from swapd.web.app import Services, json_response
from swapd.web.redact import REDACTED, redact_config_text

__all__ = ["REDACTED", "redact_secrets", "register"]


def redact_secrets(text: str, config: Config) -> str:
    """``text`` (the config file) with every API key and peer key of ``config`` replaced,
    found in the parsed YAML, so quoting and escapes cannot hide one (``redact.py``)."""
    return redact_config_text(text, config)


def register(app: Quart, services: Services) -> None:
    async def show() -> Response:
        reloader = services.reloader
        last = reloader.last if reloader is not None else None
        return json_response(
            200,
            {
                "path": reloader.path if reloader is not None else None,
                "yaml": redact_secrets(reloader.text, services.config) if reloader else "",
                "loaded_at": reloader.loaded_at if reloader is not None else services.started_at,
                "last_reload": last.as_json() if last is not None else None,
            },
        )

    async def reload() -> Response:
        reloader = services.reloader
        if reloader is None:
            return json_response(
                400, problems.openai_error(400, "swapd was not started from a config file")
            )
        result = await reloader.reload("api")
        if not result.ok:
            body = problems.openai_error(400, f"config not reloaded: {result.error}")
            body["reload"] = result.as_json()
            return json_response(400, body)
        return json_response(200, result.as_json())

    app.add_url_rule("/api/config", "config", show, methods=["GET"])
    app.add_url_rule("/api/config/reload", "config-reload", reload, methods=["POST"])
