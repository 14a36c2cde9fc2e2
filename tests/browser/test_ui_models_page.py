"""The models page's buttons and its narrow layout, in headless Chromium against a real
swapd process and demo upstreams.

- A button never changes meaning under the pointer: clicks 0-400 ms apart on Load load the
  model and never unload it (issue #24: the second click used to land on Unload).
- Unloading a model that is serving requests asks first.
- At 420 px nothing scrolls sideways, every button is in view, model IDs wrap only after
  a separator, and aliases are shown.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from conftest import Swapd, model
from test_ui import expect, goto, shot

SEPARATORS = "/-_.:"
LONG_ID = "hf.co/bartowski/Meta-Llama-3.1-70B-Instruct-GGUF:Q4_K_M"


def centre(locator: Any) -> tuple[float, float]:
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def states(server: Swapd) -> dict[str, str]:
    with server.client() as client:
        return {r["model"]: r["state"] for r in client.get("/running").json()["running"]}


def test_clicking_load_twice_loads_the_model_and_never_unloads_it(
    start_swapd: Any, open_page: Any, artifacts: Any
) -> None:
    config = "models:\n" + model("quick") + model("loads-slowly", "--loading-delay", "1")
    config += "groups:\n  all:\n    swap: false\n    members: [quick, loads-slowly]\n"
    server = start_swapd(config)
    page, _ = open_page()
    goto(page, server, "/ui/models")
    for model_id in ("quick", "loads-slowly"):
        row = page.locator(f"tr[data-model='{model_id}']")
        expect(row.locator(".badge")).to_have_text("stopped")
        x, y = centre(row.locator("button[data-action=load]"))
        page.mouse.dblclick(x, y)  # a real double-click: two clicks at once
        for pause in (0.1, 0.15, 0.15):  # and more single clicks 100-400 ms after the first
            time.sleep(pause)
            page.mouse.click(x, y)
        expect(row.locator(".badge")).to_have_text("ready", timeout=15_000)
        # once the buttons have settled, Unload is where Load was, and it works
        expect(row.locator("button[data-action=unload]")).to_be_enabled()
    time.sleep(1.0)  # any stray unload would have landed by now
    assert states(server) == {"quick": "ready", "loads-slowly": "ready"}
    log = server.log_file.read_text()
    assert "-> stopping" not in log, log
    shot(page, artifacts, "models-after-double-click")
    unload = page.locator("tr[data-model=quick] button[data-action=unload]")
    unload.click()
    expect(page.locator("tr[data-model=quick] .badge")).to_have_text("stopped", timeout=15_000)


def test_while_loading_the_button_in_place_says_so_and_takes_no_clicks(
    start_swapd: Any, open_page: Any
) -> None:
    server = start_swapd("models:\n" + model("loads-slowly", "--loading-delay", "2"))
    page, _ = open_page()
    goto(page, server, "/ui/models")
    row = page.locator("tr[data-model='loads-slowly']")
    row.locator("button[data-action=load]").click()
    busy = row.locator("button[data-action=load]")
    expect(busy).to_have_text("Loading…")
    expect(busy).to_be_disabled()
    expect(row.locator("button[data-action=unload]")).to_have_count(0)  # not while loading
    expect(row.locator(".badge")).to_have_text("ready", timeout=15_000)


def test_unloading_a_busy_model_asks_first(start_swapd: Any, open_page: Any) -> None:
    # a stream of 40 chunks 0.25 s apart keeps one request in flight for 10 s
    config = "models:\n" + model("talker", "--chunks", "40", "--chunk-delay", "0.25")
    server = start_swapd(config)
    page, _ = open_page()
    goto(page, server, "/ui/models")
    row = page.locator("tr[data-model=talker]")
    row.locator("button[data-action=load]").click()
    expect(row.locator(".badge")).to_have_text("ready", timeout=15_000)
    outcome: list[object] = []

    def stream() -> None:
        body = {"model": "talker", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        try:
            with (
                httpx.Client(base_url=server.url, timeout=30) as client,
                client.stream("POST", "/v1/chat/completions", json=body) as reply,
            ):
                outcome.append(reply.read().decode())
        except httpx.HTTPError as exc:  # the unload may cut the connection instead
            outcome.append(exc)

    streaming = threading.Thread(target=stream)
    streaming.start()
    try:
        expect(row.locator(".state-cell")).to_contain_text("1 in flight", timeout=15_000)
        dialog = page.locator("dialog.confirm-dialog")
        row.locator("button[data-action=unload]").click()
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text("1 request in flight")
        dialog.get_by_role("button", name="Cancel").click()
        expect(dialog).to_have_count(0)
        assert states(server) == {"talker": "ready"}  # nothing was sent
        row.locator("button[data-action=unload]").click()
        dialog.get_by_role("button", name="Unload").click()
        expect(row.locator(".badge")).to_have_text("stopped", timeout=15_000)
    finally:
        streaming.join(timeout=30)
    assert not streaming.is_alive()
    [result] = outcome
    # the request in flight was cut off, not finished: its stream ends with an error
    assert isinstance(result, httpx.HTTPError) or "upstream_cut" in str(result), result


NARROW_CONFIG = (
    "models:\n"
    + model(LONG_ID, aliases=["llama-70b", "gpt-4o"])
    + model("fast", name="Fast demo", ttl=300)
    + "peers:\n  big-box:\n    proxy: http://127.0.0.1:9\n    models: [remote-70b]\n"
)

LINE_BREAKS = """(el) => {
    // each character of the ID (not its tags) with the top of the line it sits on
    const chars = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node; (node = walker.nextNode()); ) {
        if (node.parentElement.closest('.tag')) continue;
        for (let i = 0; i < node.length; i++) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const rect = range.getClientRects()[0];
            if (rect) chars.push([node.data[i], rect.top]);
        }
    }
    const before = [];  // the last character of every line but the last
    for (let i = 1; i < chars.length; i++) {
        if (chars[i][1] > chars[i - 1][1] + 2) before.push(chars[i - 1][0]);
    }
    return {text: chars.map((c) => c[0]).join(''), before};
}"""


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} scrolls sideways: {width}"


def test_at_420_px_nothing_scrolls_sideways_and_ids_wrap_between_words(
    start_swapd: Any, open_page: Any, artifacts: Any
) -> None:
    server = start_swapd(NARROW_CONFIG)
    with server.client() as client:
        client.post(f"/api/models/load/{LONG_ID}").raise_for_status()  # PID, port, Unload
    page, _ = open_page(width=420)
    goto(page, server, "/ui/models")
    row = page.locator("tr[data-model='fast']")
    expect(row.locator(".badge")).to_have_text("stopped")
    long_row = page.locator(f"tr[data-model='{LONG_ID}']")
    expect(long_row.locator(".badge")).to_have_text("ready")
    no_sideways_scroll(page)
    for wrap in page.locator(".table-wrap").all():  # no scroller hiding columns either
        assert wrap.evaluate("(el) => el.scrollWidth <= el.clientWidth")
    for control in page.locator(".topbar a, .topbar button:visible, main button").all():
        box = control.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420, box
    # the ID wraps, and only after a separator
    lines = long_row.locator(".model-id").evaluate(LINE_BREAKS)
    assert lines["text"] == LONG_ID
    assert lines["before"], "the long ID fits one line: the test no longer tests wrapping"
    assert all(char in SEPARATORS for char in lines["before"]), lines
    expect(long_row.locator(".alias")).to_have_text(["llama-70b", "gpt-4o"])
    expect(row).to_contain_text("Fast demo")
    shot(page, artifacts, "models-420px")
    # the filter finds a model by an alias
    page.get_by_placeholder("Filter models").fill("gpt-4o")
    expect(page.locator(".models-table tbody tr")).to_have_count(1)
    for path in ("/ui/logs", "/ui/activity", "/ui/playground", "/ui/config"):
        goto(page, server, path)
        no_sideways_scroll(page)
    shot(page, artifacts, "config-420px")
