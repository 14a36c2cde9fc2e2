"""The activity store on its own: schema migrations, retention, pages and filters, stats,
load records, and what it does with a database it cannot use."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from swapd.config import parse_config
from swapd.core.events import ModelStateChanged
from swapd.core.states import ModelState
from swapd.errors import ConfigError
from swapd.observe import store_schema as db
from swapd.observe.loads import LoadTracker, command_hash, exit_code_of
from swapd.observe.store import (
    MEMORY,
    ActivityRow,
    ActivityStore,
    LoadRecord,
    StoreSettings,
    default_path,
)
from swapd.observe.store_schema import ActivityFilter

S = ModelState
NOW_MS = int(time.time() * 1000)


def row(**fields: object) -> ActivityRow:
    base: dict[str, object] = {"ts_ms": NOW_MS, "req_path": "/v1/chat/completions", "status": 200}
    return ActivityRow(**{**base, **fields})  # type: ignore[arg-type]


@asynccontextmanager
async def open_store(settings: StoreSettings) -> AsyncIterator[ActivityStore]:
    store = ActivityStore(settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            await store.aclose()


async def flushed(store: ActivityStore) -> None:
    """Wait until every row added so far is written (bounded)."""
    with trio.fail_after(10):
        await store.wait_written()


# --- schema ---------------------------------------------------------------------------------


def test_a_new_database_gets_the_whole_schema() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    assert db.migrate(conn) == 0
    assert db.schema_version(conn) == db.SCHEMA_VERSION
    columns = [r[1] for r in conn.execute("PRAGMA table_info(activity)")]
    assert set(columns) == set(db.ACTIVITY_COLUMNS)
    assert db.migrate(conn) == db.SCHEMA_VERSION  # a second start changes nothing


def test_migrating_a_version_1_database_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    db.migrate(old, db.MIGRATIONS[:1])
    old.execute(
        "INSERT INTO activity (ts_ms, model_id, req_path, resp_status_code, input_tokens) "
        "VALUES (?, 'm1', '/v1/chat/completions', 200, 7)",
        (NOW_MS,),
    )
    old.close()

    conn = sqlite3.connect(path, isolation_level=None)
    assert db.migrate(conn) == 1
    page = db.activity_page(conn, ActivityFilter())
    [found] = [ActivityRow.from_tuple(r) for r in page.rows]
    assert (found.id, found.model, found.input_tokens) == (1, "m1", 7)
    # the columns version 2 added read as "not known"
    assert (found.method, found.queue_ms, found.ttfb_ms, found.capture_id) == ("POST", -1, -1, -1)
    assert db.last_ids(conn) == (1, 0)


def test_a_failing_migration_leaves_the_database_as_it_was() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(conn, db.MIGRATIONS[:1])
    broken = (*db.MIGRATIONS[:1], "ALTER TABLE activity ADD COLUMN x INTEGER; SELECT nonsense(")
    with pytest.raises(sqlite3.Error):
        db.migrate(conn, broken)
    assert db.schema_version(conn) == 1
    assert "x" not in [r[1] for r in conn.execute("PRAGMA table_info(activity)")]


def test_a_database_from_a_newer_swapd_is_refused() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    with pytest.raises(db.SchemaTooNew):
        db.migrate(conn)


# --- retention, pages, filters, stats -------------------------------------------------------


def filled(n: int) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db.migrate(conn)
    rows = [
        row(
            id=i,
            ts_ms=NOW_MS - (n - i) * 60_000,  # one a minute, the newest now
            model=("m1", "m2", "m3")[i % 3],
            status=(200, 200, 404, 502)[i % 4],
            input_tokens=i,
            prompt_per_second=float(i),
        ).as_tuple()
        for i in range(1, n + 1)
    ]
    db.insert_activity(conn, rows)
    return conn


EVERYTHING = ActivityFilter()


def ids(conn: sqlite3.Connection, where: ActivityFilter = EVERYTHING, **kw: object) -> list[int]:
    page = db.activity_page(conn, where, limit=999, **kw)  # type: ignore[arg-type]
    return [r[0] for r in page.rows]


def test_retention_by_row_count_keeps_the_newest_and_ids_keep_counting() -> None:
    conn = filled(10)
    assert db.prune(conn, max_rows=4, min_ts_ms=None) == 6
    assert ids(conn) == [10, 9, 8, 7]
    assert db.last_ids(conn)[0] == 10
    assert list(db.insert_activity(conn, [row().as_tuple()])) == [11]  # never reused
    assert db.prune(conn, max_rows=0, min_ts_ms=None) == 0  # 0: no cap


def test_retention_by_age() -> None:
    conn = filled(10)
    db.prune(conn, max_rows=0, min_ts_ms=NOW_MS - 3 * 60_000 - 1)
    assert ids(conn) == [10, 9, 8, 7]


def test_pages_and_sorting() -> None:
    conn = filled(10)
    first = db.activity_page(conn, ActivityFilter(), limit=3, page=1)
    last = db.activity_page(conn, ActivityFilter(), limit=3, page=4)
    assert first.total == last.total == 10
    assert [r[0] for r in first.rows] == [10, 9, 8]
    assert [r[0] for r in last.rows] == [1]
    assert db.activity_page(conn, ActivityFilter(), limit=3, page=5).rows == ()
    assert ids(conn, sort="time", descending=False)[:3] == [1, 2, 3]
    # ties in the sort column are broken by id in the same direction
    assert ids(conn, sort="model")[:4] == [8, 5, 2, 10]


def test_filters_by_model_status_time_and_id() -> None:
    conn = filled(12)
    assert ids(conn, ActivityFilter(models=("m1",))) == [12, 9, 6, 3]
    assert ids(conn, ActivityFilter(models=("m1", "m2"))) == [12, 10, 9, 7, 6, 4, 3, 1]
    assert ids(conn, ActivityFilter(statuses=(404,))) == [10, 6, 2]
    assert ids(conn, ActivityFilter(status_classes=(5,), statuses=(404,))) == [
        11, 10, 7, 6, 3, 2,
    ]  # fmt: skip
    window = ActivityFilter(start_ms=NOW_MS - 2 * 60_000, end_ms=NOW_MS - 60_000)
    assert ids(conn, window) == [11, 10]
    assert ids(conn, ActivityFilter(min_id=4, max_id=6, models=("m3",))) == [5]


def test_totals_and_histograms() -> None:
    conn = filled(8)
    totals = db.usage_totals(conn, ActivityFilter(models=("m1",)))
    assert (totals.requests, totals.input_tokens, totals.cache_tokens) == (2, 3 + 6, 0)
    hist = db.histogram(db.rate_values(conn, ActivityFilter(), "prompt_per_second"))
    assert hist is not None
    assert len(hist.bins) == 5  # Sturges for 8 values is 4, raised to the minimum
    assert sum(hist.bins) == 8
    assert (hist.min, hist.max, hist.p50, hist.p99) == (1.0, 8.0, 4.0, 8.0)
    assert db.histogram([]) is None
    same = db.histogram([3.0, 3.0])
    assert same is not None
    assert same.bins == (0, 0, 0, 0, 2)


# --- the store with its writer --------------------------------------------------------------


async def test_rows_survive_a_reopen_and_ids_continue(tmp_path: Path) -> None:
    settings = StoreSettings(path=str(tmp_path / "a" / "activity.db"))
    async with open_store(settings) as store:
        store.add(row(model="m1"))
        store.add(row(model="m2", status=500, error_msg="boom"))
        store.add_load(
            LoadRecord(model="m1", cmd_hash="h", started_ms=NOW_MS, duration_ms=5, outcome="ready")
        )
    async with open_store(settings) as store:
        store.add(row(model="m3"))
        await flushed(store)
        rows, total = await store.activity_page(ActivityFilter())
        loads = await store.load_history("m1")
    assert total == 3
    assert [(r.id, r.model, r.error_msg) for r in rows] == [
        (3, "m3", ""),
        (2, "m2", "boom"),
        (1, "m1", ""),
    ]
    assert [(ld.model, ld.outcome, ld.duration_ms) for ld in loads] == [("m1", "ready", 5)]


async def test_a_store_in_memory_keeps_metrics_max_in_memory_rows() -> None:
    async with open_store(StoreSettings(path=MEMORY, memory_rows=3, max_rows=0)) as store:
        for i in range(10):
            store.add(row(input_tokens=i))
        await flushed(store)
        store.add(row(input_tokens=10))  # the retention pass runs with a later batch
        await flushed(store)
        rows, total = await store.activity_page(ActivityFilter())
    assert total <= 4  # the cap, plus at most the batch written with the pass
    assert rows[0].input_tokens == 10


async def test_load_history_filters_by_command_and_limits() -> None:
    async with open_store(StoreSettings(path=MEMORY)) as store:
        for i, cmd in enumerate(["a", "a", "b", "a"]):
            store.add_load(
                LoadRecord(
                    model="m",
                    cmd_hash=cmd,
                    started_ms=NOW_MS + i,
                    duration_ms=100 + i,
                    outcome="ready",
                )
            )
        await flushed(store)
        newest_a = await store.load_history("m", "a", limit=2)
        every = await store.load_history("m")
    assert [ld.duration_ms for ld in newest_a] == [103, 101]
    assert len(every) == 4


@pytest.mark.parametrize("damage", ["corrupt", "directory", "newer"])
async def test_an_unusable_file_falls_back_to_memory_with_one_error(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "activity.db"
    if damage == "corrupt":
        path.write_bytes(b"this is not a database, " * 200)
    elif damage == "directory":
        path.mkdir()
    else:
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {db.SCHEMA_VERSION + 5}")
        conn.close()
    before = path.read_bytes() if path.is_file() else None
    with caplog.at_level(logging.ERROR, logger="swapd.observe.store"):
        async with open_store(StoreSettings(path=str(path))) as store:
            store.add(row())
            await flushed(store)
            rows, _ = await store.activity_page(ActivityFilter())
            stats = store.statistics()
    assert len(rows) == 1
    assert stats.location == MEMORY
    assert stats.fallback is not None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "kept in memory only" in errors[0].getMessage()
    if damage == "directory":
        assert "is a directory, not a file" in errors[0].getMessage()
    if before is not None:
        assert path.read_bytes() == before  # the damaged file is left as it was


async def test_a_write_that_fails_later_moves_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "activity.db"
    with caplog.at_level(logging.ERROR, logger="swapd.observe.store"):
        async with open_store(StoreSettings(path=str(path))) as store:
            store.add(row(input_tokens=1))
            await flushed(store)
            # another program breaks the table under swapd
            other = sqlite3.connect(path)
            other.execute("DROP TABLE activity")
            other.commit()
            other.close()
            store.add(row(input_tokens=2))
            await flushed(store)
            store.add(row(input_tokens=3))
            await flushed(store)
            rows, _ = await store.activity_page(ActivityFilter())
    assert [r.input_tokens for r in rows] == [3, 2]
    assert [r.id for r in rows] == [3, 2]  # ids keep counting in memory
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


# --- load records and paths -----------------------------------------------------------------


def change(
    model: str, old: ModelState, new: ModelState, reason: str, at: float, **kw: object
) -> ModelStateChanged:
    return ModelStateChanged(model=model, old=old, new=new, reason=reason, at=at, **kw)  # type: ignore[arg-type]


def test_load_records_from_state_changes() -> None:
    config = parse_config("models:\n  m:\n    cmd: server --port ${PORT}\n", file="<t>")
    emitted: list[LoadRecord] = []
    tracker = LoadTracker(config, emitted.append)
    tracker.on_state(change("m", S.STOPPED, S.STARTING, "request", 10.0))
    tracker.on_state(change("m", S.STARTING, S.READY, "healthy", 12.5))
    tracker.on_state(change("m", S.READY, S.STOPPING, "unload", 20.0))
    tracker.on_state(change("m", S.STOPPING, S.STOPPED, "unload", 20.1))
    tracker.on_state(change("m", S.STOPPED, S.STARTING, "request", 30.0))
    tracker.on_state(change("m", S.STARTING, S.STOPPING, "start failed (health)", 31.0))
    assert len(emitted) == 1  # the failure waits for its final error
    error = "model 'm' failed to start (health): boom [exit code 3]"
    tracker.on_state(change("m", S.STOPPING, S.STOPPED, "start failed", 31.2, error=error))
    tracker.on_state(change("m", S.STOPPED, S.STARTING, "request", 40.0))
    tracker.on_state(change("m", S.STARTING, S.STOPPING, "unload", 40.5))
    cmd = command_hash(config.models["m"].cmd)
    summary = [(r.outcome, r.duration_ms, r.exit_code, r.cmd_hash) for r in emitted]
    assert summary == [
        ("ready", 2500, None, cmd),
        ("failed", 1000, 3, cmd),
        ("cancelled", 500, None, cmd),
    ]
    assert emitted[1].error == error


def test_exit_codes_from_runner_text() -> None:
    assert exit_code_of("failed [exit code 1]") == 1
    assert exit_code_of("exited unexpectedly (signal SIGKILL)") == -9
    assert exit_code_of("not healthy after 5s") is None


def test_default_path_follows_systemd_then_xdg_then_home() -> None:
    assert default_path({"STATE_DIRECTORY": "/var/lib/swapd", "XDG_STATE_HOME": "/x"}) == Path(
        "/var/lib/swapd/activity.db"
    )
    assert default_path({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/x/swapd/activity.db")
    assert default_path({"XDG_STATE_HOME": "relative", "HOME": "/h"}) == Path(
        "/h/.local/state/swapd/activity.db"
    )


async def test_two_stores_on_one_file_share_it_without_colliding(tmp_path: Path) -> None:
    """Two swapds pointed at the same file: the database hands out the ids."""
    settings = StoreSettings(path=str(tmp_path / "activity.db"))
    async with open_store(settings) as one, open_store(settings) as two:
        for i in range(5):
            one.add(row(model="one", input_tokens=i))
            two.add(row(model="two", input_tokens=i))
            await trio.sleep(0.01)
        await flushed(one)
        await flushed(two)
        rows, total = await one.activity_page(ActivityFilter(), limit=100)
        statistics = (one.statistics(), two.statistics())
    assert total == 10
    assert len({r.id for r in rows}) == 10
    assert [s.fallback for s in statistics] == [None, None]


def test_store_settings_come_from_the_config_and_the_environment() -> None:
    from swapd.observe.telemetry import store_settings

    config = parse_config(
        "metricsMaxInMemory: 50\nstore:\n  maxRows: 10\n  maxAgeDays: 0\nmodels: {}\n", file="<t>"
    )
    settings = store_settings(config, {"XDG_STATE_HOME": "/state"})
    assert settings == StoreSettings(
        path="/state/swapd/activity.db", max_rows=10, max_age_days=0, memory_rows=50
    )
    memory = parse_config("store:\n  path: ':memory:'\nmodels: {}\n", file="<t>")
    assert store_settings(memory, {}).path == MEMORY
    with pytest.raises(ConfigError, match="maxRows"):
        parse_config("store:\n  maxRows: -1\nmodels: {}\n", file="<t>")


async def test_a_reload_changes_retention_but_not_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_store(StoreSettings(path=str(tmp_path / "a.db"), max_rows=0)) as store:
        for i in range(5):
            store.add(row(input_tokens=i))
        await flushed(store)
        with caplog.at_level(logging.WARNING, logger="swapd.observe.store"):
            store.reconfigure(StoreSettings(path=str(tmp_path / "b.db"), max_rows=2))
        store.add(row(input_tokens=5))  # its batch runs the retention pass
        await flushed(store)
        rows, total = await store.activity_page(ActivityFilter())
        location = store.statistics().location
    assert total == 2
    assert [r.input_tokens for r in rows] == [5, 4]
    assert location == str(tmp_path / "a.db")
    assert "takes effect when swapd restarts" in caplog.text
