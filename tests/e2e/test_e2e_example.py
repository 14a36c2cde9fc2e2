"""examples/llama-server.yaml runs as-is with ``llama-server`` on PATH and the models in
``~/.cache/swapd/models`` (only its ``startPort`` is moved to a free range here)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from e2e_support import PARIS_QUESTION

from swapd.testing import open_swapd
from swapd.testing.server import free_port_base

EXAMPLE = Path(__file__).parents[2] / "examples" / "llama-server.yaml"
TIMEOUT = 180


async def test_the_llama_server_example_runs_as_is(
    llama: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A home whose cache has the models, and a PATH whose llama-server is the one under test.
    models = tmp_path / "home" / ".cache" / "swapd" / "models"
    models.mkdir(parents=True)
    (models / "SmolLM2-135M-Instruct.Q4_1.gguf").symlink_to(llama.smollm2)
    (models / "tiny-random.gguf").symlink_to(llama.tiny)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "llama-server").symlink_to(llama.binary)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    text = EXAMPLE.read_text()
    text, count = re.subn(r"(?m)^startPort: \d+$", f"startPort: {free_port_base()}", text)
    assert count == 1

    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=60) as client,
        ):
            listed = (await client.get("/v1/models")).json()["data"]
            assert sorted(m["id"] for m in listed) == ["embed", "smollm2", "tiny"]

            # The alias reaches SmolLM2, which knows its geography.
            reply = await client.post(
                "/v1/chat/completions",
                json={
                    "model": "gpt-4o-mini",
                    "messages": [
                        {
                            "role": "user",
                            "content": PARIS_QUESTION,
                        }
                    ],
                    "max_tokens": 24,
                    "temperature": 0,
                },
            )
            assert reply.status_code == 200, reply.text
            assert "Paris" in reply.json()["choices"][0]["message"]["content"]

            # The tiny model swaps SmolLM2 out; its --n-predict caps a reply without max_tokens.
            reply = await client.post(
                "/v1/chat/completions",
                json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["usage"]["completion_tokens"] == 64

            # The preloaded embedding model stayed up through the swap.
            embedded = await client.post(
                "/v1/embeddings", json={"model": "embed", "input": ["hello", "world"]}
            )
            assert embedded.status_code == 200, embedded.text
            vectors = [item["embedding"] for item in embedded.json()["data"]]
            assert [len(v) for v in vectors] == [576, 576]  # SmolLM2-135M's n_embd
            running = {
                e["model"]: e["state"] for e in (await client.get("/running")).json()["running"]
            }
            assert running == {"embed": "ready", "tiny": "ready"}
