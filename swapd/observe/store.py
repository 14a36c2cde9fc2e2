"""The activity store: every request and every model load, kept in SQLite, and what swapd
learns and keeps across restarts (learned memory peaks, the KV-cache slot index).

Owns one ``sqlite3`` connection and the one task that writes to it. Producers never wait:
:meth:`ActivityStore.add`, :meth:`ActivityStore.add_load` and
:meth:`ActivityStore.add_footprint` put the row on a bounded memory channel
(``send_nowait``); :meth:`ActivityStore.run` takes rows off
the channel and writes them in batches, one transaction per batch, through
``trio.to_thread`` so the event loop never waits on the disk. A batch is written when
:data:`BATCH_ROWS` rows are waiting or :data:`COMMIT_INTERVAL` after its first row,
whichever comes first: a row is committed at most ``COMMIT_INTERVAL`` plus one batch
write after it was added (docs/reliability.md). Reads (:meth:`activity_page`,
:meth:`stats`, :meth:`load_history`) also run in a thread; a ``trio.Lock`` keeps the
connection to one thread at a time. The KV-cache index is the one exception to the
queue: :meth:`ActivityStore.replace_kv_slots` commits before it returns, because the
caller touches slot files only once the index no longer names them.

Where the database lives: ``store.path`` when set (``:memory:`` keeps it in memory), else
``$STATE_DIRECTORY/activity.db`` under systemd (``StateDirectory=swapd``), else
``$XDG_STATE_HOME/swapd/activity.db``, else ``~/.local/state/swapd/activity.db``
(:func:`default_path`).

The store never takes swapd down: a file that cannot be opened (corrupt, not a database,
unwritable, a directory, a newer schema) or a write that fails later is logged once, as
one error, and the store carries on in memory (``statistics().fallback``). A full channel
(the disk far behind) drops the row and counts it (``statistics().dropped``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from swapd.observe import store_schema as db
from swapd.observe.store_schema import ActivityFilter, Histogram, UsageTotals

__all__ = [
    "BATCH_ROWS",
    "COMMIT_INTERVAL",
    "MEMORY",
    "ActivityRow",
    "ActivityStore",
    "FootprintRecord",
    "LoadRecord",
    "StoreSettings",
    "StoreStatistics",
    "StoreStats",
    "default_path",
]

log = logging.getLogger(__name__)

MEMORY: Final = ":memory:"
COMMIT_INTERVAL: Final = 0.1  # seconds from a batch's first row to its commit, at most
BATCH_ROWS: Final = 512  # rows that make a batch be written at once
QUEUE_ROWS: Final = 10_000  # rows that may wait for the writer before new ones are dropped
PRUNE_INTERVAL: Final = 1.0  # seconds between retention passes (each one is a few DELETEs)


def default_path(environ: Mapping[str, str]) -> Path:
    """Where the database lives when ``store.path`` is not set (see the module docstring)."""
    state_dir = environ.get("STATE_DIRECTORY", "").split(":")[0]
    if os.path.isabs(state_dir):
        return Path(state_dir) / "activity.db"
    base = environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(environ.get("HOME") or str(Path.home()), ".local", "state")
    return Path(base) / "swapd" / "activity.db"


@attrs.frozen(kw_only=True)
class StoreSettings:
    """What the store needs from the config (``store.*`` and ``metricsMaxInMemory``).

    ``max_rows`` caps a file store (0: no cap); a store in memory keeps ``memory_rows``
    (llama-swap's ``metricsMaxInMemory``). ``max_age_days`` drops older rows (0: never)."""

    path: str
    max_rows: int = 100_000
    max_age_days: int = 30
    memory_rows: int = 1000


@attrs.frozen(kw_only=True)
class ActivityRow:
    """One request, as recorded. ``id`` is -1 until the database gives it one (rows read
    back from the store carry it).

    Token counts and rates are -1 when the upstream did not report them (input and output
    counts are 0 then, as in llama-swap); ``queue_ms`` is -1 when the request never waited
    for a model, ``ttfb_ms`` when no body byte was sent, ``capture_id`` when nothing was
    captured."""

    id: int = -1
    ts_ms: int
    method: str = "POST"
    req_path: str
    model: str = ""
    key_name: str = ""
    status: int
    content_type: str = ""
    queue_ms: int = -1
    ttfb_ms: int = -1
    total_ms: int = 0
    duration_ms: int = 0
    cache_tokens: int = -1
    input_tokens: int = 0
    output_tokens: int = 0
    draft_tokens: int = -1
    draft_acc_tokens: int = -1
    prompt_per_second: float = -1.0
    tokens_per_second: float = -1.0
    error_msg: str = ""
    capture_id: int = -1
    metadata: Mapping[str, str] = attrs.field(factory=dict)

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.ts_ms,
            self.method,
            self.req_path,
            self.model,
            self.key_name,
            self.status,
            self.content_type,
            self.queue_ms,
            self.ttfb_ms,
            self.total_ms,
            self.duration_ms,
            self.cache_tokens,
            self.input_tokens,
            self.output_tokens,
            self.draft_tokens,
            self.draft_acc_tokens,
            self.prompt_per_second,
            self.tokens_per_second,
            self.error_msg,
            self.capture_id,
            json.dumps(dict(self.metadata), separators=(",", ":")) if self.metadata else "",
        )

    @classmethod
    def from_tuple(cls, row: tuple[Any, ...]) -> ActivityRow:
        (id_, ts_ms, method, req_path, model, key_name, status, content_type, queue_ms) = row[:9]
        (ttfb_ms, total_ms, duration_ms, cache, inp, out, draft, draft_acc) = row[9:17]
        (prompt_rate, gen_rate, error_msg, capture_id, metadata_json) = row[17:]
        metadata = json.loads(metadata_json) if metadata_json else {}
        return cls(
            id=id_,
            ts_ms=ts_ms,
            method=method,
            req_path=req_path,
            model=model,
            key_name=key_name,
            status=status,
            content_type=content_type,
            queue_ms=queue_ms,
            ttfb_ms=ttfb_ms,
            total_ms=total_ms,
            duration_ms=duration_ms,
            cache_tokens=cache,
            input_tokens=inp,
            output_tokens=out,
            draft_tokens=draft,
            draft_acc_tokens=draft_acc,
            prompt_per_second=prompt_rate,
            tokens_per_second=gen_rate,
            error_msg=error_msg,
            capture_id=capture_id,
            metadata=metadata if isinstance(metadata, dict) else {},
        )


