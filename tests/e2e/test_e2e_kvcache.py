"""KV cache kept across swaps with a real llama-server (docs/kvcache.md).

SmolLM2 runs with ``--slot-save-path ${KV_CACHE_DIR}`` and ``kvCache.enabled``; the tiny
random model shares its swap group, so asking for it swaps SmolLM2 out (its slot is saved)
and asking for SmolLM2 again swaps it back in (its slot is restored before the request).
llama.cpp's ``timings`` say how much of a prompt came from the cache (``cache_n``) and how
much was computed (``prompt_n``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from swapd.core.events import KvCacheDeleted, KvCacheFailed, KvCacheRestored, KvCacheSaved
from swapd.core.kvcache_index import SLOT_FILE_SUFFIX
from swapd.daemon import Daemon
from swapd.testing import open_swapd

TIMEOUT = 900  # one 1,500-token prefill on a busy 2-core machine with one thread
SEED = 1234


def kv_config(llama: Any, kv_dir: Path, *, smollm2_flags: tuple[str, ...] = (), **kv: str) -> str:
    """SmolLM2 (kvCache on) and the tiny model in one swap group."""
    flags = smollm2_flags or ("--slot-save-path", "${KV_CACHE_DIR}")
    smollm2 = llama.cmd(llama.smollm2, "smollm2", *flags, ctx=4096)
    text = llama.config(
        {"smollm2": smollm2, "tiny": llama.cmd(llama.tiny, "tiny")}, swap_group=True
    )
    section = {"dir": str(kv_dir), **kv}
    head = "kvCache:\n" + "".join(f"  {key}: {value}\n" for key, value in section.items())
    opt_in = "    kvCache:\n      enabled: true\n      saveTimeout: 30\n      restoreTimeout: 30\n"
    marker = "  smollm2:\n"
    return head + text.replace(marker, marker + opt_in, 1)


def long_history() -> list[dict[str, str]]:
    """A conversation of well over 1,500 prompt tokens: a long briefing, then a question."""
    facts = [
        f"Record {n}: the warehouse in district {n % 17} stores {n * 37 % 1000} crates of "
        f"{['apples', 'copper wire', 'paper', 'salt', 'glass'][n % 5]}, inspected on day {n % 28}."
        for n in range(1, 75)
    ]
    return [
        {"role": "system", "content": "You are a careful clerk. " + " ".join(facts)},
        {"role": "user", "content": "Summarise what the warehouses store, in one sentence."},
    ]


def chat(model: str, messages: list[dict[str, str]], max_tokens: int = 12) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": SEED,
    }


async def ask(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    reply = await client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


@contextmanager
def recorded(daemon: Daemon) -> Iterator[list[object]]:
    seen: list[object] = []
    with daemon.services.bus.watch(seen.append):
        yield seen


def slot_files(kv_dir: Path) -> list[Path]:
    return sorted(p for p in kv_dir.iterdir() if p.name.endswith(SLOT_FILE_SUFFIX))


async def test_a_conversation_continues_from_the_restored_cache_after_a_swap(
    llama: Any, tmp_path: Path
) -> None:
    kv_dir = tmp_path / "kv"
    history = long_history()
    with trio.fail_after(TIMEOUT):
        async with (
            open_swapd(kv_config(llama, kv_dir)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=TIMEOUT) as client,
        ):
            with recorded(swapd) as events:
                first = await ask(client, chat("smollm2", history))
                prompt_tokens = first["usage"]["prompt_tokens"]
                assert prompt_tokens >= 1500
                answer = first["choices"][0]["message"]["content"]
                continued = [
                    *history,
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": "Which district stores the most crates?"},
                ]
                # The reference: the conversation continued on the same server, no swap.
                reference = await ask(client, chat("smollm2", continued))
                # Back to the state after the first turn (the first turn is in the cache).
                again = await ask(client, chat("smollm2", history))
                assert again["choices"][0]["message"]["content"] == answer

                await ask(client, chat("tiny", [{"role": "user", "content": "hi"}], 4))
                saved = [e for e in events if isinstance(e, KvCacheSaved)]
                assert [(e.model, e.slot) for e in saved] == [("smollm2", 0)]
                assert saved[0].tokens >= prompt_tokens
                [file] = slot_files(kv_dir)
                assert file.stat().st_size == saved[0].size

                after = await ask(client, chat("smollm2", continued))
                restored = [e for e in events if isinstance(e, KvCacheRestored)]
                assert [(e.model, e.slot, e.size) for e in restored] == [
                    ("smollm2", 0, saved[0].size)
                ]
                assert not [e for e in events if isinstance(e, KvCacheFailed)]

            timings = after["timings"]
            # The prompt came from the restored cache: only the new turn was computed.
            assert timings["cache_n"] >= prompt_tokens - 8, timings
            assert timings["prompt_n"] < 100, timings
            assert (
                after["choices"][0]["message"]["content"]
                == (reference["choices"][0]["message"]["content"])
            )
            [running] = (await client.get("/running")).json()["running"]
            assert running["model"] == "smollm2"
            assert running["kvCache"]["restoredTokens"] == saved[0].tokens
            prometheus = (await client.get("/metrics")).text
            counted = {
                (sample.labels.get("action"), sample.labels.get("outcome")): sample.value
                for family in text_string_to_metric_families(prometheus)
                for sample in family.samples
                if sample.name == "swapd_kvcache_operations_total"
                and sample.labels.get("model") == "smollm2"
            }
            assert counted[("save", "ok")] == 1, counted
            assert counted[("restore", "ok")] == 1, counted


SHORT = [{"role": "user", "content": "Name three colours of the rainbow, briefly."}]


async def _save_once(llama: Any, config: str) -> list[object]:
    """Run ``config``, talk to SmolLM2 once, swap to tiny (a save): the events seen."""
    async with (
        open_swapd(config) as swapd,
        httpx.AsyncClient(base_url=swapd.url, timeout=TIMEOUT) as client,
    ):
        with recorded(swapd) as events:
            await ask(client, chat("smollm2", SHORT))
            await ask(client, chat("tiny", [{"role": "user", "content": "hi"}], 4))
    return events


async def test_a_cache_saved_under_another_command_line_is_not_restored(
    llama: Any, tmp_path: Path
) -> None:
    kv_dir = tmp_path / "kv"
    with trio.fail_after(TIMEOUT):
        events = await _save_once(llama, kv_config(llama, kv_dir))
        assert [e for e in events if isinstance(e, KvCacheSaved)]
        [file] = slot_files(kv_dir)

        # The same model with another flag: a cache that must not be fed to it.
        other = ("--slot-save-path", "${KV_CACHE_DIR}", "--batch-size", "256")
        async with (
            open_swapd(kv_config(llama, kv_dir, smollm2_flags=other)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=TIMEOUT) as client,
        ):
            with recorded(swapd) as seen:
                reply = await ask(client, chat("smollm2", SHORT))
            assert not [e for e in seen if isinstance(e, KvCacheRestored)]
            assert reply["timings"]["cache_n"] == 0
        assert file.exists()  # kept for the command line it belongs to


async def test_a_truncated_cache_file_is_deleted_and_never_fed(llama: Any, tmp_path: Path) -> None:
    kv_dir = tmp_path / "kv"
    config = kv_config(llama, kv_dir)
    with trio.fail_after(TIMEOUT):
        await _save_once(llama, config)
        [file] = slot_files(kv_dir)
        # A partial write (the pinned build aborts on one).
        os.truncate(file, file.stat().st_size // 2)

        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=TIMEOUT) as client,
        ):
            with recorded(swapd) as seen:
                reply = await ask(client, chat("smollm2", SHORT))
            # Found at start (size differs from the index): deleted before any model ran.
            assert not file.exists()
            assert reply["timings"]["cache_n"] == 0
            assert not [e for e in seen if isinstance(e, KvCacheRestored)]
            running = (await client.get("/running")).json()["running"]
            assert [(r["model"], r["state"]) for r in running] == [("smollm2", "ready")]


async def test_a_server_without_slot_save_path_still_swaps(llama: Any, tmp_path: Path) -> None:
    kv_dir = tmp_path / "kv"
    config = kv_config(llama, kv_dir, smollm2_flags=("--no-warmup",))
    with trio.fail_after(TIMEOUT):
        events = await _save_once(llama, config)
    failed = [e for e in events if isinstance(e, KvCacheFailed)]
    assert [(e.model, e.action) for e in failed] == [("smollm2", "save")]
    assert not [e for e in events if isinstance(e, KvCacheSaved)]
    assert os.listdir(kv_dir) == [] or not slot_files(kv_dir)


async def test_the_disk_budget_evicts_what_does_not_fit(llama: Any, tmp_path: Path) -> None:
    kv_dir = tmp_path / "kv"
    config = kv_config(llama, kv_dir, budget="1KiB")  # smaller than any saved slot
    with trio.fail_after(TIMEOUT):
        events = await _save_once(llama, config)
    saved = [e for e in events if isinstance(e, KvCacheSaved)]
    deleted = [e for e in events if isinstance(e, KvCacheDeleted)]
    assert len(saved) == 1
    assert [(e.reason, e.size) for e in deleted] == [("budget", saved[0].size)]
    assert slot_files(kv_dir) == []
