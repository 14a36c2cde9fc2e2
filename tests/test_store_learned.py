"""The store's tables for what swapd learns (schema version 3): footprints and the KV-cache
slot index; a version-2 database gains them and keeps its rows; retention leaves them be."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from swapd.observe import store_schema as db
from swapd.observe.store_schema import ActivityFilter

NOW_MS = int(time.time() * 1000)


def test_migrating_a_version_2_database_adds_the_learned_tables(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    old = sqlite3.connect(path, isolation_level=None)
    db.migrate(old, db.MIGRATIONS[:2])
    old.execute(
        "INSERT INTO loads (model_id, cmd_hash, started_ms, duration_ms, outcome) "
        "VALUES ('m', 'abc', ?, 1500, 'ready')",
        (NOW_MS,),
    )
    old.close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert db.migrate(conn) == 2
    assert db.schema_version(conn) == 3
    assert [r[6] for r in db.load_history(conn, "m", "abc", 5)] == ["ready"]
    assert db.learned_footprints(conn) == {}
    assert db.kv_slots(conn, "/kv") == []


def test_a_learned_peak_only_grows() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(conn)
    db.upsert_footprints(conn, [("m", "h1", "ram", 100, 1), ("m", "h1", "cuda:0", 50, 1)])
    db.upsert_footprints(conn, [("m", "h1", "ram", 80, 2), ("m", "h2", "ram", 10, 2)])
    db.upsert_footprints(conn, [("m", "h1", "cuda:0", 70, 3)])
    assert db.learned_footprints(conn) == {
        ("m", "h1"): {"cuda:0": 70, "ram": 100},
        ("m", "h2"): {"ram": 10},
    }


def slot(file: str, size: int) -> tuple[object, ...]:
    return (file, "m", "fp", 0, 10, size, 1.0, 2.0)


def test_a_directory_index_is_replaced_whole_and_other_directories_kept() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(conn)
    db.replace_kv_slots(conn, "/a", [slot("x.swapd-kv", 5), slot("y.swapd-kv", 6)])
    db.replace_kv_slots(conn, "/b", [slot("x.swapd-kv", 7)])
    db.replace_kv_slots(conn, "/a", [slot("y.swapd-kv", 8)])
    assert db.kv_slots(conn, "/a") == [slot("y.swapd-kv", 8)]
    assert db.kv_slots(conn, "/b") == [slot("x.swapd-kv", 7)]
    # A failing replacement (two rows for one file) leaves the old index in place.
    with pytest.raises(sqlite3.IntegrityError):
        db.replace_kv_slots(conn, "/a", [slot("z.swapd-kv", 1), slot("z.swapd-kv", 2)])
    assert db.kv_slots(conn, "/a") == [slot("y.swapd-kv", 8)]


def test_retention_leaves_the_learned_tables_alone() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(conn)
    db.upsert_footprints(conn, [("m", "h", "ram", 100, 1)])
    db.replace_kv_slots(conn, "/a", [slot("x.swapd-kv", 5)])
    db.prune(conn, max_rows=1, min_ts_ms=NOW_MS + 1)
    assert db.learned_footprints(conn) == {("m", "h"): {"ram": 100}}
    assert db.kv_slots(conn, "/a") == [slot("x.swapd-kv", 5)]
    assert db.usage_totals(conn, ActivityFilter()).requests == 0
