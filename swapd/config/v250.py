"""Checks and derived values for the settings llama-swap added after v193 (delta spec §2).

Runs inside ``validate.check_and_derive`` on shaped, macro-expanded data (YAML spellings),
so every problem has its line. It resolves what later layers should not re-derive:

- a model's ``ttl`` (-1 inherits ``globalTTL``) and ``unloadTimeout`` (0 inherits the
  global value; 0 there too means the daemon's stop grace, 10 s like llama-swap's
  default), so a loaded config holds the effective numbers;
- ``filters.setParamsByID`` keys become aliases of their model;
- the reserved model ``comfyui_auto`` gets ``concurrencyLimit`` >= 50 and
  ``compat.ignoreWebsockets`` (it backs ``/comfyui/``);
- a peer's ``timeouts.responseHeader`` defaults to 60 (llama-swap's peer default);
- ``upstream.ignorePaths`` gets llama-swap's default pattern when empty, and each pattern
  must compile;
- ``profiles`` pins and ``selectors`` targets must name something routable (the
  selection itself is ``swapd.core.selectors``);
- ``performance.every`` must be a Go duration of at least 5 s (``observe/performance.py``
  samples at that period);
- ``ui`` is accepted and reported as not active yet (``store`` is the activity store,
  ``observe/store.py``).
"""

from __future__ import annotations

import re
from typing import Any

from swapd.config.shape import Path, Problems

__all__ = ["DEFAULT_IGNORE_PATHS", "MIN_EVERY", "check_root", "parse_every", "resolve_models"]

#: llama-swap's default ``upstream.ignorePaths``: static assets never load a model.
DEFAULT_IGNORE_PATHS = (r".*\.(js|json|css|png|gif|jpg|jpeg|ico|txt)$",)
_NOT_ACTIVE = ("ui",)
MIN_EVERY = 5.0  # seconds; llama-swap refuses less
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_every(text: str) -> float:
    """A Go duration (``5s``, ``1m30s``, ``1.5m``) in seconds; ValueError when malformed."""
    parts = re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def resolve_models(data: dict[str, Any], problems: Problems) -> None:
    """Resolve per-model TTL and unloadTimeout, turn setParamsByID keys into aliases,
    default peer response-header timeouts."""
    global_ttl = data.get("globalTTL", 0)
    global_unload = data.get("unloadTimeout", 0)
    models: dict[str, Any] = data.get("models", {})
    explicit = {a: m for m, model in models.items() for a in model.get("aliases", ())}
    for model_id in sorted(models):
        model = models[model_id]
        here: Path = ("models", model_id)
        ttl = model.get("ttl", -1)
        if not isinstance(ttl, int):
            pass  # a ${macro} of a model macros.py skipped as broken: reported already
        elif ttl == -1:
            model["ttl"] = global_ttl
        elif ttl < 0:
            problems.add((*here, "ttl"), f"model {model_id}: invalid TTL value {ttl}")
        unload = model.get("unloadTimeout", 0)
        if not isinstance(unload, int):
            pass
        elif unload < 0:
            problems.add(
                (*here, "unloadTimeout"), f"model {model_id}: invalid unloadTimeout value {unload}"
            )
        elif unload == 0:
            model["unloadTimeout"] = global_unload
        _by_id_aliases(model_id, model, models, explicit, problems)
    _reserve_comfyui(models.get("comfyui_auto"))
    for peer in data.get("peers", {}).values():
        if "timeouts" in peer:
            peer["timeouts"].setdefault("responseHeader", 60)


def _reserve_comfyui(model: dict[str, Any] | None) -> None:
    """The reserved model behind ``/comfyui/``: at least 50 concurrent requests (a UI
    fetches many assets at once) and its WebSockets never block a swap."""
    if model is None:
        return
    limit = model.get("concurrencyLimit", 0)
    if isinstance(limit, int) and limit < 50:
        model["concurrencyLimit"] = 50
    if isinstance(model.setdefault("compat", {}), dict):
        model["compat"]["ignoreWebsockets"] = True


def _by_id_aliases(
    model_id: str,
    model: dict[str, Any],
    models: dict[str, Any],
    explicit: dict[str, str],
    problems: Problems,
) -> None:
    by_id: dict[str, Any] = model.get("filters", {}).get("setParamsByID", {})
    here: Path = ("models", model_id, "filters", "setParamsByID")
    aliases: list[str] = list(model.get("aliases", ()))
    for key in sorted(by_id):
        if key == model_id or key in aliases:
            continue
        if key in models:
            problems.add(
                (*here, key),
                f"model {model_id} filters.setParamsByID: key '{key}' conflicts with an "
                "existing model ID",
            )
        elif key in explicit:
            problems.add(
                (*here, key),
                f"duplicate alias '{key}' in model {model_id} filters.setParamsByID, "
                f"already used by model {explicit[key]}",
            )
        else:
            aliases.append(key)
            explicit[key] = model_id
    if len(aliases) != len(model.get("aliases", ())):
        model["aliases"] = aliases


