"""``POST /api/inflight/<id>/cancel``: cancel a request in flight (llama-swap v250).

200 ``{"msg": "ok"}`` once the request is cancelled, 404 ``inflight request not found``
otherwise. The list itself travels only over the event feed (``inflight`` operations on
``/api/events`` and ``/api/events/ws``), as in llama-swap. What the cancelled client sees
is in ``recording.py``: an error response when none had started, an error event and
``[DONE]`` ending an event stream, else a cut body; its upstream request is closed.
"""

from __future__ import annotations

from quart import Quart, Response

from swapd.web import problems
from swapd.web.app import Services, json_response

__all__ = ["register"]


def register(app: Quart, services: Services) -> None:
    async def cancel(request_id: str) -> Response:
        if not services.telemetry.inflight.cancel(request_id):
            return json_response(404, problems.openai_error(404, "inflight request not found"))
        return json_response(200, {"msg": "ok"})

    app.add_url_rule(
        "/api/inflight/<request_id>/cancel", "inflight-cancel", cancel, methods=["POST"]
    )
