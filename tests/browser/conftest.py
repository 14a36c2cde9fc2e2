"""Fixtures for the web UI's tests: a real ``swapd`` process, and headless Chromium.

The browser is the system's Chromium (Debian's ``chromium`` package, ``/usr/bin/chromium``,
or ``SWAPD_CHROMIUM``) driven by Playwright's sync API; Playwright's own browser download
is never used. Without Playwright or Chromium the browser tests are skipped, unless
``SWAPD_REQUIRE_BROWSER=1`` (CI), where they fail instead.

swapd runs as a separate process (``python -m swapd``), so the sync Playwright calls in
plain test functions never meet pytest-trio's event loop. Screenshots go to
``tests/browser/artifacts/`` or ``$SWAPD_ARTIFACTS``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from swapd.testing.server import free_port_base, upstream_cmd

CHROMIUM = Path(os.environ.get("SWAPD_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("SWAPD_ARTIFACTS") or Path(__file__).parent / "artifacts")
REQUIRED = os.environ.get("SWAPD_REQUIRE_BROWSER") == "1"
API_KEY = "sk-ui-test-key"


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install '.[browser]')"
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SWAPD_CHROMIUM)"
    return None


class Swapd:
    """A ``swapd`` process serving ``config``, on port ``base`` (default: a free one)."""

    def __init__(self, directory: Path, config: str, base: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.base = base = base or free_port_base(30)
        self.url = f"http://127.0.0.1:{base}"
        self.config_file = directory / "config.yaml"
        self.config_text = f"startPort: {base + 1}\n{config}"
        self.config_file.write_text(self.config_text)
        self.log_file = directory / "swapd.log"
        self._log = self.log_file.open("wb")
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "swapd", "--config", str(self.config_file)),
                *("--listen", f"127.0.0.1:{base}"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"swapd did not come up:\n{self.log_file.read_text()}")

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def kill(self) -> None:
        """SIGKILL, as in a crash (its lifeline takes any model down with it)."""
        self.proc.kill()
        self.proc.wait()
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def model(model_id: str, *flags: str, **settings: object) -> str:
    """A model entry running the demo upstream (its output on, so the logs show it)."""
    lines = [
        f"  {model_id}:",
        f"    cmd: {upstream_cmd('--model', model_id, *flags, silent=False)}",
        "    proxy: http://127.0.0.1:${PORT}",
    ]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def colour_model(name: str) -> str:
    """A model whose first output line is coloured with ANSI escapes."""
    serve = f"{sys.executable} -m swapd.testing.upstream --port ${{PORT}} --model {name}"
    cmd = f"sh -c 'printf \"\\033[1;31mcolour-marker\\033[0m plain-tail\\n\"; exec {serve}'"
    return f"  {name}:\n    cmd: {json.dumps(cmd)}\n    proxy: http://127.0.0.1:${{PORT}}\n"


MAIN_CONFIG = (
    "captureBuffer: 5\n"
    "healthCheckTimeout: 30\n"
    "models:\n"
    + model("fast", "--chunks", "6", "--chunk-delay", "0.02", name="Fast demo", ttl=300)
    + model(
        "slow",
        "--loading-delay",
        "1.5",
        "--chunks",
        "12",
        "--chunk-delay",
        "0.1",
        "--respond",
        "one two three four five six seven eight nine ten eleven twelve",
    )
    + model("sleepy", "--sleep-mode", sleepMode="enable")
    + "    sleepEndpoints:\n      - endpoint: /sleep?level=1\n"
    + "    wakeEndpoints:\n      - endpoint: /wake_up\n"
    + colour_model("colour")
    + "groups:\n  side:\n    swap: false\n    members: [sleepy, colour]\n"
    + "peers:\n  big-box:\n    proxy: http://127.0.0.1:9\n    models: [remote-70b]\n"
)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    missing = _browser_missing()
    if missing:
        if REQUIRED:
            pytest.fail(f"SWAPD_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def swapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swapd]:
    server = Swapd(tmp_path_factory.mktemp("swapd"), MAIN_CONFIG)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_swapd(tmp_path: Path) -> Iterator[Callable[..., Swapd]]:
    """``start_swapd(config, base=None)`` → a swapd of this test alone (stopped after it)."""
    started: list[Swapd] = []

    def start(config: str, base: int | None = None) -> Swapd:
        started.append(Swapd(tmp_path / str(len(started)), config, base))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def api_key() -> str:
    return API_KEY


@pytest.fixture(scope="module")
def keyed_swapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swapd]:
    config = f"apiKeys: [{API_KEY}]\nmodels:\n" + model("fast")
    server = Swapd(tmp_path_factory.mktemp("keyed"), config)
    try:
        yield server
    finally:
        server.stop()


class PageErrors(list[str]):
    """Console errors and uncaught exceptions of a page; tests may allow some."""

    def allow(self, predicate: Callable[[str], bool]) -> None:
        self[:] = [e for e in self if not predicate(e)]


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., tuple[Any, PageErrors]]]:
    """``open_page(color_scheme="light", width=1280)`` → (page, errors): a fresh browser
    context, ``width`` CSS pixels wide.

    The test fails if the page logged a console error or threw, unless it allowed it."""
    contexts: list[Any] = []
    all_errors: list[PageErrors] = []

    def open_one(color_scheme: str = "light", width: int = 1280) -> tuple[Any, PageErrors]:
        context = browser.new_context(
            viewport={"width": width, "height": 800}, color_scheme=color_scheme
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        errors = PageErrors()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
        all_errors.append(errors)
        return page, errors

    yield open_one
    for context in contexts:
        context.close()
    for errors in all_errors:
        assert list(errors) == [], "the page logged errors"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
