"""The README's client examples, run as written against a real swapd on the quickstart.

The fenced ``python`` blocks of "Use it from a client" (the official ``openai`` and
``anthropic`` SDKs) and the ``curl`` blocks of "Try it" and "Use it from a client" are
taken from README.md, only the port changed, and run: Python blocks by this Python, curl
blocks by ``sh``. swapd runs as a process on ``examples/quickstart.yaml`` (a copy with a free
``startPort``, so parallel runs don't collide), with swapd's venv on ``PATH`` as after the
README's install command, so the config's ``swapd-demo-upstream`` is found.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from swapd.testing.server import free_port_base

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FAST = "Hello! I am the fast demo model, served through swapd."
SLOW = "I took a moment to load, then streamed this reply token by token."


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def curl_blocks(text: str) -> list[str]:
    """The ``sh`` blocks made of curl commands only (not the Docker or install ones)."""
    return [b for b in blocks(text, "sh") if b.lstrip().startswith("curl ")]


PYTHON_CLIENTS = blocks(section("Use it from a client"), "python")
CURL_CLIENTS = curl_blocks(section("Try it")) + curl_blocks(section("Use it from a client"))


def test_the_readme_has_the_client_examples() -> None:
    assert len(PYTHON_CLIENTS) == 2  # OpenAI, Anthropic
    assert "from openai import OpenAI" in PYTHON_CLIENTS[0]
    assert "import anthropic" in PYTHON_CLIENTS[1]
    assert len(CURL_CLIENTS) == 2
    assert all("8080" in block for block in PYTHON_CLIENTS + CURL_CLIENTS)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(port, swapd's log file) of a swapd serving the quickstart config."""
    folder = tmp_path_factory.mktemp("quickstart")
    base = free_port_base(4)
    config = folder / "quickstart.yaml"
    text = (ROOT / "examples" / "quickstart.yaml").read_text(encoding="utf-8")
    config.write_text(f"startPort: {base + 1}\n{text}", encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = folder / "swapd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "swapd",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{base}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield str(base), log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(argv: list[str], block: str, port: str) -> str:
    """Run ``block`` with only its port changed; its output."""
    script = block.replace("8080", port)
    result = subprocess.run(
        [*argv, script], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT
    )
    assert result.returncode == 0, (
        f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result.stdout


def test_the_openai_sdk_example(quickstart: tuple[str, Path]) -> None:
    port, _ = quickstart
    output = run([sys.executable, "-c"], PYTHON_CLIENTS[0], port)
    assert output.splitlines() == [FAST, SLOW]  # a reply, then the other model, streamed


def test_the_anthropic_sdk_example(quickstart: tuple[str, Path]) -> None:
    port, _ = quickstart
    output = run([sys.executable, "-c"], PYTHON_CLIENTS[1], port)
    assert output.splitlines() == [FAST]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_examples(quickstart: tuple[str, Path]) -> None:
    port, log = quickstart
    try_it = run(["sh", "-c"], CURL_CLIENTS[0], port)
    assert '"id":"demo-fast"' in try_it.replace(" ", "")  # the model list
    assert FAST in try_it
    assert "data: [DONE]" in try_it  # the streamed reply from the slow model
    assert '"running"' in try_it
    # every reply ends with a newline: no answer runs into the next one (or the prompt)
    assert "}{" not in try_it and "}data:" not in try_it, try_it
    assert try_it.endswith("\n")
    assert FAST in run(["sh", "-c"], CURL_CLIENTS[1], port)
    # and swapd said where its web UI is
    assert f"web UI: http://127.0.0.1:{port}/ui/" in log.read_text()
