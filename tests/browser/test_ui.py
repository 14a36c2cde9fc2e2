"""The web UI in headless Chromium against a real swapd process and demo upstreams.

Each test drives one page the way a user would and waits for what the live event stream
should make appear, with no page reload; each saves a screenshot to the artifacts folder.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from swapd.testing.server import upstream_cmd

expect: Any
try:
    from playwright.sync_api import expect
except ImportError:  # the fixtures skip (or fail) with the reason
    expect = None


def model_yaml(model_id: str) -> str:
    return f"  {model_id}:\n    cmd: {upstream_cmd('--model', model_id)}\n    proxy: http://127.0.0.1:${{PORT}}\n"


CHAT = {"model": "fast", "messages": [{"role": "user", "content": "count to three"}]}


def goto(page: Any, swapd: Any, path: str) -> None:
    """Open ``path`` and wait until the page is live: its event stream is open and it knows
    what the key may do (until then app.css hides the admin buttons: no box to click)."""
    page.goto(f"{swapd.url}{path}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator("html")).to_have_attribute("data-role", re.compile(r"\w"))


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def test_models_page_loads_a_model_and_shows_it_ready_live(
    swapd: Any, open_page, artifacts
) -> None:
    page, _ = open_page()
    goto(page, swapd, "/ui/")
    row = page.locator("tr[data-model=fast]")
    expect(row.locator(".badge")).to_have_text("stopped")
    expect(row).to_contain_text("Fast demo")
    expect(row).to_contain_text("5m")  # the TTL
    expect(page.locator(".peers-table")).to_contain_text("remote-70b")
    expect(page.locator(".peers-table")).to_contain_text("big-box")
    row.locator("button[data-action=load]").click()
    expect(row.locator(".badge")).to_have_text("ready", timeout=15_000)
    expect(row.locator("td").nth(4)).to_have_text(re.compile(r"^\d+$"))  # the PID
    expect(row.locator("button[data-action=unload]")).to_be_visible()
    # a request ends: the TTL starts counting down
    with swapd.client() as client:
        client.post("/v1/chat/completions", json=CHAT).raise_for_status()
    expect(row.locator(".ttl")).to_contain_text(re.compile(r"[45]:\d\d"))
    expect(row.locator(".state-cell")).to_have_text("ready")  # no stale "1 waiting"
    expect(page.locator("#inflight")).to_have_text("")
    shot(page, artifacts, "models")
    row.locator("button[data-action=unload]").click()
    expect(row.locator(".badge")).to_have_text("stopped", timeout=15_000)


def test_sleep_and_wake_buttons_follow_the_model(swapd: Any, open_page) -> None:
    page, _ = open_page()
    goto(page, swapd, "/ui/models")
    with swapd.client() as client:
        client.post("/api/models/load/colour").raise_for_status()  # ready, but cannot sleep
    row = page.locator("tr[data-model=sleepy]")
    row.locator("button[data-action=load]").click()
    expect(row.locator(".badge")).to_have_text("ready", timeout=15_000)
    expect(page.locator("tr[data-model=colour] .badge")).to_have_text("ready")
    expect(page.locator("button[data-action=sleep]")).to_have_count(1)  # sleepy's only
    row.locator("button[data-action=sleep]").click()
    expect(row.locator(".badge")).to_have_text("asleep", timeout=15_000)
    row.locator("button[data-action=wake]").click()
    expect(row.locator(".badge")).to_have_text("ready", timeout=15_000)
    with swapd.client() as client:
        client.post("/api/models/unload").raise_for_status()


def test_logs_page_shows_new_lines_live_with_ansi_colours(swapd: Any, open_page, artifacts) -> None:
    page, _ = open_page()
    goto(page, swapd, "/ui/logs")
    log = page.locator("pre.log")
    expect(page.locator(".log-conn")).to_have_attribute("data-state", "open")
    with swapd.client() as client:
        client.post("/api/models/load/colour").raise_for_status()
    expect(log).to_contain_text("<colour> starting -> ready")  # swapd's own log, live
    # filtering keeps only matching lines
    page.get_by_placeholder("Filter lines").fill("colour> starting")
    expect(page.locator(".log-status")).to_contain_text(re.compile(r"^\d+ of \d+ lines"))
    shown = log.locator(".log-line").all_inner_texts()
    assert shown and all("<colour> starting" in line for line in shown), shown
    page.get_by_placeholder("Filter lines").fill("")
    # the model's own output, its escape codes rendered as colours
    page.get_by_label("Log source").select_option("colour")
    marker = log.locator("span.ansi-fg-1.ansi-bold", has_text="colour-marker")
    expect(marker).to_be_visible()
    expect(log).to_contain_text("colour-marker plain-tail")
    expect(log).not_to_contain_text("[1;31m")
    shot(page, artifacts, "logs")
    # pause holds new text back; resume shows it
    page.get_by_role("button", name="Pause").click()
    lines = log.locator(".log-line").count()
    with swapd.client() as client:
        client.post("/v1/chat/completions", json={**CHAT, "model": "colour"}).raise_for_status()
    expect(page.locator(".log-status")).to_contain_text("paused")
    assert log.locator(".log-line").count() == lines
    page.get_by_role("button", name="Resume").click()
    expect(log).to_contain_text("POST /v1/chat/completions 200")
    with swapd.client() as client:
        client.post("/api/models/unload/colour").raise_for_status()


def test_ansi_renderer_handles_styles_and_drops_other_escapes(swapd: Any, open_page) -> None:
    page, _ = open_page()
    goto(page, swapd, "/ui/logs")
    nodes = page.evaluate(
        """async () => {
            const {ansiToNodes, newAnsiState} = await import('/ui/js/ansi.js');
            const state = newAnsiState();
            const nodes = [
                ...ansiToNodes('a\\x1b[32mgreen\\x1b[0m \\x1b[2Kb\\x1b]0;title\\x07c', state),
                ...ansiToNodes('\\x1b[38;5;196mred256\\x1b[4mu', state),
                ...ansiToNodes('still', state),  // the style carries over
            ];
            return nodes.map((n) => [n.textContent, n.className || '', n.style?.color || '']);
        }"""
    )
    assert nodes == [
        ["a", "", ""],
        ["green", "ansi-fg-2", ""],
        [" ", "", ""],
        ["b", "", ""],
        ["c", "", ""],
        ["red256", "", "rgb(255, 0, 0)"],
        ["u", "ansi-underline", "rgb(255, 0, 0)"],
        ["still", "ansi-underline", "rgb(255, 0, 0)"],
    ]


def test_playground_streams_a_reply_while_showing_the_model_loading(
    swapd: Any, open_page, artifacts
) -> None:
    with swapd.client() as client:
        client.post("/api/models/unload").raise_for_status()
    page, _ = open_page()
    goto(page, swapd, "/ui/playground")
    page.get_by_label("Model", exact=True).select_option("slow")
    # record every length the reply had, to see it grow piece by piece
    page.evaluate(
        """() => {
            window.lengths = [];
            new MutationObserver(() => {
                const body = document.querySelector('.msg-assistant .msg-body');
                if (body) window.lengths.push(body.textContent.length);
            }).observe(document.querySelector('.chat-log'), {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.get_by_label("Message").fill("Please count.")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".msg-user")).to_have_text("Please count.")
    waiting = page.locator(".msg-assistant .waiting")
    expect(waiting).to_contain_text("Waiting for slow to load")
    expect(waiting.locator(".badge")).to_have_text("starting")
    shot(page, artifacts, "playground-loading")
    reply = page.locator(".msg-assistant .msg-body")
    expect(reply).to_have_text(
        "one two three four five six seven eight nine ten eleven twelve", timeout=15_000
    )
    expect(page.locator(".msg-stats")).to_contain_text("tokens")
    lengths = page.evaluate("window.lengths")
    assert len(set(lengths)) >= 4, lengths  # it streamed, not all at once
    shot(page, artifacts, "playground")


def test_activity_page_updates_live_and_opens_a_capture(swapd: Any, open_page, artifacts) -> None:
    page, _ = open_page()
    goto(page, swapd, "/ui/activity")
    with swapd.client() as client:
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as r:
            r.read()
        for _ in range(100):  # the store commits in batches; the page hears of each row
            rows = client.get("/api/metrics/activity", params={"limit": 1}).json()["data"]
            if (
                rows
                and rows[0]["req_path"] == "/v1/chat/completions"
                and rows[0]["model"] == "fast"
            ):
                break
            time.sleep(0.05)
    record_id = rows[0]["id"]
    row = page.locator(f".activity-table tr[data-id='{record_id}']")
    expect(row).to_contain_text("fast")
    expect(row.locator("td").nth(6)).to_have_text("6")  # tokens out: the 6 chunks
    expect(page.locator(".chart-series[data-model=fast] circle").first).to_be_attached()
    row.get_by_role("button", name="View").click()
    dialog = page.locator("dialog.capture-dialog")
    expect(dialog).to_contain_text("/v1/chat/completions")
    request_side, response_side = dialog.locator(".capture-side").all()
    expect(request_side.locator("pre.code")).to_contain_text(
        '"content": "count to three"'
    )  # pretty JSON
    expect(response_side).to_contain_text("Text/Event-Stream".lower())
    expect(response_side.locator(".sse-events li").first).to_be_visible()
    expect(response_side.locator(".assembled")).to_contain_text(
        "Hello from the swapd demo upstream."
    )
    shot(page, artifacts, "activity-capture")
    dialog.get_by_role("button", name="Close").click()
    expect(dialog).to_have_count(0)
    shot(page, artifacts, "activity")


def test_config_page_shows_the_yaml_and_reloads(swapd: Any, open_page, artifacts) -> None:
    page, errors = open_page()
    goto(page, swapd, "/ui/config")
    yaml = page.locator("pre.yaml")
    expect(yaml).to_contain_text("captureBuffer: 5")
    expect(page.locator(".facts")).to_contain_text(str(swapd.config_file))
    page.get_by_role("button", name="Reload").click()
    expect(page.locator(".reload-result")).to_contain_text("Reloaded")
    shot(page, artifacts, "config")
    swapd.config_file.write_text(swapd.config_text + "maxQueuedRequests: lots\n")
    try:
        page.get_by_role("button", name="Reload").click()
        expect(page.locator(".toast-error")).to_contain_text("Config not reloaded")
        expect(page.locator(".reload-result")).to_contain_text("Reload failed")
        expect(page.locator(".reload-result")).to_contain_text(
            "expected a whole number, found 'lots'"
        )
        expect(yaml).to_contain_text("captureBuffer: 5")  # still the text that runs
        shot(page, artifacts, "config-reload-failed")
    finally:
        swapd.config_file.write_text(swapd.config_text)
    errors.allow(lambda e: "400" in e)  # the browser logs the refused reload


def test_api_key_is_asked_once_then_sent(
    keyed_swapd: Any, api_key: str, open_page, artifacts
) -> None:
    page, errors = open_page()
    page.goto(f"{keyed_swapd.url}/ui/models")
    dialog = page.locator("dialog.key-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("API key").fill("wrong-key")
    dialog.get_by_role("button", name="Use key").click()
    expect(page.locator("dialog.key-dialog")).to_contain_text("not accepted")
    shot(page, artifacts, "api-key")
    page.locator("dialog.key-dialog").get_by_label("API key").fill(api_key)
    page.locator("dialog.key-dialog").get_by_role("button", name="Use key").click()
    expect(page.locator("dialog.key-dialog")).to_have_count(0)
    expect(page.locator("#conn")).to_have_attribute(
        "data-state", "open"
    )  # the SSE stream, with the key
    expect(page.locator("tr[data-model=fast] .badge")).to_have_text("stopped")
    # the key stays for the tab: a reload asks nothing
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator("dialog.key-dialog")).to_have_count(0)
    # and it works for streamed chat too
    page.locator(".nav a[data-page=playground]").click()
    page.get_by_label("Message").fill("hi")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".msg-assistant .msg-body")).to_have_text(
        "Hello from the swapd demo upstream.", timeout=15_000
    )
    errors.allow(lambda e: "401" in e)  # the refused calls before the key was given
    with keyed_swapd.client(api_key) as client:
        client.post("/api/models/unload").raise_for_status()


