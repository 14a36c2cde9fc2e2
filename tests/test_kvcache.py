"""Saved llama-server slots: the pure parts, and the keeper's failure paths a real
llama-server cannot produce on demand (a save that hangs, a refused restore of a file of the
right size), against a small HTTP server standing in for llama-server's ``/slots``.

The happy path and the failures a real server can show run in tests/e2e/test_e2e_kvcache.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from runner_moves import Moves

from swapd.config import Config, ConfigError, parse_config
from swapd.core.events import (
    KvCacheDeleted,
    KvCacheFailed,
    KvCacheRestored,
    KvCacheSaved,
    ModelStateChanged,
)
from swapd.core.kvcache_index import (
    SavedSlot,
    command_hash,
    decode_index,
    encode_index,
    model_file_arguments,
    over_budget,
    slot_file_name,
)
from swapd.core.states import ModelState
from swapd.supervise.kvcache import INDEX_FILE, KvCacheKeeper
from swapd.supervise.runner import Runner
from swapd.testing.harness import FakeLauncher, Script

# --- pure parts ---------------------------------------------------------------------------


def entry(name: str, size: int, used_at: float) -> SavedSlot:
    return SavedSlot(
        file=name,
        model="m",
        cmd_hash="h",
        slot=0,
        tokens=10,
        size=size,
        saved_at=used_at,
        used_at=used_at,
    )


def test_file_names_are_plain_names_keyed_by_model_hash_and_slot() -> None:
    name = slot_file_name("org/model:Q4 ../x", "abc123", 2)
    assert "/" not in name and " " not in name
    assert name.endswith("-abc123-slot2.swapd-kv")
    assert slot_file_name("a", "h", 0) != slot_file_name("a", "h", 1)


def test_the_fingerprint_ignores_the_port_but_not_the_flags_env_or_model_file() -> None:
    argv = ["llama-server", "--port", "5800", "-m", "/m.gguf", "-c", "4096"]
    files: dict[str, tuple[int, int] | None] = {"/m.gguf": (100, 1)}
    base = command_hash(argv, [], files)
    assert command_hash([*argv[:2], "5801", *argv[3:]], [], files) == base
    assert command_hash([*argv[:-1], "2048"], [], files) != base
    assert command_hash(argv, ["CUDA_VISIBLE_DEVICES=1"], files) != base
    assert command_hash(argv, [], {"/m.gguf": (100, 2)}) != base  # replaced in place
    assert model_file_arguments(["x", "--model", "/a", "--model=/b", "-m", "/c"]) == [
        "/a",
        "/b",
        "/c",
    ]


def test_eviction_takes_the_least_recently_used_until_the_rest_fits() -> None:
    old, mid, new = entry("old", 400, 1.0), entry("mid", 400, 2.0), entry("new", 400, 3.0)
    assert over_budget([new, old, mid], 1000) == [old]
    assert over_budget([new, old, mid], 400) == [old, mid]
    assert over_budget([new, old, mid], 1200) == []
    assert over_budget([new], 100) == [new]  # a single slot larger than the budget


def test_the_index_round_trips_and_garbage_reads_as_empty() -> None:
    entries = [entry("a", 1, 1.0), entry("b", 2, 2.0)]
    assert decode_index(encode_index(entries)) == entries
    assert decode_index("{not json") == []
    assert decode_index(json.dumps({"version": 99, "slots": []})) == []
    assert decode_index(json.dumps({"version": 1, "slots": [{"file": "x"}]})) == []


# --- a stand-in for llama-server's /slots ---------------------------------------------------


@attrs.define
class FakeSlots:
    """Answers GET /slots and POST /slots/<id>?action=save|restore like llama-server,
    writing and reading files in ``directory``; ``save`` and ``restore`` choose how."""

    directory: Path
    tokens: list[int]
    save: str = "ok"  # "ok" | "hang" (half a file written, then no answer)
    restore: str = "ok"  # "ok" | "refuse"
    file_size: int = 1000
    calls: list[str] = attrs.Factory(list)
    url: str = ""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some()
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, target, _ = lines[0].split(" ")
        length = next(
            (
                int(line.split(":")[1])
                for line in lines
                if line.lower().startswith("content-length")
            ),
            0,
        )
        while len(body) < length:
            body += await stream.receive_some()
        self.calls.append(f"{method} {target}")
        status, answer = await self._answer(method, target, body)
        payload = json.dumps(answer).encode()
        await stream.send_all(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        await stream.aclose()

    async def _answer(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and target == "/slots":
            return 200, [
                {"id": i, "is_processing": False, "n_prompt_tokens": n}
                for i, n in enumerate(self.tokens)
            ]
        slot = int(target.split("/")[2].split("?")[0])
        name = json.loads(body)["filename"]
        path = self.directory / name
        if "action=save" in target:
            if self.save == "hang":
                path.write_bytes(b"x" * (self.file_size // 2))
                await trio.sleep_forever()
            path.write_bytes(b"k" * self.file_size)
            return 200, {"id_slot": slot, "n_saved": self.tokens[slot], "n_written": self.file_size}
        if self.restore == "refuse":
            return 400, {"error": {"code": 400, "message": "invalid slot save file"}}
        return 200, {"id_slot": slot, "n_restored": 7, "n_read": path.stat().st_size}


def config_for(directory: Path, url: str, budget: str = "1GiB") -> Config:
    return parse_config(
        f"kvCache:\n  dir: {directory}\n  budget: {budget}\n"
        "models:\n"
        "  m:\n"
        f"    cmd: llama-server --slot-save-path ${{KV_CACHE_DIR}} -c 100\n"
        f"    proxy: {url}\n"
        "    kvCache: {enabled: true, saveTimeout: 2, restoreTimeout: 2}\n"
        "  n:\n"
        f"    cmd: llama-server --slot-save-path ${{KV_CACHE_DIR}} -c 200\n"
        f"    proxy: {url}\n"
        "    kvCache: {enabled: true, saveTimeout: 2, restoreTimeout: 2}\n",
        file="<test>",
    )


@pytest.fixture
def kv_dir(tmp_path: Path) -> Path:
    path = tmp_path / "kv"
    path.mkdir()
    return path


async def keeper_with(
    fake: FakeSlots, nursery: trio.Nursery, budget: str = "1GiB"
) -> tuple[KvCacheKeeper, Config, list[object]]:
    await nursery.start(fake.serve)
    config = config_for(fake.directory, fake.url, budget)
    events: list[object] = []
    client = httpx.AsyncClient(trust_env=False)
    keeper = KvCacheKeeper(config, client, events.append)
    return keeper, config, events


def files_in(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name != INDEX_FILE)


def test_bad_kvcache_keys_are_reported_with_their_lines() -> None:
    text = (
        "kvCache:\n  budget: lots\n"
        "models:\n  m:\n    cmd: x\n    kvCache:\n      enabled: true\n      saveTimeout: 0\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, file="kv.yaml", environ={})
    found = {(p.path, p.line) for p in info.value.problems}
    assert found == {("kvCache.budget", 2), ("models.m.kvCache.saveTimeout", 8)}


def test_the_directory_defaults_to_the_user_cache_and_the_macro_is_reserved() -> None:
    config = parse_config(
        "models:\n  m:\n    cmd: x --port ${PORT} --slot-save-path ${KV_CACHE_DIR}\n",
        file="kv.yaml",
        environ={"XDG_CACHE_HOME": "/srv/cache"},
    )
    assert config.kv_cache.dir == "/srv/cache/swapd/kvcache"
    assert config.models["m"].argv[-1] == "/srv/cache/swapd/kvcache"
    assert config.models["m"].kv_cache.enabled is False
    with pytest.raises(ConfigError, match="reserved"):
        parse_config("macros:\n  KV_CACHE_DIR: /x\nmodels: {}\n", file="kv.yaml", environ={})


def test_kvcache_without_slot_save_path_is_a_warning() -> None:
    config = parse_config(
        "models:\n  m:\n    cmd: x --port ${PORT}\n    kvCache:\n      enabled: true\n",
        file="kv.yaml",
        environ={},
    )
    assert any("--slot-save-path" in w and "kv.yaml:5" in w for w in config.warnings)


async def test_the_macro_names_the_directory(kv_dir: Path) -> None:
    config = config_for(kv_dir, "http://127.0.0.1:1")
    assert config.kv_cache.dir == str(kv_dir)
    assert config.models["m"].argv[:3] == ("llama-server", "--slot-save-path", str(kv_dir))


async def test_a_save_that_hangs_is_abandoned_and_its_partial_file_deleted(kv_dir: Path) -> None:
    fake = FakeSlots(kv_dir, tokens=[50], save="hang")
    async with trio.open_nursery() as nursery:
        keeper, config, events = await keeper_with(fake, nursery)
        with trio.fail_after(20):  # the save timeout is 2 s; the call must come back
            await keeper.save_slots("m", config.models["m"])
        failed = [e for e in events if isinstance(e, KvCacheFailed)]
        assert [(e.action, "abandoned" in e.error) for e in failed] == [("save", True)]
        assert files_in(kv_dir) == []  # the half-written file is gone
        assert keeper.saved("m") == []
        nursery.cancel_scope.cancel()


async def test_saves_record_each_slot_with_tokens_and_skip_empty_ones(kv_dir: Path) -> None:
    fake = FakeSlots(kv_dir, tokens=[50, 0, 30])
    async with trio.open_nursery() as nursery:
        keeper, config, events = await keeper_with(fake, nursery)
        await keeper.save_slots("m", config.models["m"])
        saved = [(e.slot, e.tokens, e.size) for e in events if isinstance(e, KvCacheSaved)]
        assert saved == [(0, 50, 1000), (2, 30, 1000)]
        index = decode_index((kv_dir / INDEX_FILE).read_text())
        assert sorted((e.model, e.slot, e.tokens, e.size) for e in index) == [
            ("m", 0, 50, 1000),
            ("m", 2, 30, 1000),
        ]
        nursery.cancel_scope.cancel()


async def test_the_budget_evicts_the_least_recently_used_model(kv_dir: Path) -> None:
    fake = FakeSlots(kv_dir, tokens=[50])
    async with trio.open_nursery() as nursery:
        keeper, config, events = await keeper_with(fake, nursery, budget="1500B")
        await keeper.save_slots("m", config.models["m"])
        await keeper.save_slots("n", config.models["n"])  # 2,000 bytes: m's goes
        deleted = [(e.model, e.reason) for e in events if isinstance(e, KvCacheDeleted)]
        assert deleted == [("m", "budget")]
        assert [e.model for e in keeper.saved("n")] == ["n"]
        assert keeper.saved("m") == []
        assert files_in(kv_dir) == [keeper.saved("n")[0].file]
        nursery.cancel_scope.cancel()


async def test_a_refused_restore_deletes_the_file(kv_dir: Path) -> None:
    fake = FakeSlots(kv_dir, tokens=[50])
    async with trio.open_nursery() as nursery:
        keeper, config, events = await keeper_with(fake, nursery)
        await keeper.save_slots("m", config.models["m"])
        fake.restore = "refuse"
        await keeper.restore_slots("m", config.models["m"])
        failed = [e for e in events if isinstance(e, KvCacheFailed)]
        assert [e.action for e in failed] == ["restore"]
        assert "invalid slot save file" in failed[0].error
        assert [e.reason for e in events if isinstance(e, KvCacheDeleted)] == ["corrupt"]
        assert files_in(kv_dir) == []
        # Never fed again: the next start does not even ask.
        fake.calls.clear()
        await keeper.restore_slots("m", config.models["m"])
        assert not [c for c in fake.calls if "restore" in c]
        nursery.cancel_scope.cancel()


async def test_a_restore_only_feeds_the_same_command_line(kv_dir: Path) -> None:
    fake = FakeSlots(kv_dir, tokens=[50])
    async with trio.open_nursery() as nursery:
        keeper, config, events = await keeper_with(fake, nursery)
        await keeper.save_slots("m", config.models["m"])
        changed = attrs.evolve(config.models["m"], argv=(*config.models["m"].argv, "--flash-attn"))
        await keeper.restore_slots("m", changed)
        assert not [c for c in fake.calls if "restore" in c]
        await keeper.restore_slots("m", config.models["m"])
        restored = [(e.slot, e.tokens) for e in events if isinstance(e, KvCacheRestored)]
        assert restored == [(0, 7)]
        assert keeper.restored_tokens == {"m": 7}
        nursery.cancel_scope.cancel()


async def test_orphans_and_mismatched_files_are_deleted_at_start(kv_dir: Path) -> None:
    fake = FakeSlots(kv_dir, tokens=[50])
    async with trio.open_nursery() as nursery:
        keeper, config, _ = await keeper_with(fake, nursery)
        await keeper.save_slots("m", config.models["m"])
        [kept] = keeper.saved("m")
        (kv_dir / "stray-slot0.swapd-kv").write_bytes(b"?")  # not in the index
        (kv_dir / "notes.txt").write_text("not ours")  # never touched
        fresh_events: list[object] = []
        fresh = KvCacheKeeper(config, httpx.AsyncClient(trust_env=False), fresh_events.append)
        await fresh.prepare()
        assert files_in(kv_dir) == sorted([kept.file, "notes.txt"])
        assert [(e.file, e.reason) for e in fresh_events if isinstance(e, KvCacheDeleted)] == [
            ("stray-slot0.swapd-kv", "orphan")
        ]
        # A file cut short after it was recorded: deleted by the next start's check.
        os.truncate(kv_dir / kept.file, 10)
        third = KvCacheKeeper(config, httpx.AsyncClient(trust_env=False), fresh_events.append)
        await third.prepare()
        assert files_in(kv_dir) == ["notes.txt"]
        assert third.saved("m") == []
        nursery.cancel_scope.cancel()


# --- the runner's hooks: save before the stop, restore before ready -----------------------


async def run_model(
    keeper: KvCacheKeeper, spec: Any, moves: Moves, nursery: trio.Nursery
) -> Runner:
    launcher = FakeLauncher({"m": Script(start_delay=0.05)})
    runner = Runner(
        "m", spec, launcher, health_timeout=30, on_change=moves.on_change, kv_cache=keeper
    )
    await nursery.start(runner.run)
    return runner


async def test_a_stop_goes_on_when_the_save_hangs(kv_dir: Path) -> None:
    fake = FakeSlots(kv_dir, tokens=[50], save="hang")
    async with trio.open_nursery() as nursery:
        keeper, config, events = await keeper_with(fake, nursery)
        moves = Moves(events)
        runner = await run_model(keeper, config.models["m"], moves, nursery)
        with trio.fail_after(30):  # saveTimeout is 2 s
            runner.start("requested")
            await moves.reach(runner, ModelState.READY)
            runner.stop("swapped out")
            await runner.stopped.wait()
        assert runner.state is ModelState.STOPPED
        kinds = [type(e).__name__ for e in events]
        assert kinds.index("KvCacheFailed") < len(kinds) - 1  # then the stop completed
        assert files_in(kv_dir) == []
        runner.close()
        nursery.cancel_scope.cancel()


async def test_slots_are_saved_at_a_stop_and_restored_before_the_model_is_ready(
    kv_dir: Path,
) -> None:
    fake = FakeSlots(kv_dir, tokens=[50])
    async with trio.open_nursery() as nursery:
        keeper, config, events = await keeper_with(fake, nursery)
        moves = Moves(events)
        runner = await run_model(keeper, config.models["m"], moves, nursery)
        with trio.fail_after(30):
            runner.start("requested")
            await moves.reach(runner, ModelState.READY)
            runner.stop("swapped out")
            await runner.stopped.wait()
            runner.start("requested again")
            await moves.reach(runner, ModelState.READY)
        order = [
            type(e).__name__ if not isinstance(e, ModelStateChanged) else e.new.value
            for e in events
        ]
        assert order == [
            "starting",
            "ready",
            "stopping",
            "KvCacheSaved",
            "stopped",
            "starting",
            "KvCacheRestored",
            "ready",
        ]
        runner.stop("done")
        with trio.fail_after(30):
            await runner.stopped.wait()
        runner.close()
        nursery.cancel_scope.cancel()
