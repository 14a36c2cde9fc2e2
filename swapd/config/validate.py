"""Checks that span several settings, on shaped and macro-expanded data.

Runs after ``macros.py`` on the same plain dicts (YAML spellings), so every problem is
reported with its line. It also derives what later layers need: each model's ``argv``
and ``stop_argv``, the normalised preload list, and (in ``routing.py``) the effective groups
with the implicit ``(default)`` group and the active matrix.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from swapd.config import cmdline, routing, v250
from swapd.config.keys_check import check_keys
from swapd.config.memory_check import check_kv_cache_budget, check_memory
from swapd.config.shape import Path, Problems

__all__ = ["check_and_derive", "url_problem"]


def check_and_derive(data: dict[str, Any], problems: Problems) -> None:
    """Validate cross-field rules and add derived values to ``data`` in place."""
    _check_api_keys(data, problems)
    check_keys(data, problems)
    models: dict[str, Any] = data.get("models", {})
    for model_id, model in models.items():
        if not problems.any_under(("models", model_id)):
            _check_model(model_id, model, problems)
        # Every loaded model carries a concrete value; unset inherits the global one.
        model.setdefault("sendLoadingState", data.get("sendLoadingState", False))
    v250.resolve_models(data, problems)
    _check_aliases(models, problems)
    alias_of = {a: m for m, model in models.items() for a in model.get("aliases", ())}
    routing.check_routing(data, models, alias_of, problems)
    _check_peers(data, problems)
    _normalise_preload(data, models, alias_of, problems)
    check_memory(data, problems)
    check_kv_cache_budget(data, problems)
    v250.check_root(data, alias_of, problems)
    if data.get("logRequests"):
        problems.warn(("logRequests",), "logRequests is deprecated and has no effect")
    if data.get("metricsMaxInMemory", 1000) <= 0:
        data["metricsMaxInMemory"] = 1000


def url_problem(url: str) -> str | None:
    """Why ``url`` is not usable as an http(s) base URL, or None when it is."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname:
        return "no host"
    return None


def _check_api_keys(data: dict[str, Any], problems: Problems) -> None:
    for index, key in enumerate(data.get("apiKeys", ())):
        if key == "":
            problems.add(("apiKeys", index), "empty api key found in apiKeys")
        elif " " in key:
            problems.add(("apiKeys", index), f"api key cannot contain spaces: `{key}`")


