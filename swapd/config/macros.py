"""``${name}`` macros, ``${MODEL_ID}``, ``${PORT}`` and ``${PID}``, on shaped config data.

Works on the plain dicts ``shape.py`` produces (keys are YAML spellings), in place, and
reports problems through ``Problems`` so every message carries its line. ``${env.NAME}``
was already expanded while shaping.

Theory of operation (llama-swap's rules, reference section 2.6):

- A model sees one ordered macro list: ``MODEL_ID`` first, then the global macros in file
  order; a model macro with a global's name replaces it *in place*; other model macros
  are appended in file order.
- The list is applied from last to first. A macro's text may therefore use macros that
  come *earlier* in the list (they are applied afterwards), which gives macro-in-macro
  chains; a reference to a later macro is left over and reported as unknown.
- Values are rendered like Go's ``%v`` (``gofmt.py``). Where any value is allowed
  (``metadata``, ``setParams``) a string that is exactly ``${name}`` takes the macro's
  typed value; a string that merely contains it is interpolated.
- ``${KV_CACHE_DIR}`` is the saved-slot directory (``kvCache.dir``, docs/kvcache.md),
  placed next to ``MODEL_ID`` so global macros may use it.
- ``${PORT}`` comes last: a model whose expanded ``cmd`` uses it gets the next free number
  from ``startPort``, models taken in sorted-ID order. ``${PID}`` is only meaningful in
  ``cmdStop`` and is replaced when the model is stopped.

llama-swap v243 rules (delta spec 2.1): macros reach every value of a model (``env``,
``aliases``, names, filters including ``setParamsByID`` keys, and a number or boolean
written as exactly ``${name}``, which takes the macro's type); global macros reach every
value outside ``models``; ``PID`` is reserved; there is no length limit. Every leftover
is reported with its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

from swapd.config import cmdline
from swapd.config.gofmt import render_scalar
from swapd.config.shape import INVALID, MacroRef, Path, Problems, check_number

__all__ = [
    "RESERVED",
    "check_definitions",
    "expand_models",
    "expand_peers",
    "resolve_kv_cache_dir",
    "resolve_typed",
]

RESERVED = ("PORT", "MODEL_ID", "PID", "KV_CACHE_DIR")
_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_REFERENCE = re.compile(r"\$\{([a-zA-Z0-9_-]+)\}")
_MAX_PORT = 65535

# Text settings of a model that macros expand in, as paths inside the model's mapping.
_MODEL_TEXT = (
    ("cmd",),
    ("cmdStop",),
    ("proxy",),
    ("checkEndpoint",),
    ("filters", "stripParams"),
    ("name",),
    ("description",),
    ("useModelName",),
)
# Settings holding any value, expanded with types kept.
_MODEL_TYPED = (("metadata",), ("filters", "setParams"), ("filters", "setParamsByID"))
_TYPED_SLOTS = frozenset(_MODEL_TYPED)
_PEER_TEXT = (("apiKey",), ("proxy",), ("filters", "stripParams"))
_PEER_TYPED = (("filters", "setParams"), ("filters", "setParamsByID"))
_BY_ID = ("filters", "setParamsByID")


def check_definitions(macros: Mapping[str, Any], path: Path, problems: Problems) -> None:
    """Report bad macro names and values (types were checked while shaping)."""
    for name, value in macros.items():
        here = (*path, name)
        if len(name) >= 64:
            problems.add(here, f"macro name '{name}' exceeds maximum length of 63 characters")
        elif not _NAME.fullmatch(name):
            problems.add(
                here,
                f"macro name '{name}' contains invalid characters, "
                "must match pattern ^[a-zA-Z0-9_-]+$",
            )
        elif name in RESERVED:
            problems.add(here, f"macro name '{name}' is reserved")
        # No length limit: llama-swap dropped its 1024-character one in v209.
        if isinstance(value, str) and "${" + name + "}" in value:
            problems.add(here, f"macro '{name}' contains self-reference")


def resolve_kv_cache_dir(data: dict[str, Any], environ: Mapping[str, str]) -> str:
    """The saved-slot directory as an absolute path, written back into ``kvCache.dir``.

    Empty means ``$XDG_CACHE_HOME/swapd/kvcache`` (``~/.cache/swapd/kvcache``); a leading
    ``~`` is ``$HOME``. ``${KV_CACHE_DIR}`` in a model's ``cmd`` becomes this text
    (docs/kvcache.md).
    """
    section = data.setdefault("kvCache", {})
    text = str(section.get("dir", "")).strip()
    if not text:
        text = os.path.join(environ.get("XDG_CACHE_HOME") or "~/.cache", "swapd", "kvcache")
    if text == "~" or text.startswith("~/"):
        text = environ.get("HOME", os.path.expanduser("~")) + text[1:]
    resolved = os.path.abspath(text)
    section["dir"] = resolved
    return resolved


def expand_models(
    data: dict[str, Any],
    defaults: Mapping[str, str],
    problems: Problems,
    *,
    keep_ports: Mapping[str, int] | None = None,
) -> None:
    """Expand macros in every model and assign ports; results are written into ``data``.

    ``defaults`` holds the model defaults of text settings macros may appear in
    (``proxy: http://localhost:${PORT}``), applied first so they expand like written text.
    ``keep_ports`` (a reload) gives models that still use ``${PORT}`` the port they had, so
    adding a model does not renumber, and so restart, the models already running; the
    others take the free numbers from ``startPort`` up.
    """
    global_macros: Mapping[str, Any] = data.get("macros", {})
    models: dict[str, Any] = data.get("models", {})
    kv_cache_dir = data.get("kvCache", {}).get("dir") or resolve_kv_cache_dir(data, os.environ)
    wants_port: list[str] = []
    for model_id in sorted(models):
        model = models[model_id]
        here: Path = ("models", model_id)
        if problems.any_under(here):
            continue  # already wrong; expanding would only add echoes of the same problem
        for key, value in defaults.items():
            model.setdefault(key, value)
        for key in ("cmd", "cmdStop"):
            if key in model:
                model[key] = cmdline.strip_comment_lines(model[key])
        own: Mapping[str, Any] = model.get("macros", {})
        ordered: dict[str, Any] = {
            "MODEL_ID": model_id,
            "KV_CACHE_DIR": kv_cache_dir,
            **global_macros,
        }
        ordered.update(own)  # an existing name keeps its place: override in place
        for name, value in reversed(list(ordered.items())):
            _apply(model, _model_slots(model), name, value)
            _apply_to_keys(model, name, value)
        for key in list(model):
            if key != "macros":
                resolved = _resolve_refs(model[key], ordered, (*here, key), problems)
                if resolved is INVALID:
                    del model[key]
                else:
                    model[key] = resolved
        if "${PORT}" in model.get("cmd", ""):
            wants_port.append(model_id)
        elif "${PORT}" in model.get("proxy", ""):
            problems.add(
                (*here, "proxy"),
                "proxy uses ${PORT} but cmd does not - ${PORT} is only available when used in cmd",
            )
            continue
        else:
            _report_leftovers(model, model_id, here, problems)

    kept = {m: keep_ports[m] for m in wants_port if keep_ports and m in keep_ports}
    taken = set(kept.values())
    next_port = data.get("startPort", 5800)
    for model_id in wants_port:
        model = models[model_id]
        here = ("models", model_id)
        port = kept.get(model_id)
        if port is None:
            while next_port in taken:
                next_port += 1
            if next_port > _MAX_PORT:
                problems.add(
                    (*here, "cmd"), f"no port left to assign (startPort + models > {_MAX_PORT})"
                )
            port = next_port
            next_port += 1
        model["port"] = port
        slots = [s for s in _model_slots(model) if s[0] != "checkEndpoint"]
        _apply(model, slots, "PORT", port)
        _apply_to_keys(model, "PORT", port)
        _report_leftovers(model, model_id, here, problems)


def resolve_typed(data: dict[str, Any], problems: Problems) -> None:
    """Number and boolean settings outside ``models`` written as ``${name}`` take the
    global macro's typed value (``startPort: ${base}``); then any ``${name}`` left in a
    number or boolean anywhere is reported (a model's are resolved by ``expand_models``)."""
    global_macros: Mapping[str, Any] = data.get("macros", {})
    for key in list(data):
        if key not in ("models", "macros", "peers"):  # peers: expand_peers
            data[key] = _expand_text(data[key], global_macros, (key,), problems)
        if key not in ("models", "macros"):
            resolved = _resolve_refs(data[key], global_macros, (key,), problems)
            if resolved is INVALID:
                del data[key]  # reported; the default applies to the later stages
            else:
                data[key] = resolved


def _expand_text(node: Any, scope: Mapping[str, Any], path: Path, problems: Problems) -> Any:
    """Global macros in the text values outside ``models`` (llama-swap v243: every
    top-level key); a leftover ``${name}`` is an unknown macro at its path."""
    if isinstance(node, str):
        if "${" not in node:
            return node
        for name, value in reversed(list(scope.items())):
            node = node.replace("${" + name + "}", render_scalar(value))
        for match in _REFERENCE.finditer(node):
            problems.add(path, f"unknown macro '${{{match.group(1)}}}'")
        return node
    if isinstance(node, dict):
        return {k: _expand_text(v, scope, (*path, k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_text(v, scope, (*path, i), problems) for i, v in enumerate(node)]
    return node


def _resolve_refs(node: Any, scope: Mapping[str, Any], path: Path, problems: Problems) -> Any:
    """``node`` with every ``MacroRef`` replaced by its macro's value, when that value has
    the setting's type; problems recorded (and the entry dropped: the default applies)."""
    if isinstance(node, MacroRef):
        return _typed(node, scope, path, problems)
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            resolved = _resolve_refs(value, scope, (*path, key), problems)
            if resolved is not INVALID:
                out[key] = resolved
        return out
    if isinstance(node, list):
        items = [_resolve_refs(v, scope, (*path, i), problems) for i, v in enumerate(node)]
        return [item for item in items if item is not INVALID]
    return node


def _typed(ref: MacroRef, scope: Mapping[str, Any], path: Path, problems: Problems) -> Any:
    if ref.name not in scope:
        problems.add(path, f"unknown macro '${{{ref.name}}}'")
        return INVALID
    value = scope[ref.name]
    if ref.kind is bool:
        if isinstance(value, bool):
            return value
        problems.add(path, f"macro '${{{ref.name}}}' is {value!r}; expected true or false")
        return INVALID
    if isinstance(value, int) and not isinstance(value, bool):
        return check_number(value, path, ref.meta, problems)
    problems.add(path, f"macro '${{{ref.name}}}' is {value!r}; expected a whole number")
    return INVALID


def expand_peers(data: dict[str, Any], problems: Problems) -> None:
    """Expand global macros (no MODEL_ID, no model macros) in peers' apiKey and filters."""
    global_macros: Mapping[str, Any] = data.get("macros", {})
    for peer_id, peer in data.get("peers", {}).items():
        slots = list(_slots(peer, _PEER_TEXT, _PEER_TYPED))
        for name, value in reversed(list(global_macros.items())):
            _apply(peer, slots, name, value)
        for slot in slots:
            for where, leftover in _leftovers(_get(peer, slot), slot):
                problems.add(("peers", peer_id, *where), f"unknown macro '${{{leftover}}}'")


# --- slots: where in a mapping macros expand ---------------------------------------------

Slot = tuple[str | int, ...]


def _model_slots(model: Mapping[str, Any]) -> list[Slot]:
    slots = list(_slots(model, _MODEL_TEXT, _MODEL_TYPED))
    slots.extend(("env", i) for i in range(len(model.get("env", ()))))
    slots.extend(("aliases", i) for i in range(len(model.get("aliases", ()))))
    for key in ("sleepEndpoints", "wakeEndpoints"):
        for i, step in enumerate(model.get(key, ())):
            slots.extend((key, i, part) for part in ("endpoint", "body") if part in step)
    return slots


def _slots(
    mapping: Mapping[str, Any], text: tuple[Slot, ...], typed: tuple[Slot, ...]
) -> Iterator[Slot]:
    for slot in (*text, *typed):
        if _get(mapping, slot) is not None:
            yield slot


def _get(mapping: Any, slot: Slot) -> Any:
    node = mapping
    for part in slot:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _set(mapping: Any, slot: Slot, value: Any) -> None:
    node = mapping
    for part in slot[:-1]:
        node = node[part]
    node[slot[-1]] = value


def _apply(mapping: Any, slots: list[Slot], name: str, value: Any) -> None:
    token = "${" + name + "}"
    text = render_scalar(value)
    for slot in slots:
        current = _get(mapping, slot)
        # Only settings that hold any value keep the macro's type; text stays text.
        typed = value if _is_typed(slot) else text
        _set(mapping, slot, _substitute(current, token, text, typed))


def _is_typed(slot: Slot) -> bool:
    return slot[:1] in _TYPED_SLOTS or slot[:2] in _TYPED_SLOTS


def _apply_to_keys(model: dict[str, Any], name: str, value: Any) -> None:
    """``filters.setParamsByID`` keys are the one place mapping keys are expanded (they
    name what a client asks for, e.g. ``${MODEL_ID}:high``). Two keys that expand to the
    same text are kept apart here and reported with the leftovers."""
    by_id = _get(model, _BY_ID)
    if not isinstance(by_id, dict):
        return
    token = "${" + name + "}"
    if not any(token in key for key in by_id):
        return
    text = render_scalar(value)
    expanded: dict[str, Any] = {}
    for key, params in by_id.items():
        new = key.replace(token, text)
        if new in expanded:
            collisions = model.setdefault("_by_id_collisions", [])
            collisions.append((key, new))
            continue
        expanded[new] = params
    model["filters"]["setParamsByID"] = expanded


def _substitute(node: Any, token: str, text: str, typed: Any) -> Any:
    if isinstance(node, str):
        if node == token:
            return typed
        return node.replace(token, text) if token in node else node
    if isinstance(node, dict):
        return {k: _substitute(v, token, text, typed) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, token, text, typed) for v in node]
    return node


def _strings(node: Any, path: Slot) -> Iterator[tuple[Slot, str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*path, index))


def _leftovers(node: Any, slot: Slot) -> Iterator[tuple[Slot, str]]:
    """(where, name) of every ``${name}`` still present below ``slot``, once per place."""
    for where, text in _strings(node, slot):
        seen: set[str] = set()
        for match in _REFERENCE.finditer(text):
            if match.group(1) not in seen:
                seen.add(match.group(1))
                yield where, match.group(1)


def _report_leftovers(model: dict[str, Any], model_id: str, here: Path, problems: Problems) -> None:
    for original, value in model.pop("_by_id_collisions", ()):
        problems.add(
            (*here, *_BY_ID),
            f'model {model_id} filters.setParamsByID: keys "{original}" and another key '
            f'resolve to the same value "{value}"',
        )
    for key in _get(model, _BY_ID) or ():
        for match in _REFERENCE.finditer(key):
            problems.add(
                (*here, *_BY_ID),
                f"unknown macro '${{{match.group(1)}}}' found in model {model_id} "
                "filters.setParamsByID key",
            )
    for slot in _model_slots(model):
        field = ".".join(str(p) for p in slot if not isinstance(p, int))
        for where, name in _leftovers(_get(model, slot), slot):
            message = _leftover_message(name, slot, model_id, field)
            if message:
                problems.add((*here, *where), message)


def _leftover_message(name: str, slot: Slot, model_id: str, field: str) -> str | None:
    if name == "PID":
        if slot == ("cmdStop",):
            return None  # replaced when the model is stopped
        return "${PID} is only available in cmdStop"
    if _is_typed(slot):
        return f"unknown macro '${{{name}}}'"
    if slot[0] in ("aliases", "name", "description", "useModelName", "env"):
        return f"model {model_id} {field}: unknown macro '${{{name}}}'"
    if name in ("PORT", "MODEL_ID"):
        return f"macro '${{{name}}}' should have been substituted in {model_id}.{field}"
    return f"unknown macro '${{{name}}}' found in {model_id}.{field}"
