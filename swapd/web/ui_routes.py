"""The web UI: static files under ``swapd/web/ui/static``, served at ``/ui``.

- ``GET /ui``, ``GET /ui/``: ``index.html``.
- ``GET /ui/<path>``: the file if it exists under the static directory; a path whose last
  segment has an extension (``.js``, ``.css``...) and names no file is a 404; any other
  path is a client-side route (``/ui/models``, ``/ui/logs``...) and gets ``index.html``.

Rules: nothing outside the static directory is ever served (``..``, hidden segments,
backslashes and symlinks leading out are refused with 404). There is no build step and no
CDN: the page, its ES modules and its one stylesheet are all in the package. Files are
small, so each is read per request (edits show up without a restart); every answer
carries an ``ETag`` and ``Cache-Control: no-cache``, so browsers revalidate and get a
304 when nothing changed. The pages may only talk to this swapd (``Content-Security-Policy``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

import trio
from quart import Quart, Response, request

from swapd.web import problems
from swapd.web.app import Services, json_response

__all__ = ["STATIC_DIR", "register"]

STATIC_DIR: Final = Path(__file__).parent / "ui" / "static"

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}

# Scripts, styles, fetches and images from this origin only: the UI works offline and
# nothing it shows (log lines, model output) can pull in anything from elsewhere.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def _locate(root: Path, path: str) -> Path | None:
    """The file ``path`` names under ``root``, or None (missing, or outside ``root``)."""
    parts = path.split("/")
    if any(p.startswith(".") or "\\" in p or "\0" in p for p in parts if p):
        return None
    candidate = root.joinpath(*[p for p in parts if p]).resolve()
    if not candidate.is_relative_to(root.resolve()) or not candidate.is_file():
        return None
    return candidate


def _wants_file(path: str) -> bool:
    """An asset request (``app.js``), as opposed to a client-side route (``logs``)."""
    return "." in path.rstrip("/").rsplit("/", 1)[-1]


async def _serve(file: Path) -> Response:
    data = await trio.Path(file).read_bytes()
    etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
    headers = {
        "Cache-Control": "no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
    }
    if file.suffix == ".html":
        headers["Content-Security-Policy"] = CSP
        headers["Referrer-Policy"] = "no-referrer"
    if etag in request.headers.get("if-none-match", ""):
        return Response(b"", status=304, headers=headers)
    content_type = CONTENT_TYPES.get(file.suffix.lower(), "application/octet-stream")
    return Response(data, status=200, content_type=content_type, headers=headers)


def register(app: Quart, services: Services, *, root: Path = STATIC_DIR) -> None:
    index = root / "index.html"

    def opened() -> None:  # models.<id>.warm.onUiOpen: the UI's page was requested
        if services.warm is not None:
            services.warm.ui_opened()

    async def page() -> Response:
        opened()
        return await _serve(index)

    async def asset(path: str) -> Response:
        file = _locate(root, path)
        if file is not None:
            return await _serve(file)
        if _wants_file(path) or ".." in path.split("/"):
            return json_response(404, problems.openai_error(404, "not found"))
        opened()
        return await _serve(index)

    app.add_url_rule("/ui", "ui", page, methods=["GET"])
    app.add_url_rule("/ui/<path:path>", "ui-asset", asset, methods=["GET"])
