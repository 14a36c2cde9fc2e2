"""The JSON schema of the config file, derived from ``model.py``.

Editors use the committed ``config-schema.json`` (yaml-language-server). It is generated
from the same classes the loader walks, and ``tests/test_schema.py`` checks both that the
committed file is current and that loader and schema agree on a corpus of files.

What the schema can say, it says like the loader: unknown keys are errors, integers and
booleans are typed, an empty value (null) means "use the default", a whole-value
``${env.NAME}`` or ``${macro}`` may stand in for a number or a boolean. What it cannot say (aliases
unique, group members exist, macros resolve) only the loader checks.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import attrs

from swapd.config.model import Config, MacroValue

__all__ = ["SCHEMA_ID", "config_schema", "render_reference", "render_schema"]

SCHEMA_ID = "https://swapd.invalid/config-schema.json"
_ENV_ONLY = {
    "type": "string",
    "pattern": r"^\$\{(env\.[A-Za-z_][A-Za-z0-9_]*|[a-zA-Z0-9_-]+)\}$",
}
_SCALAR = {"type": ["string", "number", "boolean"]}


def config_schema() -> dict[str, Any]:
    """The schema as a JSON-ready dict."""
    definitions: dict[str, Any] = {}
    root = _class_schema(Config, definitions)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "swapd configuration",
        "description": "swapd config file (a superset of llama-swap's config.yaml).",
        **root,
        "definitions": dict(sorted(definitions.items())),
    }


def render_schema() -> str:
    """The schema as the text committed in ``config-schema.json``."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def _class_schema(cls: type, definitions: dict[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        meta = field.metadata
        if "key" not in meta:
            continue
        prop = _type_schema(hints[field.name], meta, definitions)
        prop = {"description": meta["doc"], **prop}
        if field.default is attrs.NOTHING:
            required.append(meta["key"])
        else:
            default = _default_of(field)
            if default is not None:
                prop["default"] = default
            prop = _nullable(prop)
        properties[meta["key"]] = prop
        for alias in meta.get("aliases", ()):
            properties[alias] = {**prop, "description": f"Legacy spelling of {meta['key']}."}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _default_of(field: attrs.Attribute[Any]) -> Any:
    default = field.default
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        value = typing.cast("Any", default).factory()
        if attrs.has(type(value)):
            return None
        return list(value) if isinstance(value, tuple) else value
    if isinstance(default, enum.Enum):
        return default.value
    return default


def _nullable(prop: dict[str, Any]) -> dict[str, Any]:
    # YAML `key:` with no value is null, which the loader reads as "use the default".
    body = dict(prop)
    out = {"description": body.pop("description")}
    if "default" in body:
        out["default"] = body.pop("default")
    alternatives = body["anyOf"] if list(body) == ["anyOf"] else [body]
    out["anyOf"] = [*alternatives, {"type": "null"}]
    return out


def _type_schema(tp: Any, meta: Mapping[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if attrs.has(tp):
        name = tp.__name__
        if name not in definitions:
            definitions[name] = {}  # placeholder against recursion
            definitions[name] = _class_schema(tp, definitions)
        return {"$ref": f"#/definitions/{name}"}
    if tp is Any:
        return {}
    if tp == MacroValue:
        return dict(_SCALAR)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_schema(inner[0], meta, definitions)
    if origin in (Mapping, dict):
        return {
            "type": "object",
            "additionalProperties": _type_schema(typing.get_args(tp)[1], meta, definitions),
        }
    if origin is tuple:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0], meta, definitions)}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _choices([m.value for m in tp], meta)
    if tp is bool:
        return {"anyOf": [{"type": "boolean"}, _ENV_ONLY]}
    if tp is int:
        number: dict[str, Any] = {"type": "integer"}
        if meta.get("minimum") is not None and not meta.get("clamp"):
            number["minimum"] = meta["minimum"]
        return {"anyOf": [number, _ENV_ONLY]}
    if tp is str:
        if meta.get("choices") is not None:
            return _choices(list(meta["choices"]), meta)
        return dict(_SCALAR)  # plain numbers are read as their text
    raise TypeError(f"no JSON schema for {tp!r}")


