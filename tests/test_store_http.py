"""The activity store through a real swapd: a row for every inference request (answered,
refused, failed), a record for every model load, the v250 activity and stats routes, the
history surviving a restart, and an unusable database leaving swapd serving."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from ws_client import open_ws

from swapd.daemon import Daemon
from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def config(*, store: str = "", **models: str) -> str:
    lines = [f"store:\n  path: {store}"] if store else []
    lines.append("models:")
    for name, flags in models.items():
        lines += [
            f"  {name}:",
            f"    cmd: {upstream_cmd('--model', name, *flags.split())}",
            "    proxy: http://127.0.0.1:${PORT}",
        ]
    return "\n".join(lines) + "\n"


def chat(model: str, words: int = 3, **extra: object) -> dict[str, object]:
    prompt = " ".join(["word"] * words)
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


async def activity(
    swapd: Daemon, client: httpx.AsyncClient, rows: int, **params: Any
) -> dict[str, Any]:
    """The activity page, once the ``rows`` requests made so far have their rows committed
    (a row is queued just after its response ends, committed within the commit interval)."""
    with trio.fail_after(10):
        await swapd.services.telemetry.activity.wait_written(rows)
    reply = await client.get("/api/metrics/activity", params=params)
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_every_inference_request_gets_a_row() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config(m1="--chunks 4")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            assert (await client.post("/v1/chat/completions", json=chat("m1", 5))).is_success
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat("m1", 6, stream=True)
            ) as r:
                await r.aread()
            failed = await client.post("/v1/chat/completions", json=chat("m1", x_status=503))
            assert failed.status_code == 503
            unknown = await client.post("/v1/chat/completions", json=chat("nope"))
            assert unknown.status_code == 404
            missing = await client.post("/v1/chat/completions", json={"messages": []})
            assert missing.status_code == 400
            await client.get("/v1/models")  # not an inference request: no row
            page = await activity(swapd, client, 5)
            loads = await swapd.services.telemetry.activity.load_history("m1")
    rows = {r["id"]: r for r in page["data"]}
    assert page["total"] == 5
    assert sorted(rows) == [1, 2, 3, 4, 5]
    plain, stream, upstream_error, not_found, bad = (rows[i] for i in range(1, 6))
    assert plain["model"] == "m1"
    assert plain["req_path"] == "/v1/chat/completions"
    assert plain["resp_status_code"] == 200
    assert plain["tokens"]["input_tokens"] == 5
    assert plain["tokens"]["output_tokens"] > 0
    assert plain["queue_ms"] >= 0  # it waited for m1 to load
    assert 0 <= plain["ttfb_ms"] <= plain["total_ms"] <= plain["duration_ms"]
    assert "error_msg" not in plain
    assert stream["resp_content_type"].startswith("text/event-stream")
    assert stream["tokens"]["input_tokens"] == 6
    assert stream["tokens"]["output_tokens"] == 4
    assert upstream_error["resp_status_code"] == 503
    assert upstream_error["model"] == "m1"
    assert "x_status" in upstream_error["error_msg"]
    assert upstream_error["tokens"]["input_tokens"] == 0
    assert not_found["resp_status_code"] == 404
    assert not_found["model"] == "nope"
    assert not_found["queue_ms"] == -1
    assert "nope" in not_found["error_msg"]
    assert bad["resp_status_code"] == 400
    assert "model" in bad["error_msg"]
    assert [(ld.model, ld.kind, ld.outcome) for ld in loads] == [("m1", "start", "ready")]
    assert loads[0].duration_ms > 0
    assert loads[0].cmd_hash


async def test_activity_filters_pages_and_stats() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(config(m1="", m2="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            for words in (1, 2, 3):
                await client.post("/v1/chat/completions", json=chat("m1", words))
            await client.post("/v1/chat/completions", json=chat("m2", 10))
            await client.post("/v1/chat/completions", json=chat("m1", x_status=500))
            everything = await activity(swapd, client, 5)
            m2 = await activity(swapd, client, 5, model="m2")
            both = await activity(swapd, client, 5, model=["m1", "m2"], status="2xx", sort="prompt")
            errors = await activity(swapd, client, 5, status="5xx")
            page2 = await activity(swapd, client, 5, limit=2, page=2, order="asc")
            newest = everything["data"][0]
            at = newest["timestamp"]
            window = await activity(swapd, client, 5, start=at, end=at, min_id=newest["id"])
            stats = (await client.get("/api/metrics/stats")).json()
            stats_m2 = (await client.get("/api/metrics/stats", params={"model": "m2"})).json()
            bad = {
                q: (await client.get("/api/metrics/activity", params=p)).json()
                for q, p in {
                    "limit": {"limit": "1000"},
                    "page": {"page": "0"},
                    "sort": {"sort": "nope"},
                    "start": {"start": "yesterday"},
                    "order": {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
                    "status": {"status": "abc"},
                }.items()
            }
    assert everything["total"] == 5
    assert [r["id"] for r in everything["data"]] == [5, 4, 3, 2, 1]
    assert [r["tokens"]["input_tokens"] for r in m2["data"]] == [10]
    assert [r["tokens"]["input_tokens"] for r in both["data"]] == [10, 3, 2, 1]
    assert [r["id"] for r in errors["data"]] == [5]
    assert (page2["page"], page2["limit"], page2["total_pages"]) == (2, 2, 3)
    assert [r["id"] for r in page2["data"]] == [3, 4]
    assert [r["id"] for r in window["data"]] == [5]
    assert stats["total_requests"] == 5
    assert stats["total_input_tokens"] == 1 + 2 + 3 + 10
    assert stats["total_output_tokens"] > 0
    assert stats["gen_histogram"]["p50"] > 0
    assert sum(stats["gen_histogram"]["bins"]) == 4
    assert stats_m2["total_requests"] == 1
    assert {q: b["error"]["message"] for q, b in bad.items()} == {
        "limit": "limit must be between 1 and 999",
        "page": "page must be >= 1",
        "sort": "invalid sort column",
        "start": "start must be an RFC 3339 time, e.g. 2026-08-20T10:00:00Z",
        "order": "start must not be after end",
        "status": "status must be a status code (404) or class (5xx)",
    }


async def test_the_history_survives_a_restart(tmp_path: Path) -> None:
    text = config(m1="")
    with trio.fail_after(60):
        for run in range(2):
            async with (
                open_swapd(text) as swapd,
                httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
            ):
                await client.post("/v1/chat/completions", json=chat("m1", 4 + run))
                page = await activity(swapd, client, 1)
                loads = await swapd.services.telemetry.activity.load_history("m1")
    assert [(r["id"], r["tokens"]["input_tokens"]) for r in page["data"]] == [(2, 5), (1, 4)]
    assert len(loads) == 2
    database = Path(os.environ["XDG_STATE_HOME"]) / "swapd" / "activity.db"
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def unwritable_directory(tmp_path: Path) -> Path:
    """A directory this process cannot create files in. root ignores permission bits, so
    as root it is a directory of /proc, where nobody can create files."""
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        (directory / "probe").touch()
    except OSError:
        return directory
    (directory / "probe").unlink()
    return Path("/proc/self/fdinfo")


@pytest.mark.parametrize("damage", ["corrupt", "read-only directory"])
async def test_an_unusable_database_leaves_swapd_serving(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    if damage == "corrupt":
        path = tmp_path / "activity.db"
        path.write_bytes(b"\x00garbage that is no SQLite file" * 100)
    else:
        path = unwritable_directory(tmp_path) / "activity.db"
    with caplog.at_level(logging.ERROR), trio.fail_after(60):
        async with (
            open_swapd(config(store=str(path), m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            reply = await client.post("/v1/chat/completions", json=chat("m1", 4))
            assert reply.is_success
            page = await activity(swapd, client, 1)
            stats = swapd.services.telemetry.activity.statistics()
    assert [r["tokens"]["input_tokens"] for r in page["data"]] == [4]
    assert stats.fallback is not None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "activity store unusable" in errors[0]
    assert str(path.parent) in errors[0] or str(path) in errors[0]


async def test_the_event_feed_announces_each_row_once_it_can_be_read() -> None:
    url_of = "{}/api/events/ws".format
    with trio.fail_after(60):
        async with (
            open_swapd(config(m1="")) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
            open_ws(url_of(swapd.url.replace("http://", "ws://"))) as ws,
        ):
            await client.post("/v1/chat/completions", json=chat("m1", 7))
            while True:
                envelope = json.loads(await ws.get_message())
                if envelope["type"] == "activity":
                    announced = json.loads(envelope["data"])
                    break
            # no waiting for the writer here: the event comes after the commit
            found = await client.get("/api/metrics/activity", params={"min_id": announced["id"]})
    assert announced == {"id": 1}
    assert [r["tokens"]["input_tokens"] for r in found.json()["data"]] == [7]