@attrs.frozen(kw_only=True)
class LoadRecord:
    """One start (or wake) of a model: how long until it was ready, or how it failed
    (``id`` as for :class:`ActivityRow`).

    ``outcome`` is ``ready``, ``failed`` or ``cancelled`` (stopped while loading);
    ``exit_code`` is the process's exit code when it ended during the load (a negative
    number for a signal, as ``subprocess`` reports it), else None."""

    id: int = -1
    model: str
    cmd_hash: str
    kind: str = "start"
    started_ms: int
    duration_ms: int
    outcome: str
    exit_code: int | None = None
    error: str = ""

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.id,
            self.model,
            self.cmd_hash,
            self.kind,
            self.started_ms,
            self.duration_ms,
            self.outcome,
            self.exit_code,
            self.error,
        )

    @classmethod
    def from_tuple(cls, row: tuple[Any, ...]) -> LoadRecord:
        id_, model, cmd_hash, kind, started_ms, duration_ms, outcome, exit_code, error = row
        return cls(
            id=id_,
            model=model,
            cmd_hash=cmd_hash,
            kind=kind,
            started_ms=started_ms,
            duration_ms=duration_ms,
            outcome=outcome,
            exit_code=exit_code,
            error=error,
        )


@attrs.frozen(kw_only=True)
class FootprintRecord:
    """A model and command line's learned memory peak per device (bytes), to keep."""

    model: str
    cmd_hash: str
    peaks: Mapping[str, int]
    updated_ms: int

    def as_tuples(self) -> list[tuple[Any, ...]]:
        return [
            (self.model, self.cmd_hash, device, size, self.updated_ms)
            for device, size in sorted(self.peaks.items())
        ]


_Queued = ActivityRow | LoadRecord | FootprintRecord


@attrs.frozen
class StoreStats:
    """``GET /api/metrics/stats``: totals and speed histograms."""

    totals: UsageTotals
    prompt: Histogram | None
    generation: Histogram | None


