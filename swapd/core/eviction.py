"""Which loaded models must make room for another: the eviction rule, behind one small interface.

The swap policy (``policy.py``) asks only two questions about conflicts, and this module
answers them for whichever router the config chose:

- ``blockers(target, occupying)``: of the models that occupy a slot now, which must leave
  before ``target`` may start;
- ``compatible(a, b)``: may ``a`` and ``b`` occupy slots at the same time (used to keep
  FIFO order between loads that would evict each other).

``GroupRule`` is llama-swap's group router (swap, exclusive, persistent). A matrix router
(llama-swap v250's ``routing.router.use: matrix``) implements the same protocol in
``matrix.py`` (``Matrix``; its ``choose`` also says which set won, for the log).
``rule_for(config)`` picks the rule; ``priority_of(config, model_id)``
gives a model's scheduling priority (higher is served first; 0 by default).

Pure: no trio, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from typing import Protocol

import attrs

from swapd.config.model import Config, GroupConfig
from swapd.core.matrix import Matrix, compile_matrix

__all__ = ["EvictionRule", "GroupRule", "matrix_rule", "priority_of", "rule_for"]


class EvictionRule(Protocol):
    def blockers(self, target: str, occupying: Set[str]) -> frozenset[str]:
        """The models in ``occupying`` that must leave before ``target`` may run."""
        ...

    def compatible(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` may occupy slots at the same time."""
        ...


@attrs.frozen
class GroupRule:
    """llama-swap's groups: X blocks M when they share a ``swap: true`` group, or when M's
    group is ``exclusive`` and X's group is another, non-``persistent`` one."""

    group_of: Mapping[str, str]
    groups: Mapping[str, GroupConfig]

    def conflicts(self, model_id: str, other_id: str) -> bool:
        """Whether ``other_id`` may not occupy a slot while ``model_id`` runs."""
        if model_id == other_id:
            return False
        mine = self.group_of[model_id]
        theirs = self.group_of[other_id]
        if mine == theirs:
            return self.groups[mine].swap
        return self.groups[mine].exclusive and not self.groups[theirs].persistent

    def blockers(self, target: str, occupying: Set[str]) -> frozenset[str]:
        return frozenset(x for x in occupying if self.conflicts(target, x))

    def compatible(self, a: str, b: str) -> bool:
        return not (self.conflicts(a, b) or self.conflicts(b, a))


def rule_for(config: Config) -> EvictionRule:
    """The eviction rule ``config`` asks for: its matrix when one is active, else its groups.

    Building the rule compiles the matrix, and a ``Matrix`` caches its expansions: build it
    once per config (at start and on reload), not once per plan."""
    if config.active_matrix is not None:
        return matrix_rule(config)
    group_of = {m: gid for gid, g in config.groups.items() for m in g.members}
    return GroupRule(group_of=group_of, groups=dict(config.groups))


def matrix_rule(config: Config) -> Matrix:
    """``config``'s active matrix, compiled (the loader has already checked it).

    Raises ValueError when ``config`` has no active matrix."""
    spec = config.active_matrix
    if spec is None:
        raise ValueError("the config does not use the matrix router")
    return compile_matrix(
        vars=spec.vars, sets=spec.sets, evict_costs=spec.evict_costs, models=set(config.models)
    )


def priority_of(config: Config, model_id: str) -> int:
    """``model_id``'s scheduling priority: higher is served first, equal ones FIFO.

    Read from ``routing.scheduler.settings.fifo.priority``, whose keys may be model IDs or
    aliases. llama-swap accepts alias keys but looks priorities up by model ID only, so an
    alias key never applies there; swapd resolves it to its model (the loader rejects two
    keys naming one model)."""
    priority = config.routing.scheduler.settings.fifo.priority
    found = priority.get(model_id)
    if found is not None:
        return found
    model = config.models.get(model_id)
    if model is not None:
        for alias in model.aliases:
            if alias in priority:
                return priority[alias]
    return 0
