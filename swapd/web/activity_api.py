"""The activity history, as llama-swap v250 serves it (``observe.store`` keeps it).

- ``GET /api/metrics/activity``: one page of request rows, newest first by default.
  Query: ``model`` (repeatable, any of them), ``status`` (swapd's; repeatable: a code such
  as ``404`` or a class such as ``5xx``), ``start``/``end`` (RFC 3339, inclusive, to the
  second), ``min_id``/``max_id`` (>= 1), ``limit`` (1-999, default 25), ``page`` (>= 1),
  ``sort`` (``id time model req_path resp_status_code resp_content_type cached prompt
  generated drafted prompt_speed gen_speed duration``), ``order`` (``asc``/``desc``).
  A bad value is a 400 that says which. Answer:
  ``{"data": [rows], "page", "limit", "total", "total_pages"}``.
- ``GET /api/metrics/stats[?model=]``: ``total_requests``, ``total_input_tokens``,
  ``total_output_tokens``, ``total_cache_tokens`` and the ``prompt_histogram`` and
  ``gen_histogram`` of the reported speeds (``null`` when none).

A row is llama-swap's (``id``, ``timestamp`` to the second, ``model``, ``req_path``,
``resp_content_type``, ``resp_status_code``, ``tokens``, ``duration_ms``, ``has_capture``,
``error_msg`` and ``metadata`` when not empty) plus swapd's timings: ``method``,
``queue_ms`` (waiting for the model, -1 if it never waited), ``ttfb_ms`` (first body byte,
-1 if none) and ``total_ms`` (the whole request), and ``capture_id`` when a capture was
kept (``GET /api/captures/<capture_id>`` while ``has_capture`` is true).
``GET /api/metrics`` (llama-swap v193's token metrics) stays in ``observe_api.py``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import attrs
from quart import Quart, Response, request

from swapd.observe.store import ActivityRow
from swapd.observe.store_schema import SORT_COLUMNS, ActivityFilter
from swapd.web import problems, scopes
from swapd.web.app import Services, json_response

__all__ = ["register"]

MAX_LIMIT = 999
DEFAULT_LIMIT = 25


class _BadQuery(Exception):
    pass


def _int(name: str, default: int | None, low: int, high: int | None = None) -> int | None:
    text = request.args.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _BadQuery(f"{name} must be {bound}")
    return value


def _time_ms(name: str, *, end: bool) -> int | None:
    text = request.args.get(name)
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise _BadQuery(f"{name} must be an RFC 3339 time, e.g. 2026-08-20T10:00:00Z")
    ms = int(when.timestamp() * 1000)
    # Rows show whole seconds: an end without a fraction takes in its whole second.
    return ms + 999 if end and when.microsecond == 0 else ms


def _statuses() -> tuple[tuple[int, ...], tuple[int, ...]]:
    codes: list[int] = []
    classes: list[int] = []
    for text in request.args.getlist("status"):
        text = text.strip().lower()
        if len(text) == 3 and text.endswith("xx") and text[0] in "12345":
            classes.append(int(text[0]))
        elif text.isdigit() and 100 <= int(text) <= 599:
            codes.append(int(text))
        else:
            raise _BadQuery("status must be a status code (404) or class (5xx)")
    return tuple(codes), tuple(classes)


def _filter() -> ActivityFilter:
    codes, classes = _statuses()
    start, end = _time_ms("start", end=False), _time_ms("end", end=True)
    if start is not None and end is not None and start > end:
        raise _BadQuery("start must not be after end")
    min_id, max_id = _int("min_id", None, 1), _int("max_id", None, 1)
    if min_id is not None and max_id is not None and min_id > max_id:
        raise _BadQuery("min_id must not be greater than max_id")
    return ActivityFilter(
        models=tuple(m for m in request.args.getlist("model") if m),
        statuses=codes,
        status_classes=classes,
        start_ms=start,
        end_ms=end,
        min_id=min_id,
        max_id=max_id,
    )


def _timestamp(ts_ms: int) -> str:
    """RFC 3339 to the second in the local offset, ``Z`` for UTC (as Go writes it)."""
    text = dt.datetime.fromtimestamp(ts_ms // 1000).astimezone().isoformat(timespec="seconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


def _number(value: float) -> float | int:
    return int(value) if math.isfinite(value) and value.is_integer() else value


def row_json(row: ActivityRow, has_capture: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "timestamp": _timestamp(row.ts_ms),
        "model": row.model,
        "key_name": row.key_name,
        "req_path": row.req_path,
        "resp_content_type": row.content_type,
        "resp_status_code": row.status,
        "tokens": {
            "cache_tokens": row.cache_tokens,
            "draft_tokens": row.draft_tokens,
            "draft_acc_tokens": row.draft_acc_tokens,
            "input_tokens": row.input_tokens,
            "output_tokens": row.output_tokens,
            "prompt_per_second": _number(row.prompt_per_second),
            "tokens_per_second": _number(row.tokens_per_second),
        },
        "duration_ms": row.duration_ms,
        "has_capture": has_capture,
    }
    if row.error_msg:
        data["error_msg"] = row.error_msg
    if row.metadata:
        data["metadata"] = dict(row.metadata)
    data.update(method=row.method, queue_ms=row.queue_ms, ttfb_ms=row.ttfb_ms)
    data["total_ms"] = row.total_ms
    if has_capture:
        data["capture_id"] = row.capture_id
    return data


def _in_scope(services: Services, where: ActivityFilter) -> ActivityFilter:
    """``where`` narrowed to the models of the request's API key (docs/keys.md)."""
    allowed = scopes.scoped_models(services)
    if allowed is None:
        return where
    models = tuple(m for m in where.models if m in allowed) if where.models else allowed
    # No model at all: a name no row carries (an empty tuple would mean "every model").
    return attrs.evolve(where, models=models or ("\x00",))


