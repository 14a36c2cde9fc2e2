"""Config hot reload: one path for SIGHUP, ``--watch-config`` and ``POST /api/config/reload``.

A reload reads and validates the whole file first. Any problem leaves everything as it
was (the old config keeps serving) and is reported: in the result, in the log and as a
``ConfigReloaded`` event. A valid file is compared with the running config model by
model (``config.diff``):

- unchanged models keep running untouched, same process, same PID;
- models whose process settings changed (command, address, env, health check) finish
  their in-flight requests, are stopped, and start again with the new settings on the
  next request (requests arriving meanwhile wait for that restart);
- removed models finish their in-flight requests and are stopped; new requests get 404;
- new models are available at once; other setting changes apply to the next request.

Models that use ``${PORT}`` keep the port they had (unless ``startPort`` changed), so
adding a model never renumbers, and so restarts, the others. The HTTP-facing state (the
name router, API keys) is switched in one step between two requests. Reloads are
serialised; each is bracketed by ``ConfigReloadStarted`` / ``ConfigReloaded`` events.

``watch_config_file`` polls the file's metadata once a second (following symlinks, so a
Kubernetes ConfigMap swap is seen) and reloads after it has been quiet for a second.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from swapd.config.diff import ConfigDiff, diff_configs
from swapd.config.load import load_config_dir, parse_config, read_config_text
from swapd.config.merge import dir_sources, read_sources
from swapd.config.model import Config
from swapd.errors import ConfigError

__all__ = [
    "ConfigReloadStarted",
    "ConfigReloaded",
    "ReloadResult",
    "ReloadTarget",
    "Reloader",
    "watch_config_file",
]

log = logging.getLogger("swapd.reload")


@attrs.frozen(kw_only=True)
class ReloadResult:
    ok: bool
    at: float  # wall-clock seconds
    trigger: str
    error: str | None = None
    diff: ConfigDiff | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": self.ok,
            "at": self.at,
            "trigger": self.trigger,
            "error": self.error,
        }
        body.update((self.diff or ConfigDiff()).as_json())
        return body


@attrs.frozen
class ConfigReloadStarted:
    kind = "configReload"
    trigger: str


@attrs.frozen
class ConfigReloaded:
    kind = "configReload"
    result: ReloadResult


class ReloadTarget(Protocol):
    """What a reload switches over (the daemon's wiring)."""

    @property
    def config(self) -> Config: ...

    async def apply(self, config: Config, diff: ConfigDiff) -> None: ...


class Reloader:
    """Reloads ``path`` into ``target``; see the module docstring."""

    def __init__(
        self,
        path: str | None,
        target: ReloadTarget,
        publish: Callable[[object], None],
        *,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.path = os.path.abspath(path) if path is not None else None
        self.loaded_at = time.time()
        # The text of the running config: what the file said when it was last loaded.
        self.text = _read_quietly(path)
        self.last: ReloadResult | None = None
        self._target = target
        self._publish = publish
        self._environ = environ
        self._lock = trio.Lock()

    async def reload(self, trigger: str) -> ReloadResult:
        """Reload now (after any reload in progress); never raises for a bad file."""
        async with self._lock:
            self._publish(ConfigReloadStarted(trigger))
            result = await self._reload(trigger)
            self.last = result
            if result.ok:
                self.loaded_at = result.at
                log.info("configuration reloaded (%s): %s", trigger, _summary(result.diff))
            else:
                log.warning("unable to reload configuration (%s): %s", trigger, result.error)
            self._publish(ConfigReloaded(result))
            return result

    async def _reload(self, trigger: str) -> ReloadResult:
        if self.path is None:
            return ReloadResult(
                ok=False, at=time.time(), trigger=trigger, error="swapd was not started from a file"
            )
        old = self._target.config
        try:
            new, text = self._load(old)
        except ConfigError as exc:
            return ReloadResult(ok=False, at=time.time(), trigger=trigger, error=str(exc))
        diff = diff_configs(old, new)
        await self._target.apply(new, diff)
        self.text = text
        return ReloadResult(ok=True, at=time.time(), trigger=trigger, diff=diff)

    def _load(self, old: Config) -> tuple[Config, str]:
        assert self.path is not None
        text = read_config_text(self.path)
        keep = {m: spec.port for m, spec in old.models.items() if spec.port is not None}
        strict = old.strict  # --strict holds for reloads too
        if old.config_dir:  # --config-dir: re-read the directory, not just one file
            new = self._load_dir(old, keep)
            text = _dir_text(old)
        else:
            new = parse_config(
                text, file=self.path, environ=self._environ, keep_ports=keep, strict=strict
            )
        if new.start_port != old.start_port:  # a new range was asked for: renumber
            if old.config_dir:
                new = self._load_dir(old, None)
            else:
                new = parse_config(text, file=self.path, environ=self._environ, strict=strict)
        for warning in new.warnings:
            log.warning("config: %s", warning)
        return new, text

    def _load_dir(self, old: Config, keep: dict[str, int] | None) -> Config:
        return load_config_dir(
            old.config_dir,
            config_file=old.config_file or None,
            environ=self._environ,
            keep_ports=keep,
            strict=old.strict,
        )


def _dir_text(config: Config) -> str:
    """Every source of a ``--config-dir`` config, each under a comment naming it."""
    files = dir_sources(config.config_file or None, config.config_dir)
    return "".join(f"# --- {name} ---\n{body}" for name, body in read_sources(files))


def _read_quietly(path: str | None) -> str:
    if path is None:
        return ""
    try:
        return read_config_text(path)
    except ConfigError:
        return ""


def _summary(diff: ConfigDiff | None) -> str:
    if diff is None:
        return "nothing changed"
    parts = [
        f"{name} {', '.join(ids)}"
        for name, ids in (
            ("added", diff.added),
            ("removed", diff.removed),
            ("restarting", diff.changed),
            ("updated", diff.updated),
        )
        if ids
    ]
    return "; ".join(parts) or "no model changed"


def _fingerprint(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


async def watch_config_file(
    reloader: Reloader, *, interval: float = 1.0, quiet: float = 1.0
) -> None:
    """Reload whenever the config file changes (polled; runs until cancelled)."""
    path = reloader.path
    assert path is not None
    seen = _fingerprint(path)
    while True:
        await trio.sleep(interval)
        current = _fingerprint(path)
        if current == seen:
            continue
        # An editor may write in several steps: wait until the file stays the same.
        while True:
            await trio.sleep(quiet)
            settled = _fingerprint(path)
            if settled == current:
                break
            current = settled
        seen = current
        if current is None:
            log.warning("config file %s disappeared; keeping the running config", path)
            continue
        await reloader.reload("file changed")
