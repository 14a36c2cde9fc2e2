"""``GET /api/hardware`` and ``GET /api/performance`` in llama-swap v250's shapes.

Both read ``services.telemetry.performance`` (``swapd.observe.performance``), whose task the
daemon starts: the hardware snapshot taken at start, the ring of samples.
"""

from __future__ import annotations

import datetime as dt

import trio
from quart import Quart, Response, request

from swapd.web import problems
from swapd.web.app import Services, json_response

__all__ = ["register"]


def register(app: Quart, services: Services) -> None:
    monitor = services.telemetry.performance

    async def hardware() -> Response:
        with trio.move_on_after(10):  # llama-swap's detection budget; only early requests wait
            await monitor.detected.wait()
        if monitor.hardware is None:
            return json_response(503, problems.openai_error(503, "hardware detection unavailable"))
        return json_response(200, monitor.hardware)

    async def performance() -> Response:
        if monitor.disabled:
            return json_response(503, {"enabled": False})
        after = None
        if "after" in request.args:
            text = request.args["after"]
            try:
                after = dt.datetime.fromisoformat(text)
            except ValueError:
                after = None
            if after is None or after.tzinfo is None:
                message = f"invalid 'after' {text!r}: expected an RFC 3339 time with a zone"
                return json_response(400, problems.openai_error(400, message))
        sys_stats, gpu_stats = monitor.samples(after)
        return json_response(200, {"enabled": True, "sys_stats": sys_stats, "gpu_stats": gpu_stats})

    app.add_url_rule("/api/hardware", "hardware", hardware, methods=["GET"])
    app.add_url_rule("/api/performance", "performance", performance, methods=["GET"])
