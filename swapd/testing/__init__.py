"""Test helpers for swapd and for users testing their own configs.

- ``open_swap_harness`` + ``Script``: deterministic swap-order scenarios on a mock clock;
- ``open_swapd`` + ``upstream_cmd``: a real swapd on a loopback port with demo upstreams;
- ``swapd.testing.upstream``: the demo upstream itself (a real HTTP server, run as a child).

Imports are lazy so that ``python -m swapd.testing.upstream`` starts without loading trio
and the rest of swapd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swapd.testing.harness import Script, SwapHarness, open_swap_harness
    from swapd.testing.server import open_swapd, upstream_cmd

__all__ = ["Script", "SwapHarness", "open_swap_harness", "open_swapd", "upstream_cmd"]


def __getattr__(name: str) -> Any:
    if name in ("Script", "SwapHarness", "open_swap_harness"):
        from swapd.testing import harness

        return getattr(harness, name)
    if name in ("open_swapd", "upstream_cmd"):
        from swapd.testing import server

        return getattr(server, name)
    raise AttributeError(name)
