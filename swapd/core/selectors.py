"""Which target a selector (llama-swap v241 ``selectors``) sends one request to. Pure: the
selector, the local models' states and the selector's reservations in; a target name out.

- ``pin``: always the first target.
- ``warm``: the first ``ready`` target, else the first ``starting`` one, else the first
  (a cold start). Targets are local models.
- ``spillover``: each target holds reservations (requests it was picked for and that have
  not ended). In target order, a local model that is stopping or shutting down is
  skipped; one that is ready or starting, or holds reservations, is *active*; the rest
  are *cold* (a peer is active when reserved). With no active target the first cold one
  is picked; else the least-reserved active target below ``settings.spillover``; else the
  first cold one; else the least-reserved active one. Ties go to the earlier target
  (llama-swap rotates among equals; swapd keeps target order, which is stable to test).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from swapd.config.model import Selector, SelectorStrategy
from swapd.core.states import ModelState

__all__ = ["pick_target"]

_LOADING = (ModelState.STARTING, ModelState.WAKING)
_GONE = (ModelState.STOPPING, ModelState.SHUTDOWN)


def pick_target(
    selector: Selector,
    state_of: Callable[[str], ModelState | None],
    reserved: Mapping[str, int],
) -> str | None:
    """The target for one request, or None when no target is usable (spillover only).

    ``state_of(target)`` is the local model's state, None for a peer target."""
    targets = list(selector.targets)
    if selector.strategy is SelectorStrategy.PIN:
        return targets[0]
    if selector.strategy is SelectorStrategy.WARM:
        for wanted in ((ModelState.READY,), _LOADING):
            for target in targets:
                if state_of(target) in wanted:
                    return target
        return targets[0]
    active: list[str] = []
    cold: list[str] = []
    for target in targets:
        state = state_of(target)
        if state in _GONE:
            continue
        running = state is not None and state not in (ModelState.STOPPED, ModelState.ASLEEP)
        (active if running or reserved.get(target, 0) > 0 else cold).append(target)
    if not active:
        return cold[0] if cold else None
    least = min(active, key=lambda t: reserved.get(t, 0))
    if reserved.get(least, 0) < selector.settings.spillover:
        return least
    return cold[0] if cold else least