def test_event_stream_comes_back_after_swapd_restarts(start_swapd, open_page) -> None:
    first = start_swapd("models:\n" + model_yaml("fast"))
    page, errors = open_page()
    goto(page, first, "/ui/models")
    expect(page.locator("tr[data-model=fast]")).to_be_visible()
    first.kill()  # a crash: the stream drops at once (a graceful stop drains it first)
    expect(page.locator("#conn")).to_have_attribute("data-state", "retrying")
    start_swapd("models:\n" + model_yaml("fast") + model_yaml("newcomer"), base=first.base)
    expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15_000)
    # a fresh snapshot, from the new config
    expect(page.locator("tr[data-model=newcomer] .badge")).to_have_text("stopped")
    page.close()
    errors.allow(lambda e: "net::ERR_" in e)  # the cut stream, the refused reconnections


def test_every_page_in_the_dark_theme_by_the_nav_links(swapd: Any, open_page, artifacts) -> None:
    page, _ = open_page(color_scheme="dark")
    goto(page, swapd, "/ui/models")
    for name in ["models", "logs", "activity", "playground", "config"]:
        page.locator(f".nav a[data-page={name}]").click()
        url = f"{swapd.url}/ui/{name}" + ("?source=proxy" if name == "logs" else "")
        expect(page).to_have_url(url)
        expect(page.locator(f"#view[data-page={name}] h1")).to_have_text(name.capitalize())
        expect(page.locator(".nav a[aria-current=page]")).to_have_attribute("data-page", name)
        time.sleep(0.3)  # let live data settle for the picture
        shot(page, artifacts, f"{name}-dark")
    page.go_back()  # history works: back to the playground, no reload
    expect(page.locator("#view[data-page=playground]")).to_be_visible()
    # the theme button overrides the system's choice
    page.locator("#theme-button").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
