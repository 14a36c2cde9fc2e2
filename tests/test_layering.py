"""The layer rule of docs/architecture.md, machine-checked: a module imports only from its
own layer and the layers to its left, and the pure layers import no I/O library.

    errors ← config ← core ← observe ← supervise ← web ← ops ← daemon ← cli

``reload.py`` needs only ``config`` and ``errors`` (``web`` uses its reload events), so it
sits right after ``config``. ``swapd/__init__.py`` (the version) may be imported anywhere;
``swapd.testing`` is outside the chain: it may use everything, and nothing uses it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "swapd"
RANK = {
    "errors": 0,
    "config": 1,
    "reload": 1.5,
    "core": 2,
    "observe": 3,
    "supervise": 4,
    "web": 5,
    "ops": 6,
    "daemon": 7,
    "cli": 8,
    "__main__": 9,
    "testing": 10,
}
# The one exception, on purpose: the config loader compiles a matrix with core's own
# compiler (swapd/core/matrix.py imports nothing from swapd), so a bad matrix is a load
# error with its line instead of a second, drifting parser in config/.
ALLOWED = {("config/routing.py", "swapd.core.matrix")}
PURE = ("config", "core")  # decisions only: no event loop, no network, no web framework
IO_LIBRARIES = ("trio", "httpx", "quart", "quart_trio", "hypercorn", "h11")
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_layer_and_the_layers_to_its_left(path: Path) -> None:
    layer = layer_of(path)
    wrong = []
    for name in imports(path):
        parts = name.split(".")
        if parts[0] != "swapd" or len(parts) == 1:
            continue  # not ours, or the package's own __init__ (__version__)
        allowed = (str(path.relative_to(PACKAGE)), name) in ALLOWED
        if RANK[parts[1]] > RANK[layer] and not allowed:
            wrong.append(name)
    assert wrong == [], f"{layer} may not import {wrong}"


@pytest.mark.parametrize(
    "path", [p for p in MODULES if layer_of(p) in PURE], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_the_pure_layers_import_no_io_library(path: Path) -> None:
    used = [name for name in imports(path) if name.split(".")[0] in IO_LIBRARIES]
    assert used == []


def test_every_layer_is_ranked() -> None:
    assert {layer_of(p) for p in MODULES} <= set(RANK)