def _choices(values: list[str], meta: Mapping[str, Any]) -> dict[str, Any]:
    if meta.get("casefold"):
        pattern = "|".join(
            "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else _escape(c) for c in v)
            for v in values
        )
        return {"type": "string", "pattern": f"^\\s*({pattern})\\s*$", "examples": values}
    return {"type": "string", "enum": values}


def _escape(char: str) -> str:
    return "\\" + char if char in r".^$*+?()[]{}|\/" else char


_SECTIONS = (
    ("Top level", "Config"),
    ("`models.<id>`", "ModelConfig"),
    ("`models.<id>.sleepEndpoints[]` / `wakeEndpoints[]`", "Endpoint"),
    ("`models.<id>.filters` / `peers.<id>.filters`", "Filters"),
    ("`groups.<id>` / `routing.router.settings.groups.<id>`", "GroupConfig"),
    ("`routing` (see [routing.md](routing.md))", "RoutingConfig"),
    ("`routing.router`", "RouterConfig"),
    ("`routing.router.settings`", "RouterSettings"),
    ("`matrix` / `routing.router.settings.matrix`", "MatrixConfig"),
    ("`routing.scheduler`", "SchedulerConfig"),
    ("`routing.scheduler.settings`", "SchedulerSettings"),
    ("`routing.scheduler.settings.fifo`", "FifoSettings"),
    ("`peers.<id>`", "PeerConfig"),
    ("`hooks`", "Hooks"),
    ("`hooks.onStartup`", "StartupHooks"),
    ("`memory`", "MemoryConfig"),
    ("`store`", "StoreConfig"),
    ("`models.<id>.timeouts` / `peers.<id>.timeouts`", "Timeouts"),
    ("`models.<id>.capabilities`", "Capabilities"),
    ("`models.<id>.compat`", "Compat"),
    ("`upstream`", "Upstream"),
    ("`profiles.<name>`", "Profile"),
    ("`selectors.<id>`", "Selector"),
    ("`selectors.<id>.settings`", "SelectorSettings"),
    ("`performance`", "Performance"),
    ("`ui`", "Ui"),
    ("`ui.activity`", "UiActivity"),
    ("`kvCache` (see [kvcache.md](kvcache.md))", "KvCacheConfig"),
    ("`models.<id>.kvCache`", "KvCacheModelConfig"),
    ("`models.<id>.warm`", "WarmConfig"),
)


def render_reference() -> str:
    """``docs/configuration.md``: every key, its type, default and legacy spellings."""
    from swapd.config import model

    out = [
        "# Configuration reference",
        "",
        "Generated from `swapd/config/model.py` by `swapd schema --reference`; do not edit.",
        "Macros (`${name}`, `${env.NAME}`, `${MODEL_ID}`, `${PORT}`, `${PID}`) are described in",
        "the README. Legacy spellings are accepted so llama-swap files load unchanged; what",
        "swapd does with each llama-swap key is in [compatibility.md](compatibility.md).",
        "Groups, the matrix and priorities are explained in [routing.md](routing.md).",
        "",
    ]
    for title, class_name in _SECTIONS:
        cls = getattr(model, class_name)
        hints = typing.get_type_hints(cls)
        out += [
            f"## {title}",
            "",
            "| key | type | default | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for field in attrs.fields(cls):
            meta = field.metadata
            if "key" not in meta:
                continue
            key = f"`{meta['key']}`"
            if meta.get("aliases"):
                key += " (also " + ", ".join(f"`{a}`" for a in meta["aliases"]) + ")"
            default = "required" if field.default is attrs.NOTHING else _default_text(field)
            doc = meta["doc"].replace("|", "\\|")
            out.append(f"| {key} | {_type_text(hints[field.name])} | {default} | {doc} |")
        out.append("")
    return "\n".join(out)


def _default_text(field: attrs.Attribute[Any]) -> str:
    value = _default_of(field)
    if value is None:
        return "-"
    return f"`{json.dumps(value)}`"


def _type_text(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if attrs.has(tp):
        return "mapping"
    if tp is Any:
        return "any"
    if tp == MacroValue:
        return "scalar"
    if origin in (types.UnionType, typing.Union):
        return _type_text(next(a for a in typing.get_args(tp) if a is not type(None)))
    if origin in (Mapping, dict):
        return "mapping"
    if origin is tuple:
        return "list"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(m.value for m in tp)
    return {bool: "bool", int: "integer", str: "string"}[tp]
