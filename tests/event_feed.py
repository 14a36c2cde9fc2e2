"""Reading swapd's ``/api/events`` SSE framing in tests (shared by the route, reload and
key-scope tests)."""

from __future__ import annotations

import json
from typing import Any


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    """The ``(type, data)`` of each ``event:message`` block, ``data`` decoded from its
    inner JSON string as llama-swap frames it."""
    events = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("event:message\ndata:"):
            outer = json.loads(block.split("data:", 1)[1])
            events.append((outer["type"], json.loads(outer["data"])))
    return events
