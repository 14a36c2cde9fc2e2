"""Time to first token after a swap-back, with and without the KV-cache restore (issue #21).

::

    .venv/bin/python benchmarks/kvcache.py [--sizes 500,1500,3000] [--threads 1] [--out FILE]

For each context size and each mode (``restore``: ``kvCache.enabled`` with
``--slot-save-path ${KV_CACHE_DIR}``; ``plain``: neither), one swapd (in this process, on
127.0.0.1) runs the real llama-server with SmolLM2-135M and the tiny random model in one
swap group, and:

1. sends SmolLM2 a conversation of about N prompt tokens (the prefill fills its cache);
2. asks the tiny model once (SmolLM2 is swapped out: with ``restore`` its slot is saved);
3. sends SmolLM2 the same conversation again, streamed, and times the first content token
   from the moment the request is sent: this includes starting llama-server, the restore
   (if any) and whatever prefill is left. ``cache_n``/``prompt_n`` come from llama.cpp's
   ``timings``.

Prints a table and writes ``results/kvcache.json``. Needs the pinned llama-server and
SmolLM2 (``python -m swapd.testing.llama_server prepare``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from swapd.testing import open_swapd
from swapd.testing.gguf import write_tiny_gguf
from swapd.testing.llama_server import ensure_smollm2, find_llama_server

HERE = Path(__file__).parent


def model_cmd(binary: Path, model: Path, alias: str, threads: int, *flags: str) -> str:
    argv = [str(binary), "--host", "127.0.0.1", "--port", "${PORT}", "--model", str(model)]
    argv += ["--alias", alias, "--ctx-size", "4096", "--parallel", "1"]
    argv += ["--threads", str(threads), "--no-webui", *flags]
    return " ".join(a if "${" in a else shlex.quote(a) for a in argv)


def config(binary: Path, smollm2: Path, tiny: Path, kv_dir: Path, threads: int, keep: bool) -> str:
    flags = ("--slot-save-path", "${KV_CACHE_DIR}") if keep else ()
    lines = [
        f"kvCache:\n  dir: {kv_dir}\n  budget: 4GiB",
        "healthCheckTimeout: 120",
        "models:",
        "  smollm2:",
        f"    cmd: {model_cmd(binary, smollm2, 'smollm2', threads, *flags)}",
        "    proxy: http://127.0.0.1:${PORT}",
    ]
    if keep:
        lines.append("    kvCache: {enabled: true, saveTimeout: 60, restoreTimeout: 60}")
    lines += [
        "  tiny:",
        f"    cmd: {model_cmd(binary, tiny, 'tiny', threads)}",
        "    proxy: http://127.0.0.1:${PORT}",
        "groups:\n  chat:\n    swap: true\n    members: [smollm2, tiny]",
    ]
    return "\n".join(lines) + "\n"


def conversation(tokens: int) -> list[dict[str, str]]:
    """About ``tokens`` prompt tokens for SmolLM2 (a record is ~28 tokens)."""
    records = [
        f"Record {n}: the warehouse in district {n % 17} stores {n * 37 % 1000} crates of "
        f"{['apples', 'copper wire', 'paper', 'salt', 'glass'][n % 5]}, inspected on day {n % 28}."
        for n in range(1, max(2, tokens // 28))
    ]
    return [
        {"role": "system", "content": "You are a careful clerk. " + " ".join(records)},
        {"role": "user", "content": "Which district stores the most crates?"},
    ]


async def first_token(client: httpx.AsyncClient, messages: list[dict[str, str]]) -> dict[str, Any]:
    body = {
        "model": "smollm2",
        "messages": messages,
        "max_tokens": 4,
        "temperature": 0,
        "stream": True,
    }
    sent = time.perf_counter()
    ttft: float | None = None
    timings: dict[str, Any] = {}
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            delta = (event.get("choices") or [{}])[0].get("delta", {})
            if ttft is None and delta.get("content"):
                ttft = time.perf_counter() - sent
            timings = event.get("timings", timings)
    return {"ttft": ttft, "cache_n": timings.get("cache_n"), "prompt_n": timings.get("prompt_n")}


async def measure(size: int, keep: bool, paths: dict[str, Path], threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as kv_dir:
        text = config(paths["binary"], paths["smollm2"], paths["tiny"], Path(kv_dir), threads, keep)
        messages = conversation(size)
        async with (
            open_swapd(text) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=600) as client,
        ):
            warm = await client.post(
                "/v1/chat/completions",
                json={"model": "smollm2", "messages": messages, "max_tokens": 4, "temperature": 0},
            )
            warm.raise_for_status()
            prompt_tokens = warm.json()["usage"]["prompt_tokens"]
            tiny = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
            (
                await client.post("/v1/chat/completions", json={**tiny, "max_tokens": 2})
            ).raise_for_status()
            result = await first_token(client, messages)
    return {
        "size": size,
        "mode": "restore" if keep else "plain",
        "prompt_tokens": prompt_tokens,
        **result,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1500,3000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "kvcache.json"))
    args = parser.parse_args()
    binary = find_llama_server()
    if binary is None:
        sys.exit("no llama-server: run `python -m swapd.testing.llama_server prepare` first")
    tmp = Path(tempfile.mkdtemp())
    paths = {
        "binary": binary,
        "smollm2": ensure_smollm2(),
        "tiny": write_tiny_gguf(tmp / "tiny.gguf"),
    }
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for keep in (False, True):
            row = await measure(size, keep, paths, args.threads)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(
        "| context (prompt tokens) | TTFT plain | TTFT restore | speed-up "
        "| restore: cache_n / prompt_n |"
    )
    print("|---|---|---|---|---|")
    for size in sorted({r["size"] for r in rows}):
        plain = next(r for r in rows if r["size"] == size and r["mode"] == "plain")
        kept = next(r for r in rows if r["size"] == size and r["mode"] == "restore")
        speedup = plain["ttft"] / kept["ttft"] if plain["ttft"] and kept["ttft"] else float("nan")
        print(
            f"| {size} ({plain['prompt_tokens']}) | {plain['ttft']:.2f} s | {kept['ttft']:.2f} s "
            f"| {speedup:.1f}x | {kept['cache_n']} / {kept['prompt_n']} |"
        )
    out = trio.Path(args.out)
    await out.parent.mkdir(parents=True, exist_ok=True)
    await out.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    trio.run(main)
