"""Compare two configs model by model: what a reload must start, stop, restart or keep.

A model's settings fall in two kinds. Those that define its *process* (command line,
stop command, address, environment, health check, port) can only take effect with a new
process: a model whose process settings changed is restarted. Everything else (TTL,
aliases, filters, listing text, concurrency, sleep endpoints, ...) is read per request or
per decision, so the running process keeps serving under the new settings: *updated*.
"""

from __future__ import annotations

from typing import Any

import attrs

from swapd.config.model import Config, ModelConfig

__all__ = ["PROCESS_FIELDS", "ConfigDiff", "diff_configs"]

PROCESS_FIELDS = ("argv", "stop_argv", "proxy", "env", "check_endpoint", "port")


@attrs.frozen
class ConfigDiff:
    """Model IDs by what a reload does to them, each tuple sorted."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()  # process settings differ: restart when idle
    updated: tuple[str, ...] = ()  # other settings differ: the process keeps running
    unchanged: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": list(self.changed),
            "updated": list(self.updated),
            "unchanged": list(self.unchanged),
        }


def needs_restart(old: ModelConfig, new: ModelConfig) -> bool:
    return any(getattr(old, name) != getattr(new, name) for name in PROCESS_FIELDS)


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    changed, updated, unchanged = [], [], []
    for model_id in sorted(old.models.keys() & new.models.keys()):
        before, after = old.models[model_id], new.models[model_id]
        if needs_restart(before, after):
            changed.append(model_id)
        elif before != after or old.group_of(model_id) != new.group_of(model_id):
            updated.append(model_id)
        else:
            unchanged.append(model_id)
    return ConfigDiff(
        added=tuple(sorted(new.models.keys() - old.models.keys())),
        removed=tuple(sorted(old.models.keys() - new.models.keys())),
        changed=tuple(changed),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
    )
