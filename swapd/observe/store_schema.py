"""The activity database: its schema, its migrations and every SQL statement swapd runs.

Plain, blocking ``sqlite3`` on one connection; nothing here knows about trio (the
``store`` module runs these functions through ``trio.to_thread``). Keeping the SQL in one
module keeps the schema, the migrations and the queries in step.

Rules:
- ``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS` holds one script per
  version step, applied in order inside one transaction by :func:`migrate` at start. A
  script is never edited once released: a change is a new step.
- A database from a *newer* swapd (a version above :data:`SCHEMA_VERSION`) is refused
  (:class:`SchemaTooNew`), never written to.
- Values go in as parameters, never as SQL text; sort columns come from a fixed table.
- Times are unix milliseconds (``ts_ms``); ``-1`` means "not known" for counts and rates
  (as in llama-swap's rows) and for the swapd timings (``queue_ms``, ``ttfb_ms``).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

__all__ = [
    "ACTIVITY_COLUMNS",
    "KV_SLOT_COLUMNS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SORT_COLUMNS",
    "ActivityFilter",
    "ActivityPage",
    "Histogram",
    "LoadColumns",
    "SchemaTooNew",
    "UsageTotals",
    "activity_page",
    "check_version",
    "configure",
    "continue_ids",
    "histogram",
    "insert_activity",
    "insert_loads",
    "kv_slots",
    "learned_footprints",
    "replace_kv_slots",
    "upsert_footprints",
    "load_history",
    "migrate",
    "last_ids",
    "prune",
    "rate_values",
    "schema_version",
    "usage_totals",
]

# Version 1: the activity table as llama-swap v250 has it (same names, so its rows read
# alike) plus swapd's columns, and the loads table.
# Version 2: swapd's per-request timings (queue wait, time to first byte, whole request),
# the method, the key-name placeholder and the capture reference.
_V1 = """
CREATE TABLE activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL DEFAULT 0,
    model_id TEXT NOT NULL DEFAULT '',
    req_path TEXT NOT NULL DEFAULT '',
    resp_content_type TEXT NOT NULL DEFAULT '',
    resp_status_code INTEGER NOT NULL DEFAULT 0,
    cache_tokens INTEGER NOT NULL DEFAULT -1,
    draft_tokens INTEGER NOT NULL DEFAULT -1,
    draft_acc_tokens INTEGER NOT NULL DEFAULT -1,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    prompt_per_second REAL NOT NULL DEFAULT -1,
    tokens_per_second REAL NOT NULL DEFAULT -1,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    error_msg TEXT NOT NULL DEFAULT '',
    metadata_json TEXT NOT NULL DEFAULT ''
);
CREATE INDEX activity_time ON activity (ts_ms DESC, id DESC);
CREATE INDEX activity_model_time ON activity (model_id, ts_ms DESC, id DESC);
CREATE TABLE loads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    cmd_hash TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT 'start',
    started_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    exit_code INTEGER,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX loads_model_cmd ON loads (model_id, cmd_hash, started_ms DESC);
"""

_V2 = """
ALTER TABLE activity ADD COLUMN method TEXT NOT NULL DEFAULT 'POST';
ALTER TABLE activity ADD COLUMN key_name TEXT NOT NULL DEFAULT '';
ALTER TABLE activity ADD COLUMN queue_ms INTEGER NOT NULL DEFAULT -1;
ALTER TABLE activity ADD COLUMN ttfb_ms INTEGER NOT NULL DEFAULT -1;
ALTER TABLE activity ADD COLUMN total_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE activity ADD COLUMN capture_id INTEGER NOT NULL DEFAULT -1;
CREATE INDEX activity_status ON activity (resp_status_code);
"""

# Version 3: what swapd learns about its models and keeps across restarts: each model and
# command line's measured memory peak per device, and the index of saved KV-cache slots
# (per cache directory). Retention never touches these tables.
_V3 = """
CREATE TABLE footprints (
    model_id TEXT NOT NULL,
    cmd_hash TEXT NOT NULL,
    device TEXT NOT NULL,
    peak_bytes INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (model_id, cmd_hash, device)
);
CREATE TABLE kv_slots (
    directory TEXT NOT NULL,
    file TEXT NOT NULL,
    model_id TEXT NOT NULL,
    cmd_hash TEXT NOT NULL,
    slot INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    size INTEGER NOT NULL,
    saved_at REAL NOT NULL,
    used_at REAL NOT NULL,
    PRIMARY KEY (directory, file)
);
"""

MIGRATIONS: Final[tuple[str, ...]] = (_V1, _V2, _V3)
"""``MIGRATIONS[n]`` takes a database from version ``n`` to ``n + 1``."""

SCHEMA_VERSION: Final = len(MIGRATIONS)

ACTIVITY_COLUMNS: Final = (
    "id",
    "ts_ms",
    "method",
    "req_path",
    "model_id",
    "key_name",
    "resp_status_code",
    "resp_content_type",
    "queue_ms",
    "ttfb_ms",
    "total_ms",
    "duration_ms",
    "cache_tokens",
    "input_tokens",
    "output_tokens",
    "draft_tokens",
    "draft_acc_tokens",
    "prompt_per_second",
    "tokens_per_second",
    "error_msg",
    "capture_id",
    "metadata_json",
)
"""The columns of an activity row, in the order :func:`insert_activity` and
:func:`activity_page` use (rows are plain tuples in this order)."""

LoadColumns: Final = (
    "id",
    "model_id",
    "cmd_hash",
    "kind",
    "started_ms",
    "duration_ms",
    "outcome",
    "exit_code",
    "error",
)

SORT_COLUMNS: Final[Mapping[str, str]] = {
    "id": "id",
    "time": "ts_ms",
    "model": "model_id",
    "req_path": "req_path",
    "resp_status_code": "resp_status_code",
    "resp_content_type": "resp_content_type",
    "cached": "cache_tokens",
    "prompt": "input_tokens",
    "generated": "output_tokens",
    "drafted": "draft_tokens",
    "prompt_speed": "prompt_per_second",
    "gen_speed": "tokens_per_second",
    "duration": "duration_ms",
}
"""llama-swap's ``sort`` names for ``/api/metrics/activity`` and the columns they sort."""