def _has_control(name: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def _check_model(model_id: str, model: dict[str, Any], problems: Problems) -> None:
    here: Path = ("models", model_id)
    # Names travel in URLs, headers and logs: a control character there is never wanted.
    if _has_control(model_id):
        problems.add(here, f"model ID {model_id!r} contains a control character")
    if _has_control(model.get("useModelName", "")):
        problems.add((*here, "useModelName"), "useModelName contains a control character")
    if "cmd" in model:
        try:
            model["argv"] = cmdline.split_command(model["cmd"])
        except ValueError:
            problems.add((*here, "cmd"), "cmd is empty: it must name the command to run")
        else:
            _warn_lost_backslashes(here, model, problems)
    if model.get("cmdStop", "").strip():
        try:
            model["stop_argv"] = cmdline.split_command(model["cmdStop"])
        except ValueError:
            problems.add((*here, "cmdStop"), "cmdStop has no command after removing comments")
    if "proxy" in model and "${" not in model["proxy"]:  # leftovers were reported already
        problem = url_problem(model["proxy"])
        if problem:
            problems.add((*here, "proxy"), f"invalid proxy URL {model['proxy']!r}: {problem}")
    endpoint = model.get("checkEndpoint", "/health").strip()
    if endpoint != "none" and not endpoint.startswith("/"):
        model["checkEndpoint"] = "/" + endpoint
    for index, entry in enumerate(model.get("env", ())):
        name, sep, _ = entry.partition("=")
        if not sep or not name or any(c.isspace() for c in name):
            problems.add((*here, "env", index), f"env entry {entry!r} must look like NAME=value")
    _check_sleep(here, model, problems)


_WINDOWS_PATH = re.compile(r"(?<![\w'\"])[A-Za-z]:\\")


def _warn_lost_backslashes(here: Path, model: dict[str, Any], problems: Problems) -> None:
    """``C:\\models\\x.gguf`` unquoted: POSIX quoting reads each backslash as an escape
    (as llama-swap does), so the path arrives without them. Almost never what was meant."""
    if _WINDOWS_PATH.search(model["cmd"]) and not any("\\" in arg for arg in model["argv"]):
        problems.warn(
            (*here, "cmd"),
            "backslashes outside quotes are escapes and were dropped (the path became "
            f"{model['argv'][0]!r}): put Windows paths in quotes or use forward slashes",
        )


def _check_sleep(here: Path, model: dict[str, Any], problems: Problems) -> None:
    sleep = model.get("sleepEndpoints", [])
    wake = model.get("wakeEndpoints", [])
    if sleep and not wake:
        problems.add(
            (*here, "sleepEndpoints"), "wakeEndpoints required when sleepEndpoints is configured"
        )
    if wake and not sleep:
        problems.add(
            (*here, "wakeEndpoints"), "sleepEndpoints required when wakeEndpoints is configured"
        )
    if model.get("sleepMode") == "enable" and not (sleep and wake):
        problems.add(
            (*here, "sleepMode"), "sleepMode: enable needs both sleepEndpoints and wakeEndpoints"
        )
    for key, steps in (("sleepEndpoints", sleep), ("wakeEndpoints", wake)):
        for index, step in enumerate(steps):
            if not step.get("endpoint", "").strip():
                problems.add(
                    (*here, key, index, "endpoint"), f"{key}[{index}]: endpoint path is required"
                )


def _check_aliases(models: dict[str, Any], problems: Problems) -> None:
    owner: dict[str, str] = {}
    for model_id in sorted(models):
        for index, alias in enumerate(models[model_id].get("aliases", ())):
            here = ("models", model_id, "aliases", index)
            if not alias.strip():
                problems.add(here, "an alias must not be empty")
            elif _has_control(alias):
                problems.add(here, f"alias {alias!r} contains a control character")
            elif alias in models:
                problems.add(here, f"alias '{alias}' is also a model ID; a model ID always wins")
            elif alias in owner:
                problems.add(
                    here,
                    f"duplicate alias {alias} found in model: {model_id} (also in {owner[alias]})",
                )
            else:
                owner[alias] = model_id


def _check_peers(data: dict[str, Any], problems: Problems) -> None:
    claimed: dict[str, str] = {}
    for peer_id in sorted(data.get("peers", {})):
        peer = data["peers"][peer_id]
        here: Path = ("peers", peer_id)
        if "proxy" in peer and "${" not in peer["proxy"]:
            problem = url_problem(peer["proxy"])
            if problem:
                problems.add(
                    (*here, "proxy"), f"invalid peer proxy URL ({peer['proxy']}): {problem}"
                )
        if "models" in peer and not peer["models"]:
            problems.add((*here, "models"), "peer models can not be empty")
        for index, name in enumerate(peer.get("models", ())):
            if _has_control(name):
                problems.add((*here, "models", index), f"{name!r} contains a control character")
            elif name in claimed:
                problems.warn(
                    (*here, "models", index),
                    f"model {name} is also served by peer {claimed[name]}, which wins",
                )
            else:
                claimed[name] = peer_id


def _normalise_preload(
    data: dict[str, Any], models: dict[str, Any], alias_of: dict[str, str], problems: Problems
) -> None:
    startup = data.get("hooks", {}).get("onStartup", {})
    names = startup.get("preload")
    if not names:
        return
    preload: list[str] = []
    for index, raw in enumerate(names):
        name = raw.strip()
        model_id = name if name in models else alias_of.get(name)
        if not name:
            continue
        if model_id is None:
            problems.warn(
                ("hooks", "onStartup", "preload", index), f"'{name}' is not a model; not preloaded"
            )
        elif model_id not in preload:
            preload.append(model_id)
    startup["preload"] = preload
