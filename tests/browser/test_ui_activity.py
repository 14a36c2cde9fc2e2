"""The activity page over swapd's stored history and its requests in flight, in headless
Chromium against a real swapd process and demo upstreams (issue #18, item 7).

- The history table reads ``/api/metrics/activity``: page by page, filtered by status,
  exported as CSV and Markdown from the rows fetched, and a new request appears at the top
  without a reload (the event stream's ``activity`` message).
- The in-flight panel lists a slow stream while it runs; its Cancel button ends the
  client's stream with swapd's cancel error, and the entry disappears.
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Any

import httpx
from conftest import Swapd, model
from test_ui import expect, goto, shot

CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hello"}]}


def history_config(tmp_path: Path) -> str:
    return f"store:\n  path: {tmp_path / 'activity.db'}\ncaptureBuffer: 5\nmodels:\n" + model(
        "fast", "--chunks", "3"
    )


def wait_for_rows(server: Swapd, total: int) -> None:
    """Until the store has committed ``total`` rows (it writes in batches)."""
    with server.client() as client:
        for _ in range(200):
            if client.get("/api/metrics/activity").json()["total"] >= total:
                return
            threading.Event().wait(0.05)
    raise AssertionError(f"the store never reached {total} rows")


def test_history_pages_filters_exports_and_updates_live(
    start_swapd: Any, open_page: Any, artifacts: Path, tmp_path: Path
) -> None:
    server = start_swapd(history_config(tmp_path))
    with server.client() as client:
        for _ in range(26):
            client.post("/v1/chat/completions", json=CHAT).raise_for_status()
        for _ in range(2):
            failed = client.post("/v1/chat/completions", json={**CHAT, "x_status": 500})
            assert failed.status_code == 500
    wait_for_rows(server, 28)
    page, _ = open_page()
    goto(page, server, "/ui/activity")
    table = page.locator(".activity-table tbody tr")
    expect(table).to_have_count(25)  # the first page, newest first
    expect(page.locator(".pager")).to_contain_text("Page 1 of 2 · 28 requests")
    expect(table.first.locator("td").nth(4)).to_have_text("500")
    shot(page, artifacts, "activity-history")

    page.locator(".pager button[data-page=next]").click()
    expect(page.locator(".pager")).to_contain_text("Page 2 of 2")
    expect(table).to_have_count(3)
    expect(table.last).to_have_attribute("data-id", "1")  # the oldest row
    page.locator(".pager button[data-page=prev]").click()
    expect(table).to_have_count(25)

    page.get_by_label("Status").select_option("5xx")
    expect(table).to_have_count(2)
    expect(page.locator(".pager")).to_contain_text("2 requests")
    with page.expect_download() as csv_download:
        page.locator("button[data-export=csv]").click()
    rows = list(csv.DictReader(io.StringIO(Path(csv_download.value.path()).read_text())))
    assert [r["status"] for r in rows] == ["500", "500"], rows
    assert {r["model"] for r in rows} == {"fast"}
    assert all("forced error status 500" in r["error"] for r in rows), rows
    with page.expect_download() as md_download:
        page.locator("button[data-export=md]").click()
    assert md_download.value.suggested_filename == "swapd-activity.md"
    lines = Path(md_download.value.path()).read_text().splitlines()
    assert lines[0].startswith("| id | time | model |"), lines
    assert lines[1].startswith("| --- |")
    assert len(lines) == 4 and all("| 500 |" in line for line in lines[2:]), lines

    page.get_by_label("Status").select_option("")
    expect(page.locator(".pager")).to_contain_text("28 requests")
    with server.client() as client:  # a new request shows up on page 1 by itself
        client.post("/v1/chat/completions", json=CHAT).raise_for_status()
    expect(table.first).to_have_attribute("data-id", "29", timeout=15_000)
    expect(page.locator(".pager")).to_contain_text("29 requests")
    with server.client() as client:
        newest = client.get("/api/metrics/activity", params={"limit": 1}).json()["data"][0]
    assert newest["id"] == 29
    tokens_out = str(newest["tokens"]["output_tokens"])
    expect(table.first.locator("td").nth(6)).to_have_text(tokens_out)
    table.first.get_by_role("button", name="View").click()
    dialog = page.locator("dialog.capture-dialog")
    expect(dialog).to_contain_text("/v1/chat/completions")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)


def test_in_flight_request_is_listed_and_cancelled_from_the_panel(
    start_swapd: Any, open_page: Any, artifacts: Path, tmp_path: Path
) -> None:
    server = start_swapd(history_config(tmp_path))
    page, _ = open_page()
    goto(page, server, "/ui/activity")
    panel = page.locator(".inflight-table")
    outcome: list[object] = []

    def stream() -> None:
        # 50 chunks 0.3 s apart: 15 s in flight unless cancelled
        body = {**CHAT, "stream": True, "x_chunks": 50, "x_delay_ms": 300}
        try:
            with (
                httpx.Client(base_url=server.url, timeout=30) as client,
                client.stream("POST", "/v1/chat/completions", json=body) as reply,
            ):
                outcome.append(reply.read().decode())
        except httpx.HTTPError as exc:
            outcome.append(exc)

    streaming = threading.Thread(target=stream)
    streaming.start()
    try:
        row = panel.locator("tr[data-model=fast]")
        expect(row).to_contain_text("/v1/chat/completions", timeout=15_000)
        expect(row.locator(".elapsed")).not_to_have_text("0:00", timeout=5_000)  # it ticks
        shot(page, artifacts, "activity-inflight")
        row.get_by_role("button", name="Cancel").dblclick()  # one cancel, however clicked
        expect(row).to_have_count(0, timeout=10_000)
        expect(page.locator(".inflight-table")).to_have_count(0)
        expect(page.get_by_text("Nothing in flight.")).to_be_visible()
    finally:
        streaming.join(timeout=30)
    assert not streaming.is_alive()
    [result] = outcome
    assert isinstance(result, str), result
    assert '"code":"cancelled"' in result.replace(" ", ""), result  # swapd's cancel error
    assert result.rstrip().endswith("data: [DONE]"), result
    assert result.count("chat.completion.chunk") < 50  # it did not run to the end
