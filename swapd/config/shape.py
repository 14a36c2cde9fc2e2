"""Check a parsed YAML tree against the model classes; produce plain, typed data.

The walk is driven entirely by the attrs classes in ``model.py`` (their field types and
``setting`` metadata), so there is one schema. It:

- expands ``${env.NAME}`` in every scalar and mapping key before typing it (so a
  number-typed field may come from the environment, and comments are never expanded);
- types scalars by the schema, strictly: integers and booleans must be plain YAML
  scalars (``"5800"`` in quotes is a string), booleans are YAML 1.2's ``true``/``false``
  only; where the schema allows any value (``metadata``, ``setParams``, macro values) the
  YAML 1.2 core schema decides, and quoting keeps text a string;
- treats an empty value or ``null`` as "not given" (the default applies);
- accepts legacy spellings (``on_startup``) under the canonical key;
- records every problem with its line instead of stopping at the first one.

The output is dicts keyed by YAML spellings, lists and scalars; ``Problems`` keeps a
position for every path so later stages (macros, cross-field checks) report lines too.
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from swapd.config import known, source
from swapd.config.model import MacroValue
from swapd.errors import ConfigError, ConfigProblem

__all__ = [
    "INVALID",
    "MacroRef",
    "Path",
    "Problems",
    "check_number",
    "render_path",
    "shape_document",
    "typed_value",
]

Path = tuple[str | int, ...]

_ENV_MACRO = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)\}")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_YAML11_BOOLS = frozenset(
    w for base in ("yes", "no", "on", "off", "y", "n") for w in (base, base.title(), base.upper())
)
_INT = re.compile(r"[-+]?[0-9]+")
_INT_OTHER = re.compile(r"0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-/:]+")
_WHOLE_MACRO = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")


@attrs.frozen
class MacroRef:
    """A number or boolean setting written as exactly ``${name}``: the macro's typed
    value decides (llama-swap v243), once ``macros.py`` knows the macros in scope."""

    name: str
    kind: type  # int or bool
    meta: Mapping[str, Any]


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"


#: Returned where a value failed to shape; the problem is already recorded.
INVALID: Any = _Invalid()


def render_path(path: Path) -> str:
    """``("models", "llama-8b", "ttl")`` → ``models.llama-8b.ttl``; odd keys are quoted."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@attrs.define
class Problems:
    """Collects problems and warnings, and the source position of every path."""

    file: str
    problems: list[ConfigProblem] = attrs.field(factory=list)
    warnings: list[str] = attrs.field(factory=list)
    #: The warnings as problems, for ``--strict`` (which turns them into errors).
    warned: list[ConfigProblem] = attrs.field(factory=list)
    positions: dict[Path, tuple[int, int]] = attrs.field(factory=dict)
    paths: list[Path] = attrs.field(factory=list)
    #: With ``--config-dir``: the source file of a path (the closest enclosing one counts).
    origins: dict[Path, str] = attrs.field(factory=dict)

    def file_of(self, path: Path) -> str:
        for end in range(len(path), -1, -1):
            found = self.origins.get(path[:end])
            if found is not None:
                return found
        return self.file

    def position(self, path: Path) -> tuple[int, int]:
        # Fall back to the closest enclosing key that has a known place.
        for end in range(len(path), -1, -1):
            found = self.positions.get(path[:end])
            if found is not None:
                return found
        return (0, 0)

    def add(self, path: Path, message: str) -> None:
        self.paths.append(path)
        line, column = self.position(path)
        file = self.file_of(path)
        self.problems.append(ConfigProblem(file, line, column, render_path(path), message))

    def warn(self, path: Path, message: str) -> None:
        line, column = self.position(path)
        file = self.file_of(path)
        where = f"{file}:{line}" if line else file
        field = f" {render_path(path)}:" if path else ""
        self.warnings.append(f"{where}:{field} {message}")
        self.warned.append(ConfigProblem(file, line, column, render_path(path), message))

    def make_warnings_errors(self) -> None:
        """``--strict``: every warning so far becomes a problem."""
        self.problems.extend(self.warned)
        self.paths.extend(() for _ in self.warned)

    def any_under(self, prefix: Path) -> bool:
        """Whether a problem was already reported at or below ``prefix``."""
        return any(path[: len(prefix)] == prefix for path in self.paths)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def shape_document(
    tree: Any, root: type, problems: Problems, environ: Mapping[str, str]
) -> dict[str, Any]:
    """Shape a whole parsed document against the root class."""
    problems.positions[()] = (1, 1)
    if tree is None:
        return {}
    if not isinstance(tree, source.Mapping):
        problems.add((), "the config must be a mapping of settings (key: value lines)")
        return {}
    result = _Shaper(problems, environ).shape_class(tree, root, ())
    return result if isinstance(result, dict) else {}


