"""The KV-cache slot index in the activity store's SQLite file (``kv_slots``).

The same llama-server-like slot server as tests/test_kvcache.py writes real files; the
keeper's index lives in a real store file. A restart is a new store and a new keeper on
the same file and directory: saved slots are still known, orphans and files cut short are
deleted, a save that never finished leaves nothing behind, and a JSON index from an
earlier swapd is moved into the store.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio
from test_kvcache import FakeSlots, config_for  # the slot server of the kv unit tests

from swapd.core.events import KvCacheDeleted, KvCacheFailed
from swapd.observe.store import MEMORY, ActivityStore, StoreSettings
from swapd.supervise.kvcache import (
    INDEX_FILE,
    JsonSlotIndex,
    KvCacheKeeper,
    StoreSlotIndex,
    index_maker,
)


@contextlib.asynccontextmanager
async def open_store(path: str) -> AsyncIterator[ActivityStore]:
    store = ActivityStore(StoreSettings(path=path))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        yield store
        await store.aclose()


def keeper(fake: FakeSlots, store: ActivityStore, events: list[object]) -> KvCacheKeeper:
    config = config_for(fake.directory, fake.url)
    client = httpx.AsyncClient(trust_env=False)
    return KvCacheKeeper(config, client, events.append, index_for=index_maker(store))


def rows_in(db: Path) -> list[tuple[str, str, int, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        found = conn.execute("SELECT directory, file, slot, size FROM kv_slots ORDER BY file")
        return [tuple(row) for row in found]


def files_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


async def test_the_index_lives_in_the_store_and_survives_a_restart(tmp_path: Path) -> None:
    kv_dir, db = tmp_path / "kv", tmp_path / "activity.db"
    kv_dir.mkdir()
    fake = FakeSlots(kv_dir, tokens=[50, 0, 30])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve)
            config = config_for(kv_dir, fake.url)
            async with open_store(str(db)) as store:
                first = keeper(fake, store, [])
                assert isinstance(first._index, StoreSlotIndex)
                await first.prepare()
                await first.save_slots("m", config.models["m"])
                saved = {e.file: e for e in first.saved("m")}
            assert sorted(saved) == files_in(kv_dir)  # no JSON index written
            assert rows_in(db) == [
                (str(kv_dir), name, saved[name].slot, saved[name].size) for name in sorted(saved)
            ]
            kept, cut = sorted(saved)
            (kv_dir / "stray-slot9.swapd-kv").write_bytes(b"?")  # in no index: an orphan
            os.truncate(kv_dir / cut, 10)  # recorded, then cut short
            events: list[object] = []
            async with open_store(str(db)) as store:  # the restart
                second = keeper(fake, store, events)
                await second.prepare()
                assert [e.file for e in second.saved("m")] == [kept]
                assert second.saved("m")[0] == saved[kept]
            deleted = sorted((e.file, e.reason) for e in events if isinstance(e, KvCacheDeleted))
            assert deleted == sorted([(cut, "corrupt"), ("stray-slot9.swapd-kv", "orphan")])
            assert files_in(kv_dir) == [kept]
            assert [row[1] for row in rows_in(db)] == [kept]
            nursery.cancel_scope.cancel()


async def test_an_unfinished_save_leaves_no_entry_and_no_file(tmp_path: Path) -> None:
    kv_dir, db = tmp_path / "kv", tmp_path / "activity.db"
    kv_dir.mkdir()
    fake = FakeSlots(kv_dir, tokens=[50], save="hang")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve)
            config = config_for(kv_dir, fake.url)
            events: list[object] = []
            async with open_store(str(db)) as store:
                kv = keeper(fake, store, events)
                await kv.prepare()
                await kv.save_slots("m", config.models["m"])
            assert [e.action for e in events if isinstance(e, KvCacheFailed)] == ["save"]
            assert files_in(kv_dir) == []
            assert rows_in(db) == []
            nursery.cancel_scope.cancel()


async def test_a_json_index_from_an_earlier_swapd_moves_into_the_store(tmp_path: Path) -> None:
    kv_dir, db = tmp_path / "kv", tmp_path / "activity.db"
    kv_dir.mkdir()
    fake = FakeSlots(kv_dir, tokens=[50])
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve)
            config = config_for(kv_dir, fake.url)
            async with open_store(MEMORY) as memory:  # a store in memory: the JSON file
                before = keeper(fake, memory, [])
                assert isinstance(before._index, JsonSlotIndex)
                await before.save_slots("m", config.models["m"])
            [entry] = before.saved("m")
            assert files_in(kv_dir) == sorted([entry.file, INDEX_FILE])
            events: list[object] = []
            async with open_store(str(db)) as store:
                after = keeper(fake, store, events)
                await after.prepare()
                assert after.saved("m") == [entry]
            assert not [e for e in events if isinstance(e, KvCacheDeleted)]
            assert files_in(kv_dir) == [entry.file]  # the JSON index is gone
            assert [row[1] for row in rows_in(db)] == [entry.file]
            nursery.cancel_scope.cancel()
