"""The router and scheduler settings: ``routing``, and the legacy top-level ``groups``/``matrix``.

llama-swap v250 moved groups and the matrix under ``routing.router.settings`` and picks one
with ``routing.router.use``; the top-level keys stay accepted. This module checks how they
are combined (llama-swap's rules and messages), checks the groups and the matrix, and
derives what the rest of swapd reads:

- ``groups``: the effective groups plus the implicit ``(default)`` group. In matrix mode
  every model is in ``(default)``: the matrix, not groups, decides eviction
  (``core/eviction.py``), and group-aware code (listings, /running, reload) keeps working;
- ``active_matrix``: the matrix in use, or absent in group mode;
- priorities are checked here but resolved by ``core.eviction.priority_of``, which accepts
  aliases (llama-swap validates alias keys but never applies them; swapd applies them).

Runs inside ``validate.check_and_derive`` on shaped, macro-expanded data, so every problem
has a line.
"""

from __future__ import annotations

import difflib
from typing import Any

from swapd.config.model import DEFAULT_GROUP
from swapd.config.shape import Path, Problems
from swapd.core.matrix import MatrixProblems, compile_matrix

__all__ = ["ROUTERS", "SCHEDULERS", "check_routing"]

ROUTERS = ("group", "matrix")
SCHEDULERS = ("fifo",)

_ROUTER: Path = ("routing", "router")
_SETTINGS: Path = ("routing", "router", "settings")
_PRIORITY: Path = ("routing", "scheduler", "settings", "fifo", "priority")


def check_routing(
    data: dict[str, Any], models: dict[str, Any], alias_of: dict[str, str], problems: Problems
) -> None:
    """Validate the router and scheduler keys; set ``groups`` and ``active_matrix``."""
    routing: dict[str, Any] = data.get("routing", {})
    router: dict[str, Any] = routing.get("router", {})
    settings: dict[str, Any] = router.get("settings", {})
    # An empty `groups: {}` says nothing, as in llama-swap (it counts groups, not keys).
    legacy_groups = bool(data.get("groups"))
    legacy_matrix = "matrix" in data
    if (legacy_groups or legacy_matrix) and (
        "use" in router or settings.get("groups") or "matrix" in settings
    ):
        problems.add(
            _ROUTER,
            "config uses both the legacy top-level 'matrix'/'groups' keys and the new "
            "'routing.router' block; please migrate the top-level keys into 'routing.router' "
            "and remove them",
        )
    if legacy_groups and legacy_matrix:
        problems.add(("matrix",), "config cannot use both 'groups' and 'matrix'")

    use = router.get("use", "group")
    if use not in ROUTERS:
        problems.add((*_ROUTER, "use"), f'unknown router "{use}" (valid: {", ".join(ROUTERS)})')
    elif (
        use == "matrix"
        and "matrix" not in settings
        and not problems.any_under((*_SETTINGS, "matrix"))
    ):
        problems.add(
            (*_ROUTER, "use"),
            "routing.router.use is 'matrix' but routing.router.settings.matrix is not set",
        )
    _check_scheduler(routing, models, alias_of, problems)

    # Every groups and matrix mapping present is checked, the unused one too: a mistake in
    # a file is reported before a later edit of `use` trips over it.
    if "groups" in settings:
        _check_groups(settings["groups"], (*_SETTINGS, "groups"), models, alias_of, problems)
    if "matrix" in settings:
        _check_matrix(settings["matrix"], (*_SETTINGS, "matrix"), models, alias_of, problems)
    if "groups" in data:
        _check_groups(data["groups"], ("groups",), models, alias_of, problems)
    if legacy_matrix:
        _check_matrix(data["matrix"], ("matrix",), models, alias_of, problems)

    matrix: dict[str, Any] | None = None
    if legacy_matrix and not legacy_groups:
        matrix = data["matrix"]
    elif not (legacy_groups or legacy_matrix) and use == "matrix":
        matrix = settings.get("matrix")
    if matrix is not None:
        data["active_matrix"] = matrix
        groups: dict[str, Any] = {}
        member_of: set[str] = set()
    else:
        groups = data.get("groups", {}) if legacy_groups else dict(settings.get("groups", {}))
        member_of = {m for g in groups.values() for m in g.get("members", ())}
    data["groups"] = groups
    if DEFAULT_GROUP not in groups:
        groups[DEFAULT_GROUP] = {
            "swap": True,
            "exclusive": True,
            "persistent": False,
            "members": sorted(m for m in models if m not in member_of),
        }


def _check_scheduler(
    routing: dict[str, Any], models: dict[str, Any], alias_of: dict[str, str], problems: Problems
) -> None:
    scheduler: dict[str, Any] = routing.get("scheduler", {})
    use = scheduler.get("use", "fifo")
    if use not in SCHEDULERS:
        problems.add(
            ("routing", "scheduler", "use"),
            f'unknown scheduler "{use}" (valid: {", ".join(SCHEDULERS)})',
        )
    priority: dict[str, int] = scheduler.get("settings", {}).get("fifo", {}).get("priority", {})
    named_by: dict[str, str] = {}
    for name in priority:
        model_id = name if name in models else alias_of.get(name)
        if model_id is None:
            problems.add((*_PRIORITY, name), f'priority references unknown model "{name}"')
        elif model_id in named_by:
            problems.add(
                (*_PRIORITY, name),
                f'"{name}" and "{named_by[model_id]}" both give the priority of model '
                f'"{model_id}"; keep one',
            )
        else:
            named_by[model_id] = name


def _check_groups(
    groups: dict[str, Any],
    base: Path,
    models: dict[str, Any],
    alias_of: dict[str, str],
    problems: Problems,
) -> None:
    member_of: dict[str, str] = {}
    if DEFAULT_GROUP in groups:
        problems.add((*base, DEFAULT_GROUP), f"the group name {DEFAULT_GROUP} is reserved")
    for group_id, group in groups.items():
        seen: set[str] = set()
        kept: list[str] = []
        for index, member in enumerate(group.get("members", ())):
            here = (*base, group_id, "members", index)
            if member in seen:
                problems.add(here, f"duplicate model member {member} found in group: {group_id}")
                continue
            seen.add(member)
            if member not in models:
                # llama-swap v193 accepted these (its own example lists a commented-out
                # model); v250 refuses them. A warning keeps the file loading.
                problems.warn(here, _not_a_member(member, models, alias_of))
                continue
            if member in member_of:
                problems.add(
                    here,
                    f"model member {member} is used in multiple groups: "
                    f"{member_of[member]} and {group_id}",
                )
                continue
            member_of[member] = group_id
            kept.append(member)
        if "members" in group:
            group["members"] = kept


def _not_a_member(member: str, models: dict[str, Any], alias_of: dict[str, str]) -> str:
    if member in alias_of:
        return f"'{member}' is an alias of '{alias_of[member]}', not a model ID; ignored"
    close = difflib.get_close_matches(member, list(models), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else " (see models:)"
    return f"'{member}' is not a model ID; ignored{hint}"


def _check_matrix(
    matrix: dict[str, Any],
    base: Path,
    models: dict[str, Any],
    alias_of: dict[str, str],
    problems: Problems,
) -> None:
    try:
        compile_matrix(
            vars=matrix.get("vars", {}),
            sets=matrix.get("sets", {}),
            evict_costs=matrix.get("evict_costs", {}),
            models=set(models),
            aliases=alias_of,
        )
    except MatrixProblems as exc:
        for problem in exc.problems:
            problems.add((*base, *problem.where), problem.message)