def typed_value(text: str, *, quoted: bool) -> Any:
    """Type one scalar by the YAML 1.2 core schema (used where any value is allowed)."""
    if quoted:
        return text
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _INT_OTHER.fullmatch(text):
        return int(text, 0)
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return float("-inf") if text.startswith("-") else float("inf")
    if _NAN.fullmatch(text):
        return float("nan")
    return text


@attrs.frozen
class _Field:
    name: str
    key: str
    type: Any
    aliases: tuple[str, ...]
    required: bool
    meta: Mapping[str, Any]


_FIELDS: dict[type, tuple[_Field, ...]] = {}


def _fields_of(cls: type) -> tuple[_Field, ...]:
    found = _FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = tuple(
            _Field(
                name=f.name,
                key=f.metadata["key"],
                type=hints[f.name],
                aliases=f.metadata.get("aliases", ()),
                required=f.default is attrs.NOTHING,
                meta=f.metadata,
            )
            for f in attrs.fields(cls)
            if "key" in f.metadata
        )
        _FIELDS[cls] = found
    return found


def check_number(value: int, path: Path, meta: Mapping[str, Any], problems: Problems) -> Any:
    """``value`` within the setting's ``minimum`` (raised to it with a warning when the
    setting clamps); INVALID with a problem recorded otherwise."""
    minimum = meta.get("minimum")
    if minimum is not None and value < minimum:
        if meta.get("clamp"):
            problems.warn(path, f"{value} is below the minimum {minimum}; using {minimum}")
            return minimum
        problems.add(path, f"must be at least {minimum}, found {value}")
        return INVALID
    return value


def _kind(node: Any) -> str:
    if isinstance(node, source.Mapping):
        return "a mapping"
    if isinstance(node, source.Sequence):
        return "a list"
    return f"{node!r}"


def _is_null(node: Any) -> bool:
    return (
        isinstance(node, str)
        and not source.is_quoted(node)
        and not source.is_block(node)
        and node in _NULLS
    )


