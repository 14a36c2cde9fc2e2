"""YAML text → a tree of mappings, sequences and strings that remembers where each came from.

This is the only module that imports strictyaml. We use its parser, which is what makes
the YAML strict: no duplicate keys, no anchors, aliases or tags, and no implicit typing
(every scalar arrives as text; the schema in ``model.py`` decides what it means, so
``yes`` stays a string and ``0755`` never becomes a number). Flow style
(``aliases: [a, b]``) is allowed because llama-swap files use it everywhere.

We deliberately stop at strictyaml's parse tree and apply our own schema walk
(``shape.py``) instead of strictyaml's validators, for two measured reasons: its
validators stop at the first error (we report all of them), and they recompute line
numbers by re-dumping the document, which took 63 s on a 1,000-model file; the parse
alone takes about 2 s there. The tree's ``lc`` records give exact key positions for free.
"""

from __future__ import annotations

from typing import Any

import strictyaml.parser
from strictyaml.ruamel import YAMLError
from strictyaml.ruamel import main as ruamel_main
from strictyaml.ruamel.comments import CommentedMap, CommentedSeq
from strictyaml.ruamel.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from swapd.errors import ConfigError, ConfigProblem

__all__ = ["Mapping", "Sequence", "is_block", "is_quoted", "key_position", "parse_yaml"]

Mapping = CommentedMap
Sequence = CommentedSeq


class _Loader(strictyaml.parser.StrictYAMLLoader):  # type: ignore[misc]
    # Quote style is kept so that "123" stays a string where the schema allows any value.
    allow_flow_style = True
    label = "config"

    def __init__(self, stream: str, version: Any = None, preserve_quotes: Any = None) -> None:
        super().__init__(stream, version, preserve_quotes=True)


def parse_yaml(text: str, *, file: str) -> Any:
    """Parse one YAML document. Returns a Mapping, a Sequence, a str, or None if empty.

    Raises ConfigError (with the line) on a syntax error or a construct strict YAML forbids.
    """
    try:
        return ruamel_main.load(text, Loader=_Loader)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 0
        column = mark.column + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        message = _describe_syntax_error(type(exc).__name__, str(problem), context)
        raise ConfigError([ConfigProblem(file, line, column, "", message)]) from None


def _describe_syntax_error(kind: str, problem: str, context: Any) -> str:
    problem = problem.strip()
    if kind == "DuplicateKeysDisallowed":
        return f"{problem} (each key may appear once per mapping)"
    if kind == "AnchorTokenDisallowed":
        return "YAML anchors and aliases (&x, *x) are not allowed; quote the text if it is a value"
    if kind == "TagTokenDisallowed":
        return "YAML tags (!!int, !tag) are not allowed; the schema decides types"
    if context:
        return f"invalid YAML: {str(context).strip()}: {problem}"
    return f"invalid YAML: {problem}"


def key_position(mapping: Any, key: str) -> tuple[int, int]:
    """1-based (line, column) of ``key`` in a parsed mapping, (0, 0) when unknown."""
    try:
        line, col = mapping.lc.key(key)
    except (AttributeError, KeyError, TypeError):
        return (0, 0)
    return (line + 1, col + 1)


def item_position(sequence: Any, index: int) -> tuple[int, int]:
    """1-based (line, column) of item ``index`` of a parsed sequence."""
    try:
        line, col = sequence.lc.item(index)
    except (AttributeError, KeyError, IndexError, TypeError):
        return (0, 0)
    return (line + 1, col + 1)


def is_quoted(scalar: str) -> bool:
    """True for '...' and "..." scalars, whose text is always a string."""
    return isinstance(scalar, SingleQuotedScalarString | DoubleQuotedScalarString)


def is_block(scalar: str) -> bool:
    """True for | and > block scalars, whose text is always a string."""
    return isinstance(scalar, LiteralScalarString | FoldedScalarString)