@attrs.frozen(kw_only=True)
class StoreStatistics:
    location: str  # the file, or ":memory:"
    fallback: str | None  # why the store fell back to memory, if it did
    added: int
    written: int
    dropped: int
    pending: int


class StoreUnavailable(Exception):
    """The database file cannot be used; the message says why (llama-swap's wording)."""


def _open(path: str) -> sqlite3.Connection:
    """Open and migrate the database at ``path`` (blocking; runs in a thread)."""
    if path == MEMORY:
        conn = sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)
        db.configure(conn, file=False)
        db.migrate(conn)
        return conn
    file = Path(path)
    if file.is_dir():
        raise StoreUnavailable(f"store.path: {file} is a directory, not a file")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(
            f"store.path: directory {file.parent} is not writable: {exc.strerror or exc}"
        ) from exc
    if file.exists() and not os.access(file, os.W_OK):
        raise StoreUnavailable(f"store.path: {file} is not writable: permission denied")
    conn = sqlite3.connect(file, isolation_level=None, check_same_thread=False)
    try:
        db.configure(conn, file=True)
        db.migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _reason(exc: BaseException, path: str) -> str:
    if isinstance(exc, StoreUnavailable):
        return str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
        return f"store.path: directory {Path(path).parent} is not writable: {exc}"
    return f"{path}: {exc}"


