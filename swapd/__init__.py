"""swapd: one endpoint, many local models, swapped on demand.

The programmatic surface is what ``__all__`` lists. Submodules are imported lazily so
that small helpers run as child processes (the demo upstream, the lifeline) start fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
