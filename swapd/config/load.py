"""``load_config``: file → frozen, validated ``Config``, or a ConfigError naming every problem.

The pipeline, each stage in its own module:

1. ``source``   parse strict YAML (syntax errors stop here: nothing else can be trusted);
2. ``shape``    check keys and types against ``model.py``, expand ``${env.NAME}``;
3. ``macros``   validate and expand ``${name}`` macros, assign ``${PORT}``;
4. ``validate`` cross-field rules; derive argv, the ``(default)`` group, the preload list;
5. ``structure`` the cattrs door into the frozen attrs classes.

Stages 2 to 4 collect problems instead of raising, so one run reports everything wrong
with a file. Warnings (a clamped value, a deprecated key, an unknown key, a group member
that is not a model) travel on ``Config.warnings``; ``strict=True`` makes them errors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from swapd.config import macros, merge, shape, source, validate
from swapd.config.model import Config, ModelConfig
from swapd.config.shape import Problems, shape_document
from swapd.config.structure import structure_config
from swapd.errors import ConfigError, ConfigProblem

__all__ = ["load_config", "load_config_dir", "parse_config", "read_config_text"]

# Model text defaults that macros may appear in, expanded as if written in the file.
_TEXT_DEFAULTS: dict[str, str] = {
    "proxy": str(attrs.fields(ModelConfig).proxy.default),
    "checkEndpoint": str(attrs.fields(ModelConfig).check_endpoint.default),
}


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    keep_ports: Mapping[str, int] | None = None,
    strict: bool = False,
) -> Config:
    """Read and validate the config file at ``path``.

    ``environ`` supplies ``${env.NAME}`` values (default: the process environment).
    ``keep_ports`` (used by a reload) keeps models on the ports they already run on.
    ``strict`` turns every warning into an error (``swapd --strict``).
    Raises ConfigError listing every problem, each with file, line and setting path.
    """
    name = os.fspath(path)
    return parse_config(
        read_config_text(name), file=name, environ=environ, keep_ports=keep_ports, strict=strict
    )


def load_config_dir(
    config_dir: str | os.PathLike[str],
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    keep_ports: Mapping[str, int] | None = None,
    strict: bool = False,
) -> Config:
    """``--config-dir``: merge ``config_file`` (optional) and the directory's YAML files
    (``merge.py``), then validate the result like one file; problems name their file."""
    directory = os.fspath(config_dir)
    file = os.fspath(config_file) if config_file is not None else None
    files = merge.dir_sources(file, directory)
    sources = merge.read_sources(files)
    tree, origins = merge.merge_sources(sources)
    label = files[0] if files else directory
    config = _validate(tree, label, environ, keep_ports, strict, origins)
    return attrs.evolve(config, config_dir=directory, config_file=file or "")


def read_config_text(path: str) -> str:
    """The file's text, or a ConfigError saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigProblem(path, 0, 0, "", f"cannot read the file: {reason}")]
        ) from None


def parse_config(
    text: str,
    *,
    file: str = "<config>",
    environ: Mapping[str, str] | None = None,
    keep_ports: Mapping[str, int] | None = None,
    strict: bool = False,
) -> Config:
    """Validate config ``text``; ``file`` is only used in messages."""
    tree = source.parse_yaml(text, file=file)
    return _validate(tree, file, environ, keep_ports, strict, {})


def _validate(
    tree: object,
    file: str,
    environ: Mapping[str, str] | None,
    keep_ports: Mapping[str, int] | None,
    strict: bool,
    origins: dict[shape.Path, str],
) -> Config:
    problems = Problems(file, origins=origins)
    data = shape_document(tree, Config, problems, os.environ if environ is None else environ)
    macros.check_definitions(data.get("macros", {}), ("macros",), problems)
    macros.resolve_typed(data, problems)
    for model_id, model in data.get("models", {}).items():
        macros.check_definitions(model.get("macros", {}), ("models", model_id, "macros"), problems)
    macros.resolve_kv_cache_dir(data, os.environ if environ is None else environ)
    macros.expand_models(data, _TEXT_DEFAULTS, problems, keep_ports=keep_ports)
    macros.expand_peers(data, problems)
    validate.check_and_derive(data, problems)
    if strict:
        problems.make_warnings_errors()
    problems.raise_if_any()
    config = structure_config(data)
    # In file order, like errors (stages warn in their own order).
    order = sorted(
        range(len(problems.warned)),
        key=lambda i: (problems.warned[i].file, problems.warned[i].line),
    )
    warnings = tuple(problems.warnings[i] for i in order)
    return attrs.evolve(config, source=file, warnings=warnings, strict=strict)