class SchemaTooNew(Exception):
    """The database was written by a newer swapd; it is left untouched."""


def configure(conn: sqlite3.Connection, *, file: bool) -> None:
    """Connection settings: WAL (files only) with ``synchronous=NORMAL``, which keeps every
    committed transaction through a crash of swapd (a power cut may lose the last ones,
    never corrupt the file), and a busy timeout for a second swapd on the same file.
    Files are checked first (:func:`check_version`): a file that is not a database or is
    too new is refused untouched."""
    conn.execute("PRAGMA busy_timeout = 5000")
    if file:
        check_version(conn)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch to WAL (journal mode {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's schema version; the first read of a file, so a file that is not a
    database fails here (``sqlite3.DatabaseError``) before anything is written to it."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> None:
    """Raise :class:`SchemaTooNew` for a database a newer swapd wrote (checked before the
    journal mode is switched, so such a file is left byte for byte as it was)."""
    found = schema_version(conn)
    if found > target:
        raise SchemaTooNew(f"schema version {found} is newer than this swapd's ({target})")


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema up to ``len(migrations)`` in one transaction; return the version
    the database had before. Raises :class:`SchemaTooNew` for a newer database."""
    target = len(migrations)
    check_version(conn, target)
    found = schema_version(conn)
    if found == target:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        for script in migrations[found:]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {target:d}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


def _statements(script: str) -> list[str]:
    # executescript() would commit first; one statement at a time stays in our transaction.
    return [s.strip() for s in script.split(";") if s.strip()]


def last_ids(conn: sqlite3.Connection) -> tuple[int, int]:
    """The last (activity id, load id) handed out: ids keep counting across restarts and
    are never reused, even after the newest rows were pruned (AUTOINCREMENT's rule)."""
    seq = dict(conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
    return int(seq.get("activity", 0)), int(seq.get("loads", 0))


def continue_ids(conn: sqlite3.Connection, activity: int, loads: int) -> None:
    """Make a fresh database count on from these ids (a memory fallback keeps counting)."""
    for name, last in (("activity", activity), ("loads", loads)):
        conn.execute("DELETE FROM sqlite_sequence WHERE name = ?", (name,))
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, last))


def insert_activity(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> range:
    """Insert rows (tuples in :data:`ACTIVITY_COLUMNS` order; their ``id`` is ignored) and
    return the ids the database gave them. Inside one transaction the ids are consecutive:
    no other connection can write in between, and AUTOINCREMENT counts up by one."""
    names = ", ".join(ACTIVITY_COLUMNS[1:])
    marks = ", ".join("?" * (len(ACTIVITY_COLUMNS) - 1))
    conn.executemany(
        f"INSERT INTO activity ({names}) VALUES ({marks})",  # noqa: S608
        (_storable(row[1:]) for row in rows),
    )
    last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'activity'").fetchone()
    return range(int(last[0]) - len(rows) + 1, int(last[0]) + 1)


def insert_loads(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Insert load records (tuples in :data:`LoadColumns` order; ``id`` ignored)."""
    names = ", ".join(LoadColumns[1:])
    marks = ", ".join("?" * (len(LoadColumns) - 1))
    conn.executemany(
        f"INSERT INTO loads ({names}) VALUES ({marks})",  # noqa: S608
        (_storable(row[1:]) for row in rows),
    )


def _storable(values: Sequence[Any]) -> list[Any]:
    """Text SQLite can take: a client may send a model name with a lone surrogate
    (valid JSON, not UTF-8), which sqlite3 refuses; such text is stored escaped."""
    return [_utf8(v) if isinstance(v, str) else v for v in values]


def _utf8(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def prune(conn: sqlite3.Connection, *, max_rows: int, min_ts_ms: int | None) -> int:
    """Drop activity and load rows beyond the newest ``max_rows`` (0: no cap) and rows older
    than ``min_ts_ms`` (None: no age limit); return how many activity rows went."""
    dropped = 0
    for table, ts in (("activity", "ts_ms"), ("loads", "started_ms")):
        before = conn.total_changes
        if max_rows > 0:
            conn.execute(
                f"DELETE FROM {table} WHERE id <= (SELECT MAX(id) FROM {table}) - ?",  # noqa: S608
                (max_rows,),
            )
        if min_ts_ms is not None:
            conn.execute(f"DELETE FROM {table} WHERE {ts} < ?", (min_ts_ms,))  # noqa: S608
        if table == "activity":
            dropped = conn.total_changes - before
    return dropped


@attrs.frozen(kw_only=True)
class ActivityFilter:
    """Which rows a query sees. Empty tuples and None mean "no restriction"; ``statuses``
    holds exact codes and ``status_classes`` their hundreds (5 for ``5xx``)."""

    models: tuple[str, ...] = ()
    statuses: tuple[int, ...] = ()
    status_classes: tuple[int, ...] = ()
    start_ms: int | None = None
    end_ms: int | None = None
    min_id: int | None = None
    max_id: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.models:
            clauses.append(f"model_id IN ({', '.join('?' * len(self.models))})")
            params.extend(self.models)
        codes: list[str] = []
        if self.statuses:
            codes.append(f"resp_status_code IN ({', '.join('?' * len(self.statuses))})")
            params.extend(self.statuses)
        for hundred in self.status_classes:
            codes.append("resp_status_code BETWEEN ? AND ?")
            params.extend((hundred * 100, hundred * 100 + 99))
        if codes:
            clauses.append("(" + " OR ".join(codes) + ")")
        for column, op, value in (
            ("ts_ms", ">=", self.start_ms),
            ("ts_ms", "<=", self.end_ms),
            ("id", ">=", self.min_id),
            ("id", "<=", self.max_id),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@attrs.frozen
class ActivityPage:
    rows: tuple[tuple[Any, ...], ...]
    total: int


def activity_page(
    conn: sqlite3.Connection,
    where: ActivityFilter,
    *,
    sort: str = "id",
    descending: bool = True,
    limit: int = 25,
    page: int = 1,
) -> ActivityPage:
    """One page of rows (1-based ``page``) and the number of rows the filter matches.
    Ties in the sort column are broken by id in the same direction."""
    column = SORT_COLUMNS[sort]
    clause, params = where.where()
    direction = "DESC" if descending else "ASC"
    order = f"{column} {direction}" + (f", id {direction}" if column != "id" else "")
    total = int(conn.execute(f"SELECT COUNT(*) FROM activity{clause}", params).fetchone()[0])  # noqa: S608
    rows = conn.execute(
        f"SELECT {', '.join(ACTIVITY_COLUMNS)} FROM activity{clause} "  # noqa: S608
        f"ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, limit, (page - 1) * limit],
    ).fetchall()
    return ActivityPage(tuple(tuple(r) for r in rows), total)


@attrs.frozen
class UsageTotals:
    requests: int
    input_tokens: int
    output_tokens: int
    cache_tokens: int


def usage_totals(conn: sqlite3.Connection, where: ActivityFilter) -> UsageTotals:
    """Request count and token sums (unknown counts, -1, add nothing)."""
    clause, params = where.where()
    row = conn.execute(
        "SELECT COUNT(*), TOTAL(MAX(input_tokens, 0)), TOTAL(MAX(output_tokens, 0)), "  # noqa: S608
        f"TOTAL(MAX(cache_tokens, 0)) FROM activity{clause}",
        params,
    ).fetchone()
    return UsageTotals(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


def rate_values(conn: sqlite3.Connection, where: ActivityFilter, column: str) -> list[float]:
    """The positive values of ``column`` (``prompt_per_second`` or ``tokens_per_second``)."""
    if column not in ("prompt_per_second", "tokens_per_second"):
        raise ValueError(f"not a rate column: {column}")
    clause, params = where.where()
    joiner = " AND " if clause else " WHERE "
    sql = f"SELECT {column} FROM activity{clause}{joiner}{column} > 0"  # noqa: S608
    return [float(v) for (v,) in conn.execute(sql, params)]


@attrs.frozen
class Histogram:
    """Sturges bins (clamped to 5-20) over the values, with percentiles (nearest rank)."""

    bins: tuple[int, ...]
    min: float
    max: float
    bin_size: float
    p50: float
    p95: float
    p99: float

    def as_json(self) -> dict[str, Any]:
        return {
            "bins": list(self.bins),
            "min": self.min,
            "max": self.max,
            "binSize": self.bin_size,
            "p50": self.p50,
            "p95": self.p95,
            "p99": self.p99,
        }


def histogram(values: Sequence[float]) -> Histogram | None:
    """The histogram of ``values`` (None when there are none). Pure."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)
    count = min(20, max(5, math.ceil(math.log2(n)) + 1))
    low, high = ordered[0], ordered[-1]
    size = (high - low) / count
    bins = [0] * count
    for value in ordered:
        index = count - 1 if size == 0 else min(count - 1, int((value - low) / size))
        bins[index] += 1

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * n) - 1)]

    return Histogram(tuple(bins), low, high, size, rank(0.50), rank(0.95), rank(0.99))


def load_history(
    conn: sqlite3.Connection,
    model_id: str,
    cmd_hash: str | None,
    limit: int,
    kind: str | None = None,
) -> list[tuple[Any, ...]]:
    """The newest ``limit`` loads of ``model_id`` (with ``cmd_hash`` and of ``kind`` when
    given), newest first, as tuples in :data:`LoadColumns` order."""
    sql = f"SELECT {', '.join(LoadColumns)} FROM loads WHERE model_id = ?"  # noqa: S608
    params: list[Any] = [model_id]
    if cmd_hash is not None:
        sql += " AND cmd_hash = ?"
        params.append(cmd_hash)
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    sql += " ORDER BY started_ms DESC, id DESC LIMIT ?"
    params.append(limit)
    return [tuple(r) for r in conn.execute(sql, params)]


def upsert_footprints(conn: sqlite3.Connection, rows: Iterable[Sequence[Any]]) -> None:
    """Record learned peaks: ``(model_id, cmd_hash, device, peak_bytes, updated_ms)``
    tuples. A peak only grows (two swapds sharing a file keep the larger one)."""
    conn.executemany(
        "INSERT INTO footprints (model_id, cmd_hash, device, peak_bytes, updated_ms) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (model_id, cmd_hash, device) DO UPDATE SET "
        "peak_bytes = MAX(peak_bytes, excluded.peak_bytes), updated_ms = excluded.updated_ms",
        (_storable(row) for row in rows),
    )


def learned_footprints(conn: sqlite3.Connection) -> dict[tuple[str, str], dict[str, int]]:
    """Every learned peak: ``{(model_id, cmd_hash): {device: bytes}}``."""
    found: dict[tuple[str, str], dict[str, int]] = {}
    for model_id, cmd_hash, device, peak in conn.execute(
        "SELECT model_id, cmd_hash, device, peak_bytes FROM footprints "
        "ORDER BY model_id, cmd_hash, device"
    ):
        found.setdefault((model_id, cmd_hash), {})[device] = int(peak)
    return found


KV_SLOT_COLUMNS: Final = (
    "file",
    "model_id",
    "cmd_hash",
    "slot",
    "tokens",
    "size",
    "saved_at",
    "used_at",
)


def kv_slots(conn: sqlite3.Connection, directory: str) -> list[tuple[Any, ...]]:
    """The saved-slot index of ``directory``, as tuples in :data:`KV_SLOT_COLUMNS` order."""
    sql = f"SELECT {', '.join(KV_SLOT_COLUMNS)} FROM kv_slots WHERE directory = ? ORDER BY file"  # noqa: S608
    return [tuple(r) for r in conn.execute(sql, (directory,))]


def replace_kv_slots(
    conn: sqlite3.Connection, directory: str, rows: Sequence[Sequence[Any]]
) -> None:
    """Replace ``directory``'s whole index in one transaction: a reader (or a crash) sees
    the old index or the new one, never a mix."""
    names = ", ".join(KV_SLOT_COLUMNS)
    marks = ", ".join("?" * (len(KV_SLOT_COLUMNS) + 1))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM kv_slots WHERE directory = ?", (directory,))
        conn.executemany(
            f"INSERT INTO kv_slots (directory, {names}) VALUES ({marks})",  # noqa: S608
            ([directory, *_storable(row)] for row in rows),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