class _Shaper:
    def __init__(self, problems: Problems, environ: Mapping[str, str]) -> None:
        self.problems = problems
        self.environ = environ

    # --- scalars ------------------------------------------------------------------------

    def expand_env(self, text: str, path: Path) -> str | None:
        """Replace ``${env.NAME}``; None (problem recorded) if a variable is unusable."""
        if "${env." not in text:
            return text
        ok = True

        def substitute(match: re.Match[str]) -> str:
            nonlocal ok
            name = match.group(1)
            value = self.environ.get(name)
            if value is None:
                self.problems.add(path, f"environment variable '{name}' is not set")
                ok = False
                return ""
            if any(c in value for c in "\n\r\0"):
                self.problems.add(
                    path,
                    f"environment variable '{name}' contains newlines or null bytes "
                    "which are not allowed in YAML substitution",
                )
                ok = False
                return ""
            return value

        expanded = _ENV_MACRO.sub(substitute, text)
        return expanded if ok else None

    def scalar_text(self, node: Any, path: Path, expected: str) -> str | None:
        if not isinstance(node, str):
            self.problems.add(path, f"expected {expected}, found {_kind(node)}")
            return None
        return self.expand_env(str(node), path)

    def shape(self, node: Any, tp: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if attrs.has(tp):
            return self.shape_class(node, tp, path)
        if tp is Any:
            return self.shape_any(node, path)
        if tp == MacroValue:
            return self.shape_macro_value(node, path)
        if origin in (types.UnionType, typing.Union):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            if _is_null(node):
                return None
            return self.shape(node, inner[0], path, meta)
        if origin in (Mapping, dict):
            return self.shape_mapping(node, typing.get_args(tp)[1], path, meta)
        if origin is tuple:
            return self.shape_sequence(node, typing.get_args(tp)[0], path, meta)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return self.shape_choice(node, [m.value for m in tp], path, meta)
        if tp is bool:
            return self.shape_bool(node, path)
        if tp is int:
            return self.shape_int(node, path, meta)
        if tp is str:
            return self.shape_str(node, path, meta)
        raise TypeError(f"unsupported config type {tp!r}")  # a bug in model.py

    def shape_str(self, node: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        text = self.scalar_text(node, path, "a string")
        if text is None:
            return INVALID
        choices = meta.get("choices")
        if choices is not None:
            return self.pick_choice(text, list(choices), path, meta)
        return text

    def shape_choice(
        self, node: Any, choices: list[str], path: Path, meta: Mapping[str, Any]
    ) -> Any:
        text = self.scalar_text(node, path, "one of " + ", ".join(choices))
        if text is None:
            return INVALID
        return self.pick_choice(text, choices, path, meta)

    def pick_choice(
        self, text: str, choices: list[str], path: Path, meta: Mapping[str, Any]
    ) -> Any:
        if meta.get("casefold"):
            folded = {c.lower(): c for c in choices}
            picked = folded.get(text.strip().lower())
        else:
            picked = text if text in choices else None
        if picked is not None:
            return picked
        shown = ", ".join(repr(c) if c == "" else c for c in choices)
        self.problems.add(path, f"{text!r} is not valid; expected one of: {shown}")
        return INVALID

    def shape_bool(self, node: Any, path: Path) -> Any:
        text = self.scalar_text(node, path, "true or false")
        if text is None:
            return INVALID
        whole = _WHOLE_MACRO.fullmatch(text)
        if whole and not source.is_quoted(node):
            return MacroRef(whole.group(1), bool, {})
        if not source.is_quoted(node):
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
        if text in _YAML11_BOOLS:
            self.problems.add(
                path, f"expected true or false, found {text!r} (YAML 1.1 booleans are not accepted)"
            )
        else:
            self.problems.add(path, f"expected true or false, found {text!r}")
        return INVALID

    def shape_int(self, node: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        text = self.scalar_text(node, path, "a whole number")
        if text is None:
            return INVALID
        whole = _WHOLE_MACRO.fullmatch(text)
        if whole and not source.is_quoted(node):
            return MacroRef(whole.group(1), int, meta)
        if source.is_quoted(node) or not _INT.fullmatch(text.strip()):
            self.problems.add(path, f"expected a whole number, found {text!r}")
            return INVALID
        return check_number(int(text), path, meta, self.problems)

    def shape_any(self, node: Any, path: Path) -> Any:
        if isinstance(node, source.Mapping):
            out: dict[str, Any] = {}
            for key, child in node.items():
                self.problems.positions[(*path, str(key))] = source.key_position(node, key)
                name = self.expand_env(str(key), (*path, str(key)))
                if name is not None:
                    shaped = self.shape_any(child, (*path, name))
                    if shaped is not INVALID:
                        out[name] = shaped
            return out
        if isinstance(node, source.Sequence):
            items = []
            for index, child in enumerate(node):
                self.problems.positions[(*path, index)] = source.item_position(node, index)
                shaped = self.shape_any(child, (*path, index))
                if shaped is not INVALID:
                    items.append(shaped)
            return items
        text = self.expand_env(str(node), path)
        if text is None:
            return INVALID
        return typed_value(text, quoted=source.is_quoted(node) or source.is_block(node))

    def shape_macro_value(self, node: Any, path: Path) -> Any:
        name = path[-1]
        if not isinstance(node, str):
            kind = "map" if isinstance(node, source.Mapping) else "list"
            self.problems.add(
                path,
                f"macro '{name}' has invalid type {kind}, must be a scalar type "
                "(string, int, float, or bool)",
            )
            return INVALID
        value = self.shape_any(node, path)
        if value is None:
            self.problems.add(
                path,
                f"macro '{name}' has invalid type null, must be a scalar type "
                "(string, int, float, or bool)",
            )
            return INVALID
        return value

    # --- collections --------------------------------------------------------------------

    def shape_sequence(self, node: Any, item: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        if not isinstance(node, source.Sequence):
            self.problems.add(path, f"expected a list, found {_kind(node)}")
            return INVALID
        items = []
        for index, child in enumerate(node):
            self.problems.positions[(*path, index)] = source.item_position(node, index)
            shaped = self.shape(child, item, (*path, index), meta)
            if shaped is not INVALID:
                items.append(shaped)
        return items

    def shape_mapping(self, node: Any, value: Any, path: Path, meta: Mapping[str, Any]) -> Any:
        if not isinstance(node, source.Mapping):
            self.problems.add(path, f"expected a mapping, found {_kind(node)}")
            return INVALID
        out: dict[str, Any] = {}
        for key, child in node.items():
            self.problems.positions[(*path, str(key))] = source.key_position(node, key)
            name = self.expand_env(str(key), (*path, str(key)))
            if name is None:
                continue
            if name in out:
                self.problems.add((*path, name), f"duplicate key {name!r}")
                continue
            shaped = self.shape(child, value, (*path, name), meta)
            if shaped is not INVALID:
                out[name] = shaped
            elif attrs.has(value):
                out[name] = {}  # keep the entry so cross-references don't cascade
        return out

    def shape_class(self, node: Any, cls: type, path: Path) -> Any:
        if not isinstance(node, source.Mapping):
            message = known.NOT_A_MAPPING.get(cls.__name__)
            self.problems.add(
                path, message or f"expected a mapping of settings, found {_kind(node)}"
            )
            return INVALID
        fields = _fields_of(cls)
        by_key = {f.key: f for f in fields}
        by_key.update({alias: f for f in fields for alias in f.aliases})
        out: dict[str, Any] = {}
        seen: dict[str, str] = {}
        invalid: set[str] = set()
        for raw_key, child in node.items():
            key = str(raw_key)
            field = by_key.get(key)
            if field is None:
                self.problems.positions[(*path, key)] = source.key_position(node, raw_key)
                # A key that only holds an anchor (``x-base: &base``) is a template.
                if source.anchor_of(child) is None:
                    message = known.unknown_key_message(cls.__name__, key, [f.key for f in fields])
                    self.problems.warn((*path, key), message)
                continue
            here = (*path, field.key)
            self.problems.positions[here] = source.key_position(node, raw_key)
            if field.key in seen:
                self.problems.add(
                    here, f"{key!r} and {seen[field.key]!r} are the same setting; keep one"
                )
                continue
            seen[field.key] = key
            if _is_null(child):
                continue  # an empty value means "use the default"
            value = self.shape(child, field.type, here, field.meta)
            if value is INVALID:
                invalid.add(field.key)
            else:
                out[field.key] = value
        for field in fields:
            if not field.required:
                continue
            if field.key not in seen:
                self.problems.add(path, f"missing required setting '{field.key}'")
            elif field.key not in out and field.key not in invalid:
                self.problems.add((*path, field.key), f"'{field.key}' must not be empty")
        return out
