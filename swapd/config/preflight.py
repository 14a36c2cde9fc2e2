"""Checks of a valid config against this machine, before any model starts.

A config can be well-formed and still fail at the first request: its ``cmd`` names a
program that is not on ``PATH``, or a model file (``-m``/``--model``) that does not exist.
These are warnings, not errors: the program may be installed, or the file downloaded,
before the model is first asked for. ``swapd check-config`` and the daemon's start print
them.

Also the hint for a newcomer who runs plain ``swapd`` with no ``config.yaml`` at hand.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from swapd.config.model import Config, ModelConfig

__all__ = ["missing_config_hint", "preflight"]

#: Flags whose value is a model file (llama.cpp's ``-m``/``--model``, whisper.cpp's too).
MODEL_FLAGS = ("-m", "--model")
#: A ``--model`` value is taken for a file only when it looks like one: vLLM's
#: ``--model Qwen/Qwen2.5-7B`` names a repository, not a path.
MODEL_SUFFIXES = (".gguf", ".ggml", ".bin", ".safetensors", ".pt", ".onnx")


def preflight(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """Warnings for every model whose program or model file cannot be found here."""
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    for model_id in sorted(config.models):
        spec = config.models[model_id]
        warnings.extend(f"model '{model_id}': {problem}" for problem in _problems(spec, environ))
    return warnings


def _problems(spec: ModelConfig, environ: Mapping[str, str]) -> list[str]:
    # relative paths are checked from the current directory, as the model will run there
    if not spec.argv:
        return []
    problems = []
    program = spec.argv[0]
    model_path = _model_env(spec).get("PATH")
    search_path = model_path or environ.get("PATH", os.defpath)
    if "/" in program:
        if not os.access(program, os.X_OK):
            problems.append(f"program {program} does not exist or is not executable")
    elif shutil.which(program, path=search_path) is None:
        where = "the PATH in its env" if model_path else "PATH"
        beside = Path(sys.executable).parent  # e.g. swapd-demo-upstream in swapd's venv
        hint = (
            f" (it is in {beside}: activate that venv or add it to PATH)"
            if shutil.which(program, path=str(beside))
            else ""
        )
        problems.append(f"program '{program}' is not on {where}{hint}")
    for model_file in _model_files(spec.argv[1:]):
        path = Path(os.path.expanduser(model_file))
        if not path.exists():
            problems.append(f"model file {model_file} does not exist")
    return problems


def _model_env(spec: ModelConfig) -> dict[str, str]:
    return dict(entry.partition("=")[::2] for entry in spec.env)


def _model_files(args: Sequence[str]) -> list[str]:
    """The values of ``-m X``, ``--model X`` and ``--model=X`` that look like files."""
    values = []
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if eq and flag in MODEL_FLAGS:
            values.append(value)
        elif arg in MODEL_FLAGS and i + 1 < len(args):
            values.append(args[i + 1])
    return [
        v
        for v in values
        if v.lower().endswith(MODEL_SUFFIXES) or v.startswith(("/", "./", "../", "~"))
    ]


def missing_config_hint(path: str, *, default: str) -> str | None:
    """For plain ``swapd`` (no ``--config``) with no ``config.yaml`` here: how to pass one."""
    if path != default or os.path.exists(path):
        return None
    examples = Path(__file__).resolve().parents[2] / "examples"
    where = (
        f"the examples in {examples}"
        if (examples / "quickstart.yaml").exists()
        else "the examples/ folder of swapd's source"
    )
    return (
        f"no {default} in {os.getcwd()}. Pass a config file with --config PATH, e.g.\n"
        "  swapd --config examples/quickstart.yaml   (a demo that needs no model server)\n"
        f"See {where}; `swapd check-config PATH` validates a file."
    )
