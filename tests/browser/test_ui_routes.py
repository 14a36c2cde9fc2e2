"""Serving the web UI at /ui (no browser needed): files, fallback, caching, no escape."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import trio

from swapd.testing import open_swapd, upstream_cmd
from swapd.web import ui_routes

CONFIG = f"apiKeys: [sk-x]\nmodels:\n  m:\n    cmd: {upstream_cmd()}\n    proxy: http://127.0.0.1:${{PORT}}\n"


async def raw_get(url: str, target: str) -> bytes:
    """GET ``target`` exactly as written (clients would normalise ``..`` away)."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {target} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, body = data.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
        while len(body) < length:
            body += await stream.receive_some()
    return head + b"\r\n\r\n" + body


async def test_pages_assets_and_client_routes() -> None:
    with trio.fail_after(30):
        async with open_swapd(CONFIG) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            index = (await client.get("/ui/")).text
            for path in [
                "/ui",
                "/ui/",
                "/ui/models",
                "/ui/logs",
                "/ui/activity",
                "/ui/playground",
                "/ui/config",
                "/ui/some/deep/route",
            ]:
                reply = await client.get(path)  # no key needed for the page itself
                assert reply.status_code == 200, path
                assert reply.headers["content-type"] == "text/html; charset=utf-8"
                assert reply.text == index
                assert "connect-src 'self'" in reply.headers["content-security-policy"]
            for path, kind in [
                ("/ui/app.css", "text/css; charset=utf-8"),
                ("/ui/js/main.js", "text/javascript; charset=utf-8"),
                ("/ui/js/pages/models.js", "text/javascript; charset=utf-8"),
                ("/ui/favicon.svg", "image/svg+xml"),
            ]:
                reply = await client.get(path)
                assert reply.status_code == 200, path
                assert reply.headers["content-type"] == kind
                assert reply.headers["cache-control"] == "no-cache"
                assert reply.headers["x-content-type-options"] == "nosniff"
                again = await client.get(path, headers={"if-none-match": reply.headers["etag"]})
                assert again.status_code == 304
                assert again.content == b""
            assert (await client.get("/")).headers["location"] == "/ui/"
            for path in ["/ui/nope.js", "/ui/js/missing.css", "/ui/models/x.png"]:
                reply = await client.get(path)
                assert reply.status_code == 404, path
                assert reply.json()["error"]["message"] == "not found"
            assert (
                await client.get("/api/metrics")
            ).status_code == 401  # the data still needs the key


async def test_no_file_outside_the_static_directory_is_served() -> None:
    with trio.fail_after(30):
        async with open_swapd(CONFIG) as swapd:
            for target in [
                "/ui/../pyproject.toml",
                "/ui/../../web/app.py",
                "/ui/%2e%2e/%2e%2e/app.py",
                "/ui/..%2f..%2fapp.py",
                "/ui/js/..%2f..%2f..%2fui_routes.py",
                "/ui/.hidden.js",
                "/ui/%5c..%5capp.py",
            ]:
                reply = await raw_get(swapd.url, target)
                assert reply.startswith(b"HTTP/1.1 404"), target
                assert b"import" not in reply and b"[build-system]" not in reply, target


def test_locate_refuses_escapes_and_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "static"
    (root / "js").mkdir(parents=True)
    (root / "js" / "a.js").write_text("ok")
    (tmp_path / "secret.txt").write_text("no")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert ui_routes._locate(root, "js/a.js") == (root / "js" / "a.js").resolve()
    assert ui_routes._locate(root, "js//a.js") == (root / "js" / "a.js").resolve()
    for path in [
        "../secret.txt",
        "js/../../secret.txt",
        "link.txt",
        "js",
        ".",
        "js/.a.js",
        "js\\a.js",
        "missing.js",
    ]:
        assert ui_routes._locate(root, path) is None, path


def test_every_module_import_and_page_asset_exists() -> None:
    """No build step checks this for us: every ES module import and every /ui/ URL the
    page names must be a file in the package."""
    static = ui_routes.STATIC_DIR
    for file in static.rglob("*.js"):
        for target in re.findall(
            r"""^import .*? from '(\.{1,2}/[^']+)';""", file.read_text(), re.MULTILINE
        ):
            assert (file.parent / target).resolve().is_file(), f"{file.name} imports {target}"
    for file in [static / "index.html", static / "app.css"]:
        for url in re.findall(r"""["'(](/ui/[\w./-]+\.\w+)""", file.read_text()):
            assert (static / url.removeprefix("/ui/")).is_file(), f"{file.name} names {url}"
    assert not re.search(
        r"https?://(?!www\.w3\.org/)",
        "".join(f.read_text() for f in static.rglob("*.*") if f.suffix != ".svg"),
    )  # nothing from the internet