class ActivityStore:
    """See the module docstring. Start :meth:`run` in a nursery (``nursery.start``: it is
    started once the database is open, or the fallback chosen); :meth:`aclose` writes what
    is queued and closes the database."""

    def __init__(
        self,
        settings: StoreSettings,
        on_committed: Callable[[Sequence[int], Sequence[str]], None] | None = None,
    ) -> None:
        self.settings = settings
        # Told the ids of each batch's activity rows once it is committed (readable), and
        # each row's model (the event feed shows a scoped key only its models' rows).
        self._on_committed = on_committed
        self._send, self._receive = trio.open_memory_channel[_Queued](QUEUE_ROWS)
        self._conn: sqlite3.Connection | None = None
        self._lock = trio.Lock()
        self._location = settings.path
        self._fallback: str | None = None
        self._last_ids = (0, 0)  # the last (activity, load) ids committed
        self._added = 0
        self._rows_added = 0
        self._written = 0
        self._dropped = 0  # never queued (channel full or closed) or lost with a batch
        self._lost = 0  # queued, then lost with a batch the memory fallback could not take
        self._progress = trio.lowlevel.ParkingLot()
        self._last_prune = -math.inf
        self._closed = trio.Event()
        self._batch_full = trio.Event()
        self._opened = False

    def __repr__(self) -> str:
        s = self.statistics()
        where = f"memory ({s.fallback})" if s.fallback else s.location
        return f"<ActivityStore {where}: {s.written} written, {s.pending} pending>"

    # --- producers (never block) ----------------------------------------------------------

    def add(self, row: ActivityRow) -> None:
        """Queue ``row`` for writing; the database gives it its id when it is committed
        (``on_committed`` hears the ids), so two swapds sharing a file never collide."""
        self._rows_added += 1
        self._put(row)

    def add_load(self, record: LoadRecord) -> None:
        self._put(record)

    def add_footprint(self, record: FootprintRecord) -> None:
        """Queue a learned peak for writing (it replaces a smaller one)."""
        self._put(record)

    def _put(self, item: _Queued) -> None:
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            if not self._dropped:
                log.error("the activity store is falling behind: dropping rows")
            self._dropped += 1
        except trio.ClosedResourceError:
            self._dropped += 1  # swapd is stopping; the writer is gone
        else:
            self._added += 1
            if self._receive.statistics().current_buffer_used >= BATCH_ROWS:
                self._batch_full.set()

    def reconfigure(self, settings: StoreSettings) -> None:
        """Follow a reload: retention applies at once; a new ``path`` at the next start."""
        if settings.path != self.settings.path:
            log.warning("store.path changed: it takes effect when swapd restarts")
        self.settings = attrs.evolve(settings, path=self.settings.path)
        self._last_prune = -math.inf

    @property
    def durable(self) -> bool:
        """True while the store is a file (not ``:memory:``, not fallen back to memory):
        what it keeps survives a restart."""
        return self._opened and self._location != MEMORY

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            location=self._location,
            fallback=self._fallback,
            added=self._added,
            written=self._written,
            dropped=self._dropped,
            pending=self._receive.statistics().current_buffer_used,
        )

    # --- the writer -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Open the database, then write batches until :meth:`aclose`.

        ``task_status.started()`` (no value) comes once the database is open (or the
        memory fallback is in place)."""
        await self._open()
        task_status.started()
        try:
            while True:
                try:
                    batch = [await self._receive.receive()]
                except trio.EndOfChannel:
                    break
                # Let rows gather (no task switch per row): until the interval is over, or
                # a producer finds BATCH_ROWS waiting and wakes us; then take them all.
                with trio.move_on_after(COMMIT_INTERVAL):
                    await self._batch_full.wait()
                self._batch_full = trio.Event()
                ended = self._drain(batch)
                try:
                    await self._write(batch)
                except Exception:
                    # A bug, not the disk (those fall back to memory): the store must still
                    # never take swapd down. The batch is lost and counted.
                    log.exception("writing %d activity rows failed", len(batch))
                    self._lose(batch)
                if ended:
                    break
        finally:
            # Cancelled (swapd stopping) or closed: what is queued is still written.
            with trio.CancelScope(shield=True):
                rest: list[_Queued] = []
                self._drain(rest)
                if rest:
                    await self._write(rest)
                await self._receive.aclose()
                await self._close_connection()
                self._closed.set()

    def _drain(self, batch: list[_Queued]) -> bool:
        """Move every queued row into ``batch``; True once the channel is closed and empty."""
        while True:
            try:
                batch.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return False
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return True

    async def aclose(self) -> None:
        """Stop taking rows, write the ones queued, close the database."""
        await self._send.aclose()
        self._batch_full.set()  # the writer need not wait out the interval
        if self._opened:
            await self._closed.wait()

    async def _open(self) -> None:
        path = self.settings.path
        try:
            conn = await trio.to_thread.run_sync(_open, path)
        except (sqlite3.Error, OSError, StoreUnavailable, db.SchemaTooNew) as exc:
            self._fall_back(_reason(exc, path))
            conn = await trio.to_thread.run_sync(_open, MEMORY)
        self._conn = conn
        self._opened = True
        self._last_ids = await self._call(db.last_ids)
        log.debug("activity store at %s, last id %d", self._location, self._last_ids[0])

    def _fall_back(self, reason: str) -> None:
        self._fallback = reason
        self._location = MEMORY
        log.error(
            "activity store unusable (%s); this run's activity is kept in memory only", reason
        )

    async def _call(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            conn = self._conn
            assert conn is not None, "ActivityStore.run() has not opened the database"
            return await trio.to_thread.run_sync(fn, conn, *args)

    async def _write(self, batch: list[_Queued]) -> None:
        rows = [r.as_tuple() for r in batch if isinstance(r, ActivityRow)]
        models = [r.model for r in batch if isinstance(r, ActivityRow)]
        loads = [r.as_tuple() for r in batch if isinstance(r, LoadRecord)]
        peaks = [t for r in batch if isinstance(r, FootprintRecord) for t in r.as_tuples()]
        now = trio.current_time()
        prune = now - self._last_prune >= PRUNE_INTERVAL
        if prune:
            self._last_prune = now
        try:
            ids = await self._call(self._write_batch, rows, loads, peaks, prune)
        except sqlite3.Error as exc:
            if self._fallback is not None:
                # Already in memory: nothing left to fall back to. Never take swapd down.
                log.exception("the in-memory activity store failed; %d rows lost", len(batch))
                self._lose(batch)
                return
            self._fall_back(_reason(exc, self._location))
            old = self._conn
            self._conn = await trio.to_thread.run_sync(_open, MEMORY)
            if old is not None:
                await trio.to_thread.run_sync(_close_quietly, old)
            await self._call(db.continue_ids, *self._last_ids)
            ids = await self._call(self._write_batch, rows, loads, peaks, True)
        self._written += len(batch)
        self._progress.unpark_all()
        if ids:
            self._last_ids = (ids[-1], self._last_ids[1] + len(loads))
            if self._on_committed is not None:
                self._on_committed(ids, models)

    def _lose(self, batch: list[_Queued]) -> None:
        self._dropped += len(batch)
        self._lost += len(batch)
        self._progress.unpark_all()

    async def wait_written(self, rows: int = 0) -> None:
        """Wait until every row added before this call is committed (or known lost) and,
        with ``rows``, until at least that many activity rows were added since the store
        started and committed too."""
        target = self._added
        while self._written + self._lost < target or self._rows_added < rows:
            await self._progress.park()
            if self._rows_added >= rows:
                target = max(target, self._added)

    def _write_batch(
        self,
        conn: sqlite3.Connection,
        rows: list[tuple[Any, ...]],
        loads: list[tuple[Any, ...]],
        peaks: list[tuple[Any, ...]],
        prune: bool,
    ) -> range:
        """One transaction: the batch, then (every PRUNE_INTERVAL) the retention pass;
        returns the ids the activity rows got."""
        ids = range(0)
        conn.execute("BEGIN")
        try:
            if rows:
                ids = db.insert_activity(conn, rows)
            if loads:
                db.insert_loads(conn, loads)
            if peaks:
                db.upsert_footprints(conn, peaks)
            if prune:
                self._prune(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return ids

    def _prune(self, conn: sqlite3.Connection) -> None:
        s = self.settings
        max_rows = s.memory_rows if self._location == MEMORY else s.max_rows
        min_ts = None
        if s.max_age_days > 0:
            min_ts = int((time.time() - s.max_age_days * 86400) * 1000)
        db.prune(conn, max_rows=max_rows, min_ts_ms=min_ts)

    async def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(_close_quietly, conn)

    # --- readers --------------------------------------------------------------------------

    async def activity_page(
        self,
        where: ActivityFilter,
        *,
        sort: str = "id",
        descending: bool = True,
        limit: int = 25,
        page: int = 1,
    ) -> tuple[list[ActivityRow], int]:
        """One page of rows and the number of rows matching ``where``."""
        found: db.ActivityPage = await self._call(
            lambda conn: db.activity_page(
                conn, where, sort=sort, descending=descending, limit=limit, page=page
            )
        )
        return [ActivityRow.from_tuple(r) for r in found.rows], found.total

    async def stats(self, where: ActivityFilter) -> StoreStats:
        def read(conn: sqlite3.Connection) -> StoreStats:
            return StoreStats(
                db.usage_totals(conn, where),
                db.histogram(db.rate_values(conn, where, "prompt_per_second")),
                db.histogram(db.rate_values(conn, where, "tokens_per_second")),
            )

        result: StoreStats = await self._call(read)
        return result

    async def load_history(
        self,
        model_id: str,
        cmd_hash: str | None = None,
        limit: int = 20,
        *,
        kind: str | None = None,
    ) -> list[LoadRecord]:
        """The newest ``limit`` loads of ``model_id`` (of that command line when
        ``cmd_hash`` is given, of that ``kind`` when given), newest first: what load-time
        prediction reads."""
        rows = await self._call(db.load_history, model_id, cmd_hash, limit, kind)
        return [LoadRecord.from_tuple(r) for r in rows]

    async def learned_footprints(self) -> dict[tuple[str, str], dict[str, int]]:
        """Every learned peak kept: ``{(model, cmd_hash): {device: bytes}}``."""
        found: dict[tuple[str, str], dict[str, int]] = await self._call(db.learned_footprints)
        return found

    async def kv_slots(self, directory: str) -> list[tuple[Any, ...]]:
        """The KV-cache slot index of ``directory`` (``store_schema.KV_SLOT_COLUMNS``)."""
        rows: list[tuple[Any, ...]] = await self._call(db.kv_slots, directory)
        return rows

    async def replace_kv_slots(self, directory: str, rows: Sequence[Sequence[Any]]) -> None:
        """Replace ``directory``'s slot index in one transaction, committed on return.

        Not queued like the rows above: the caller deletes or overwrites files only after
        the index no longer names them, so it must know the write is on disk."""
        await self._call(db.replace_kv_slots, directory, rows)


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        log.debug("closing the activity database failed", exc_info=True)
