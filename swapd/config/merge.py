"""``--config-dir``: several YAML sources merged into one parsed tree (llama-swap v230).

Sources are the ``--config`` file (optional), then the directory's top-level ``*.yml`` and
``*.yaml`` files in sorted order; empty or comment-only files are skipped. Rules:

- identity maps (``models``, ``groups``, ``profiles``, ``selectors``, ``peers``,
  ``matrix``, ``routing.router.settings.groups`` and ``.matrix``): an entry may come from
  one source only;
- everything else merges recursively: mappings key by key, lists concatenate (``apiKeys``,
  ``preload``), equal scalars agree, different scalars conflict, an empty value loses to a
  value.

The merged tree keeps every key's line and column from its source, and ``origins`` says
which file each path came from, so a later problem names the right file and line.
"""

from __future__ import annotations

import os
from pathlib import Path as FsPath
from typing import Any

from swapd.config import source
from swapd.config.shape import Path
from swapd.errors import ConfigError, ConfigProblem

__all__ = ["dir_sources", "merge_sources", "read_sources"]

_IDENTITY: frozenset[Path] = frozenset(
    {
        ("models",),
        ("groups",),
        ("profiles",),
        ("selectors",),
        ("peers",),
        ("matrix",),
        ("routing", "router", "settings", "groups"),
        ("routing", "router", "settings", "matrix"),
    }
)


def dir_sources(config_file: str | None, config_dir: str) -> list[str]:
    """The files to merge, in order; ConfigError if the directory cannot be read or the
    ``--config`` file is also inside it."""
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(config_dir)
            if entry.is_file() and entry.name.endswith((".yml", ".yaml"))
        )
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(config_dir, 0, 0, "", f"cannot read the directory: {exc.strerror}")]
        ) from None
    files = [os.path.join(config_dir, name) for name in names]
    if config_file is not None:
        inside = {os.path.realpath(f) for f in files}
        if os.path.realpath(config_file) in inside:
            raise ConfigError(
                [
                    ConfigProblem(
                        config_file,
                        0,
                        0,
                        "",
                        f"-config path {config_file} is also present in -config-dir "
                        f"{config_dir}; remove it from one",
                    )
                ]
            )
        files.insert(0, config_file)
    return files


def merge_sources(texts: list[tuple[str, str]]) -> tuple[Any, dict[Path, str]]:
    """Parse and merge ``(file, text)`` sources. Returns the merged tree (None if all were
    empty) and the file each path came from. ConfigError lists every merge problem."""
    merged: Any = None
    origins: dict[Path, str] = {}
    problems: list[ConfigProblem] = []
    for file, text in texts:
        tree = source.parse_yaml(text, file=file)
        if tree is None:
            continue
        if not isinstance(tree, source.Mapping):
            problems.append(
                ConfigProblem(file, 1, 1, "", f"config {file}: top-level YAML must be a mapping")
            )
            continue
        if merged is None:
            merged = source.Mapping()
        _merge_mapping(merged, tree, (), file, origins, problems)
    if problems:
        raise ConfigError(problems)
    return merged, origins


def _merge_mapping(
    into: Any,
    new: Any,
    path: Path,
    file: str,
    origins: dict[Path, str],
    problems: list[ConfigProblem],
) -> None:
    for key, value in new.items():
        here = (*path, str(key))
        line, column = source.key_position(new, key)
        if key not in into or _is_empty(into[key]):
            _take(into, key, value, line, column)
            origins[here] = file
            continue
        current = into[key]
        if _is_empty(value):
            continue  # null loses to a value
        if path in _IDENTITY:
            name = ".".join(str(p) for p in path)
            problems.append(
                ConfigProblem(
                    file,
                    line,
                    column,
                    "",
                    f'duplicate {name} "{key}" found in {file} '
                    "(already defined in another config source)",
                )
            )
        elif isinstance(current, source.Mapping) and isinstance(value, source.Mapping):
            _merge_mapping(current, value, here, file, origins, problems)
        elif isinstance(current, source.Sequence) and isinstance(value, source.Sequence):
            for index, item in enumerate(value):
                item_line, item_column = source.item_position(value, index)
                current.append(item)
                current._yaml_set_idx_line_col(len(current) - 1, [item_line - 1, item_column - 1])
                origins[(*here, len(current) - 1)] = file
        elif str(current) != str(value) or type(current) is not type(value):
            dotted = ".".join(str(p) for p in here)
            problems.append(
                ConfigProblem(
                    file,
                    line,
                    column,
                    "",
                    f'conflict at "{dotted}": {file} sets a different value than a previous source',
                )
            )


def _take(into: Any, key: Any, value: Any, line: int, column: int) -> None:
    into[key] = value
    if line:
        into._yaml_set_kv_line_col(key, [line - 1, column - 1, line - 1, column - 1])


def _is_empty(node: Any) -> bool:
    return isinstance(node, str) and not source.is_quoted(node) and node in ("", "~", "null")


def read_sources(files: list[str]) -> list[tuple[str, str]]:
    """The text of each file (ConfigError naming the unreadable one)."""
    out = []
    for file in files:
        try:
            out.append((file, FsPath(file).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                [ConfigProblem(file, 0, 0, "", f"cannot read the file: {reason}")]
            ) from None
    return out