def check_root(data: dict[str, Any], alias_of: dict[str, str], problems: Problems) -> None:
    """Check the v250 root settings against the models (after aliases are known)."""
    _check_ignore_paths(data, problems)
    _check_performance(data, problems)
    for key in _NOT_ACTIVE:
        if key in data:
            problems.warn((key,), f"'{key}' is accepted, not active yet in swapd")
    models: dict[str, Any] = data.get("models", {})
    peer_names = {
        name for peer in data.get("peers", {}).values() for name in peer.get("models", ())
    }
    peer_fqns = {
        f"{peer_id}/{name}"
        for peer_id, peer in data.get("peers", {}).items()
        for name in peer.get("models", ())
    }
    for fqn in sorted(peer_fqns & (set(models) | set(alias_of))):
        kind = "model ID" if fqn in models else "model alias"
        where: Path = ("models", fqn) if fqn in models else ("models", alias_of[fqn])
        problems.add(where, f'{kind} "{fqn}" conflicts with fully qualified peer model name')
    selectors: dict[str, Any] = data.get("selectors", {})
    routable = set(models) | set(alias_of) | peer_names | peer_fqns
    for selector_id, selector in selectors.items():
        _check_selector(selector_id, selector, models, alias_of, routable, selectors, problems)
        if selector.get("strategy") == "spillover" and not problems.any_under(
            ("selectors", selector_id)
        ):
            _check_spillover(selector_id, selector, data, alias_of, problems)
    for profile_id, profile in data.get("profiles", {}).items():
        _check_profile(profile_id, profile, routable | set(selectors), problems)


def _check_ignore_paths(data: dict[str, Any], problems: Problems) -> None:
    upstream = data.setdefault("upstream", {})
    patterns = upstream.get("ignorePaths") or list(DEFAULT_IGNORE_PATHS)
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.add(
                ("upstream", "ignorePaths", index),
                f'upstream.ignorePaths: invalid regular expression "{pattern}": {exc}',
            )
    upstream["ignorePaths"] = patterns


def _check_selector(
    selector_id: str,
    selector: dict[str, Any],
    models: dict[str, Any],
    alias_of: dict[str, str],
    routable: set[str],
    selectors: dict[str, Any],
    problems: Problems,
) -> None:
    here: Path = ("selectors", selector_id)
    if selector_id in models:
        problems.add(here, f'selectors.{selector_id}: name conflicts with model ID "{selector_id}"')
    elif selector_id in alias_of:
        problems.add(
            here, f'selectors.{selector_id}: name conflicts with model alias "{selector_id}"'
        )
    elif selector_id in routable:
        problems.add(
            here, f'selectors.{selector_id}: name conflicts with peer model "{selector_id}"'
        )
    if "strategy" not in selector:
        return  # reported while shaping (a required setting)
    targets = selector.get("targets", [])
    if not targets:
        problems.add(
            (*here, "targets"), f"selectors.{selector_id}.targets must contain at least one entry"
        )
    for index, target in enumerate(targets):
        where = (*here, "targets", index)
        if target in routable:  # a model, alias or peer name wins over a selector ID
            if selector["strategy"] == "warm" and target not in models and target not in alias_of:
                problems.add(
                    where,
                    f'selectors.{selector_id}.targets[{index}] "{target}" must resolve to a '
                    'local model for strategy "warm"',
                )
        elif target in selectors:
            problems.add(
                where,
                f"selectors.{selector_id}.targets[{index}] references selector "
                f'"{target}": selector chaining is not supported',
            )
        else:
            problems.add(
                where,
                f'selectors.{selector_id}.targets[{index}] references unknown model "{target}"',
            )


def _check_spillover(
    selector_id: str,
    selector: dict[str, Any],
    data: dict[str, Any],
    alias_of: dict[str, str],
    problems: Problems,
) -> None:
    """Spillover targets run side by side: no target twice, and the local ones in one
    group that does not swap (llama-swap v241)."""
    here: Path = ("selectors", selector_id, "targets")
    models: dict[str, Any] = data.get("models", {})
    resolved = [alias_of.get(t, t) for t in selector.get("targets", [])]
    if len(set(resolved)) != len(resolved):
        problems.add(here, f"selectors.{selector_id}.targets resolve to the same model twice")
        return
    local = [m for m in resolved if m in models]
    groups = {
        group_id
        for group_id, group in data.get("groups", {}).items()
        for member in group.get("members", ())
        if member in local
    }
    if len(local) > 1 and (
        len(groups) != 1 or data["groups"][next(iter(groups))].get("swap", True)
    ):
        problems.add(
            here,
            f"selectors.{selector_id}.targets must all be in one group with swap: false "
            "(spillover runs them side by side)",
        )


def _check_profile(
    profile_id: str, profile: dict[str, Any], routable: set[str], problems: Problems
) -> None:
    here: Path = ("profiles", profile_id)
    if problems.any_under(here):
        return  # e.g. the legacy list form: one clear message is enough
    pins: dict[str, Any] = profile.get("pins", {})
    if not profile_id.strip():
        problems.add(here, "profiles: profile names cannot be empty")
    if not pins:
        problems.add((*here, "pins"), f"profiles.{profile_id}.pins must contain at least one entry")
    for pin, target in pins.items():
        where = (*here, "pins", pin)
        if not pin.strip():
            problems.add(where, f"profiles.{profile_id}.pins: pin names cannot be empty")
        elif target and target not in routable:
            problems.add(
                where, f'profiles.{profile_id}.pins.{pin} references unknown model "{target}"'
            )


def _check_performance(data: dict[str, Any], problems: Problems) -> None:
    every = data.get("performance", {}).get("every")
    if not isinstance(every, str):
        return
    try:
        seconds = parse_every(every)
    except ValueError:
        problems.add(("performance", "every"), f"performance: invalid duration {every!r}")
        return
    if seconds < MIN_EVERY:
        problems.add(
            ("performance", "every"), f"performance: every must be at least 5s, got {every}"
        )
