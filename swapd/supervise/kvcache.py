"""Keeping conversations across swaps: llama-server slots saved on the way out, restored on
the way in (docs/kvcache.md).

``KvCacheKeeper`` is what a runner calls for a model with ``kvCache.enabled``:

- ``save_slots`` before the process is stopped: ``GET /slots``, then ``POST /slots/<id>?
  action=save`` for every idle slot holding tokens, all within ``saveTimeout`` (past it the
  save is abandoned and the stop goes on: a swap is never held hostage);
- ``restore_slots`` once the process is healthy and before its first request: ``action=
  restore`` for every slot saved under the *same* command-line fingerprint, within
  ``restoreTimeout`` (a failure is reported and the request goes on).

llama-server writes the files itself, so atomicity is about the index: an entry is dropped
(and the index rewritten, temp + rename) before its file is overwritten and added back only
once the file is whole; files that are not in the index are orphans and are deleted. A file
whose size differs from the index, or that the server refuses, is deleted and never fed
again (the pinned llama-server aborts on a truncated file). Beyond ``kvCache.budget`` the
least recently used files are deleted.

The index sits behind ``SlotIndex``: ``StoreSlotIndex`` keeps it in the activity store's
SQLite file (the ``kv_slots`` table, one transaction per update) when the store is a file;
``JsonSlotIndex`` (a JSON file in the cache directory, temp + rename) is the fallback when
the store is in memory, so saved slots are still usable after a restart. A JSON index
left by an earlier swapd is moved into the store the first time the store's is read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs
import httpx
import trio

from swapd.config.model import Config, ModelConfig
from swapd.config.sizes import parse_size
from swapd.core.events import KvCacheDeleted, KvCacheFailed, KvCacheRestored, KvCacheSaved
from swapd.core.kvcache_index import (
    SavedSlot,
    command_hash,
    decode_index,
    encode_index,
    is_slot_file_name,
    model_file_arguments,
    over_budget,
    slot_file_name,
)
from swapd.observe.store import ActivityStore

__all__ = [
    "INDEX_FILE",
    "JsonSlotIndex",
    "KvCacheKeeper",
    "SlotIndex",
    "StoreSlotIndex",
    "index_maker",
]

log = logging.getLogger("swapd.kvcache")

INDEX_FILE = "swapd-kvcache-index.json"


class SlotIndex(Protocol):
    """Where the record of saved slots lives (the store's SQLite file, or a JSON file)."""

    async def load(self) -> list[SavedSlot]: ...

    async def store(self, entries: Sequence[SavedSlot]) -> None:
        """Replace the whole record at once (never half-written)."""


class JsonSlotIndex:
    """The index as one JSON file in the cache directory, replaced atomically."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def load(self) -> list[SavedSlot]:
        def read() -> str:
            try:
                with open(self.path, encoding="utf-8") as file:
                    return file.read()
            except FileNotFoundError:
                return ""

        text = await trio.to_thread.run_sync(read)
        return decode_index(text) if text else []

    async def store(self, entries: Sequence[SavedSlot]) -> None:
        text = encode_index(entries)

        def write() -> None:
            temp = f"{self.path}.tmp{os.getpid()}"
            with open(temp, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, self.path)

        await trio.to_thread.run_sync(write)


class StoreSlotIndex:
    """The index of one cache directory as rows of the activity store's ``kv_slots``
    table, replaced in one transaction (committed before :meth:`store` returns). A
    database error is raised as ``OSError``, like a failed write of the JSON file."""

    def __init__(self, store: ActivityStore, directory: str) -> None:
        self._store = store
        self.directory = os.path.abspath(directory)
        self._legacy = JsonSlotIndex(os.path.join(self.directory, INDEX_FILE))

    async def load(self) -> list[SavedSlot]:
        try:
            rows = await self._store.kv_slots(self.directory)
        except sqlite3.Error as exc:
            raise OSError(f"reading the KV-cache index from the activity store: {exc}") from exc
        if rows:
            return [_from_row(row) for row in rows]
        # Nothing here yet: take over the JSON index an earlier swapd left, if any.
        entries = await self._legacy.load()
        if entries:
            await self.store(entries)
            with contextlib.suppress(FileNotFoundError):
                await trio.to_thread.run_sync(os.remove, self._legacy.path)
            log.info("moved the KV-cache index %s into the activity store", self._legacy.path)
        return entries

    async def store(self, entries: Sequence[SavedSlot]) -> None:
        rows = [
            (e.file, e.model, e.cmd_hash, e.slot, e.tokens, e.size, e.saved_at, e.used_at)
            for e in entries
        ]
        try:
            await self._store.replace_kv_slots(self.directory, rows)
        except sqlite3.Error as exc:
            raise OSError(f"writing the KV-cache index to the activity store: {exc}") from exc


def _from_row(row: Sequence[Any]) -> SavedSlot:
    file, model, cmd_hash, slot, tokens, size, saved_at, used_at = row
    return SavedSlot(
        file=str(file),
        model=str(model),
        cmd_hash=str(cmd_hash),
        slot=int(slot),
        tokens=int(tokens),
        size=int(size),
        saved_at=float(saved_at),
        used_at=float(used_at),
    )


def index_maker(store: ActivityStore) -> Callable[[str], SlotIndex]:
    """How :class:`KvCacheKeeper` makes a directory's index: in the store when the store
    is a file (it survives restarts), else the JSON file in the directory."""
    if store.durable:
        return lambda directory: StoreSlotIndex(store, directory)
    return lambda directory: JsonSlotIndex(os.path.join(directory, INDEX_FILE))


class _SlotCallFailed(Exception):
    """A /slots call did not do what was asked; the message says why."""


class KvCacheKeeper:
    """Saves and restores opted-in models' slots; see the module docstring.

    ``publish`` receives the ``KvCache*`` events; ``index_for`` makes the index of a
    directory (tests and the future store pass their own).
    """

    def __init__(
        self,
        config: Config,
        client: httpx.AsyncClient,
        publish: Callable[[object], None],
        *,
        index_for: Callable[[str], SlotIndex] | None = None,
    ) -> None:
        self._client = client
        self._publish = publish
        self._index_for = index_for or (lambda d: JsonSlotIndex(os.path.join(d, INDEX_FILE)))
        self._lock = trio.Lock()
        self._entries: dict[str, SavedSlot] | None = None  # None: not loaded yet
        self.restored_tokens: dict[str, int] = {}  # model -> tokens restored at its last start
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        directory = config.kv_cache.dir
        if getattr(self, "directory", None) != directory:
            self.directory = directory
            self._index = self._index_for(directory)
            self._entries = None  # another directory: read its index afresh
        self.budget = parse_size(config.kv_cache.budget)

    # --- what the runner calls ----------------------------------------------------------

    async def prepare(self) -> None:
        """Create the directory, read the index and delete orphans (at swapd's start)."""
        async with self._lock:
            await self._load()

    def saved(self, model_id: str) -> list[SavedSlot]:
        """The slots saved for ``model_id`` (any command line)."""
        return [e for e in (self._entries or {}).values() if e.model == model_id]

    def summary(self, model_id: str) -> dict[str, int]:
        """For ``/running``: tokens restored at the model's last start, and tokens and bytes
        saved for it on disk."""
        saved = self.saved(model_id)
        return {
            "restoredTokens": self.restored_tokens.get(model_id, 0),
            "savedTokens": sum(e.tokens for e in saved),
            "savedBytes": sum(e.size for e in saved),
        }

    async def save_slots(self, model_id: str, spec: ModelConfig) -> None:
        """Save every idle slot holding tokens, within ``saveTimeout``; never raises."""
        if not spec.kv_cache.enabled:
            return
        timeout = spec.kv_cache.save_timeout
        progress: list[str] = []  # the file being written, if any
        with trio.move_on_after(timeout) as scope:
            await self._guarded("save", model_id, self._save(model_id, spec, progress))
        if scope.cancelled_caught:
            self._failed(model_id, "save", f"abandoned after {timeout}s; the stop goes on")
            if progress:
                # Not in the index: a half-written file must not survive as a cache.
                with trio.CancelScope(shield=True):
                    await self._unlink(progress[-1])

    async def restore_slots(self, model_id: str, spec: ModelConfig) -> None:
        """Restore the slots saved under this exact command line, within
        ``restoreTimeout``; never raises (a failure is reported, the request goes on)."""
        if not spec.kv_cache.enabled:
            return
        timeout = spec.kv_cache.restore_timeout
        self.restored_tokens.pop(model_id, None)
        with trio.move_on_after(timeout) as scope:
            await self._guarded("restore", model_id, self._restore(model_id, spec))
        if scope.cancelled_caught:
            self._failed(model_id, "restore", f"abandoned after {timeout}s; requests go on")

    # --- saving and restoring -----------------------------------------------------------

    async def _guarded(self, action: str, model_id: str, work: Any) -> None:
        try:
            await work
        except (httpx.HTTPError, _SlotCallFailed, OSError, ValueError) as exc:
            self._failed(model_id, action, _describe(exc))

    async def _save(self, model_id: str, spec: ModelConfig, progress: list[str]) -> None:
        fingerprint = await self.fingerprint(spec)
        async with self._lock:
            await self._load()
        for slot_id, tokens in await self._list_slots(spec):
            name = slot_file_name(model_id, fingerprint, slot_id)
            async with self._lock:
                await self._drop(name)  # from now on a partial file is an orphan
            progress.append(name)
            began = trio.current_time()
            try:
                body = await self._slot_action(spec, slot_id, "save", name)
                written = int(body.get("n_written", -1))
                saved_tokens = int(body.get("n_saved", tokens))
                size = await self._size_of(name)
                if size is None:
                    raise _SlotCallFailed(
                        f"the server saved slot {slot_id} but {name} is not in {self.directory}; "
                        "does cmd pass --slot-save-path ${KV_CACHE_DIR}?"
                    )
                if size != written:
                    raise _SlotCallFailed(
                        f"slot {slot_id}: {size} bytes on disk, the server reported {written}"
                    )
            except (httpx.HTTPError, _SlotCallFailed, ValueError) as exc:
                await self._unlink(name)
                progress.pop()
                self._failed(model_id, "save", _describe(exc), slot_id)
                continue
            progress.pop()
            now = time.time()
            entry = SavedSlot(
                file=name,
                model=model_id,
                cmd_hash=fingerprint,
                slot=slot_id,
                tokens=saved_tokens,
                size=size,
                saved_at=now,
                used_at=now,
            )
            seconds = trio.current_time() - began
            async with self._lock:
                assert self._entries is not None
                self._entries[name] = entry
                await self._index.store(list(self._entries.values()))
            log.info(
                "<%s> saved slot %d: %d tokens, %d bytes in %.3fs",
                model_id,
                slot_id,
                saved_tokens,
                size,
                seconds,
            )
            self._publish(
                KvCacheSaved(
                    model=model_id, slot=slot_id, tokens=saved_tokens, size=size, seconds=seconds
                )
            )
            await self._enforce_budget()

    async def _restore(self, model_id: str, spec: ModelConfig) -> None:
        fingerprint = await self.fingerprint(spec)
        async with self._lock:
            await self._load()
            assert self._entries is not None
            mine = [e for e in self._entries.values() if e.model == model_id]
        for entry in sorted(mine, key=lambda e: e.slot):
            if entry.cmd_hash != fingerprint:
                log.info(
                    "<%s> slot %d was saved under another command line; not restored",
                    model_id,
                    entry.slot,
                )
                continue
            size = await self._size_of(entry.file)
            if size != entry.size:
                await self._delete(entry, "corrupt")
                self._failed(
                    model_id,
                    "restore",
                    f"{entry.file}: {size} bytes on disk, {entry.size} recorded; deleted",
                    entry.slot,
                )
                continue
            began = trio.current_time()
            try:
                body = await self._slot_action(spec, entry.slot, "restore", entry.file)
            except (httpx.HTTPError, _SlotCallFailed, ValueError) as exc:
                # Refused, or the server died reading it: either way never feed it again.
                await self._delete(entry, "corrupt")
                self._failed(model_id, "restore", f"{_describe(exc)}; deleted", entry.slot)
                if isinstance(exc, httpx.TransportError):
                    return
                continue
            seconds = trio.current_time() - began
            tokens = int(body.get("n_restored", entry.tokens))
            async with self._lock:
                assert self._entries is not None
                if entry.file in self._entries:
                    self._entries[entry.file] = _touched(entry, time.time())
                    await self._index.store(list(self._entries.values()))
            self.restored_tokens[model_id] = self.restored_tokens.get(model_id, 0) + tokens
            log.info(
                "<%s> restored slot %d: %d tokens, %d bytes in %.3fs",
                model_id,
                entry.slot,
                tokens,
                entry.size,
                seconds,
            )
            self._publish(
                KvCacheRestored(
                    model=model_id, slot=entry.slot, tokens=tokens, size=entry.size, seconds=seconds
                )
            )

    async def fingerprint(self, spec: ModelConfig) -> str:
        """The command-line hash of ``spec`` (with its model files' size and mtime)."""

        def stat_files() -> dict[str, tuple[int, int] | None]:
            found: dict[str, tuple[int, int] | None] = {}
            for path in model_file_arguments(spec.argv):
                try:
                    info = os.stat(path)
                    found[path] = (info.st_size, info.st_mtime_ns)
                except OSError:
                    found[path] = None
            return found

        files = await trio.to_thread.run_sync(stat_files)
        return command_hash(spec.argv, spec.env, files)

    # --- the server's /slots ------------------------------------------------------------

    async def _list_slots(self, spec: ModelConfig) -> list[tuple[int, int]]:
        """(slot id, tokens held) of the idle slots holding tokens."""
        response = await self._client.get(_url(spec, "/slots"), timeout=None)
        if response.status_code != 200:
            raise _SlotCallFailed(f"GET /slots answered {response.status_code}")
        found: list[tuple[int, int]] = []
        for slot in response.json():
            if not isinstance(slot, dict) or slot.get("is_processing"):
                continue  # a slot mid-request has no stable state to save
            tokens = _tokens_held(slot)
            if tokens > 0:
                found.append((int(slot["id"]), tokens))
        return found

    async def _slot_action(
        self, spec: ModelConfig, slot_id: int, action: str, name: str
    ) -> dict[str, Any]:
        response = await self._client.post(
            _url(spec, f"/slots/{slot_id}"),
            params={"action": action},
            json={"filename": name},
            timeout=None,  # bounded by the caller's save/restore timeout
        )
        if response.status_code != 200:
            raise _SlotCallFailed(
                f"{action} of slot {slot_id} answered {response.status_code}: "
                f"{_error_text(response)}"
            )
        body = response.json()
        if not isinstance(body, dict):
            raise _SlotCallFailed(f"{action} of slot {slot_id}: unexpected answer {body!r}")
        return body

    # --- the directory and the index (callers hold the lock where noted) ----------------

    async def _load(self) -> None:
        """Read the index once per directory; drop entries whose file is missing or of
        another size (deleting the file) and delete files the index does not know. Lock held."""
        if self._entries is not None:
            return
        directory = self.directory

        def scan() -> dict[str, int]:
            os.makedirs(directory, exist_ok=True)
            sizes: dict[str, int] = {}
            with os.scandir(directory) as found:
                for item in found:
                    if is_slot_file_name(item.name) and item.is_file():
                        sizes[item.name] = item.stat().st_size
            return sizes

        on_disk = await trio.to_thread.run_sync(scan)
        entries = {e.file: e for e in await self._index.load() if is_slot_file_name(e.file)}
        kept: dict[str, SavedSlot] = {}
        for name, entry in entries.items():
            if on_disk.get(name) == entry.size:
                kept[name] = entry
            elif name in on_disk:
                await self._unlink(name)
                self._publish(
                    KvCacheDeleted(
                        file=name, reason="corrupt", size=on_disk[name], model=entry.model
                    )
                )
        for name, size in on_disk.items():
            if name not in kept and name not in entries:
                log.info("deleting %s: not in the KV-cache index (orphan)", name)
                await self._unlink(name)
                self._publish(KvCacheDeleted(file=name, reason="orphan", size=size))
        self._entries = kept
        if kept.keys() != entries.keys():
            await self._index.store(list(kept.values()))

    async def _drop(self, name: str) -> None:
        """Forget ``name`` in the index (lock held)."""
        assert self._entries is not None
        if self._entries.pop(name, None) is not None:
            await self._index.store(list(self._entries.values()))

    async def _delete(self, entry: SavedSlot, reason: str) -> None:
        async with self._lock:
            await self._drop(entry.file)
        await self._unlink(entry.file)
        log.warning("<%s> deleted saved slot %s (%s)", entry.model, entry.file, reason)
        self._publish(
            KvCacheDeleted(file=entry.file, reason=reason, size=entry.size, model=entry.model)
        )

    async def _enforce_budget(self) -> None:
        async with self._lock:
            assert self._entries is not None
            evict = over_budget(self._entries.values(), self.budget)
            for entry in evict:
                self._entries.pop(entry.file, None)
            if evict:
                await self._index.store(list(self._entries.values()))
        for entry in evict:
            await self._unlink(entry.file)
            log.info("<%s> evicted saved slot %s (kvCache.budget)", entry.model, entry.file)
            self._publish(
                KvCacheDeleted(file=entry.file, reason="budget", size=entry.size, model=entry.model)
            )

    async def _size_of(self, name: str) -> int | None:
        path = os.path.join(self.directory, name)

        def size() -> int | None:
            try:
                return os.stat(path).st_size
            except FileNotFoundError:
                return None

        return await trio.to_thread.run_sync(size)

    async def _unlink(self, name: str) -> None:
        path = os.path.join(self.directory, name)

        def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

        await trio.to_thread.run_sync(unlink)

    def _failed(self, model_id: str, action: str, error: str, slot: int | None = None) -> None:
        log.warning("<%s> KV cache %s failed: %s", model_id, action, error)
        self._publish(KvCacheFailed(model=model_id, action=action, error=error, slot=slot))


def _touched(entry: SavedSlot, now: float) -> SavedSlot:
    return attrs.evolve(entry, used_at=now)


def _tokens_held(slot: dict[str, Any]) -> int:
    """Tokens a /slots entry holds: ``n_prompt_tokens`` in the pinned build (the cached
    prompt plus what was generated), ``n_past`` in older ones."""
    for key in ("n_prompt_tokens", "n_past"):
        value = slot.get(key)
        if isinstance(value, int):
            return value
    return 0


def _url(spec: ModelConfig, path: str) -> str:
    return spec.proxy.rstrip("/") + path


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
        if isinstance(message, str):
            return message
    except ValueError:
        pass
    return response.text[:200]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TransportError):
        return f"the server did not answer ({type(exc).__name__}: {exc})"
    return str(exc) or type(exc).__name__