def register(app: Quart, services: Services) -> None:
    telemetry = services.telemetry

    def bad(message: str) -> Response:
        return json_response(400, problems.openai_error(400, message))

    async def activity() -> Response:
        try:
            where = _filter()
            limit = _int("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
            page = _int("page", 1, 1)
        except _BadQuery as exc:
            return bad(str(exc))
        assert limit is not None
        assert page is not None
        where = _in_scope(services, where)
        sort = request.args.get("sort") or "id"
        if sort not in SORT_COLUMNS:
            return bad("invalid sort column")
        order = (request.args.get("order") or "desc").lower()
        if order not in ("asc", "desc"):
            return bad("order must be asc or desc")
        rows, total = await telemetry.activity.activity_page(
            where, sort=sort, descending=order == "desc", limit=limit, page=page
        )
        captures = telemetry.captures
        data = [
            row_json(r, r.capture_id >= 0 and captures.get(r.capture_id) is not None) for r in rows
        ]
        return json_response(
            200,
            {
                "data": data,
                "page": page,
                "limit": limit,
                "total": total,
                "total_pages": math.ceil(total / limit),
            },
        )

    async def stats() -> Response:
        where = ActivityFilter(models=tuple(m for m in request.args.getlist("model") if m))
        where = _in_scope(services, where)
        found = await telemetry.activity.stats(where)
        return json_response(
            200,
            {
                "total_requests": found.totals.requests,
                "total_input_tokens": found.totals.input_tokens,
                "total_output_tokens": found.totals.output_tokens,
                "total_cache_tokens": found.totals.cache_tokens,
                "prompt_histogram": found.prompt.as_json() if found.prompt else None,
                "gen_histogram": found.generation.as_json() if found.generation else None,
            },
        )

    app.add_url_rule("/api/metrics/activity", "activity", activity, methods=["GET"])
    app.add_url_rule("/api/metrics/stats", "activity-stats", stats, methods=["GET"])
