"""Load progress bars (issue #20, item 3) and the memory / KV-cache facts of the models page
(issues #19 and #21), in headless Chromium against a real swapd process and demo upstreams.

- While a slow demo model loads (``--start-delay`` with ``--load-stages``, which prints
  llama-server-like stage lines), the models page and the playground show a progress bar
  fed by the event stream's ``loadProgress`` messages: it moves forward, names the stage,
  and goes away once the model is ready.
- With ``memory.budgets``, the models page shows each device's budget and what the models
  hold, and each running model its footprint; a model with ``kvCache`` shows its token counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import model
from test_ui import expect, goto, shot

SLOW = ("--load-stages", "--start-delay", "6")


def test_progress_bar_moves_through_the_stages_while_a_model_loads(
    start_swapd: Any, open_page: Any, artifacts: Path
) -> None:
    config = "healthCheckTimeout: 60\nmodels:\n" + model("slowpoke", *SLOW)
    server = start_swapd(config)
    page, _ = open_page()
    goto(page, server, "/ui/models")
    row = page.locator("tr[data-model=slowpoke]")
    row.locator("button[data-action=load]").click()
    bar = row.locator(".progress [role=progressbar]")
    expect(bar).to_be_visible(timeout=10_000)
    first = int(bar.get_attribute("aria-valuenow") or "0")
    # the demo prints "loading model tensors" a fifth into its start: the stage shows
    expect(row.locator(".progress")).to_have_attribute(
        "data-stage", "loading_weights", timeout=15_000
    )
    expect(row.locator(".progress-text")).to_contain_text("loading weights")
    later = int(bar.get_attribute("aria-valuenow") or "0")
    assert later > first >= 0, (first, later)
    expect(row.locator(".badge")).to_have_text("starting")
    shot(page, artifacts, "models-load-progress")
    expect(row.locator(".badge")).to_have_text("ready", timeout=30_000)
    expect(row.locator(".progress")).to_have_count(0)


def test_playground_shows_the_progress_of_the_model_it_waits_for(
    start_swapd: Any, open_page: Any, artifacts: Path
) -> None:
    config = "healthCheckTimeout: 60\nmodels:\n" + model("slowpoke", *SLOW)
    server = start_swapd(config)
    page, _ = open_page()
    goto(page, server, "/ui/playground")
    page.get_by_label("Model", exact=True).select_option("slowpoke")
    page.get_by_label("Message").fill("Hello?")
    page.get_by_label("Message").press("Enter")
    waiting = page.locator(".msg-assistant .waiting")
    expect(waiting).to_contain_text("Waiting for slowpoke to load", timeout=10_000)
    expect(waiting.locator(".progress [role=progressbar]")).to_be_visible(timeout=10_000)
    expect(waiting.locator(".progress-text")).to_contain_text("%")
    expect(waiting.locator(".progress")).to_have_attribute(
        "data-stage", "loading_weights", timeout=15_000
    )
    shot(page, artifacts, "playground-load-progress")
    expect(page.locator(".msg-assistant .msg-body")).to_contain_text("Hello", timeout=30_000)
    expect(page.locator(".progress")).to_have_count(0)


def memory_config(tmp_path: Path) -> str:
    return (
        "memory:\n  budgets:\n    ram: 2GiB\n"
        f"kvCache:\n  dir: {tmp_path / 'kv'}\n"
        "models:\n"
        + model("held", "--hold-mib", "8")
        + "    footprint: {ram: 96MiB}\n    footprintLearn: false\n"
        + "    kvCache:\n      enabled: true\n      saveTimeout: 2\n"
    )


def test_models_page_shows_budgets_footprints_and_kv_cache_tokens(
    start_swapd: Any, open_page: Any, artifacts: Path, tmp_path: Path
) -> None:
    server = start_swapd(memory_config(tmp_path))
    page, _ = open_page()
    goto(page, server, "/ui/models")
    card = page.locator(".memory-card")
    expect(card).to_be_visible()  # a budget exists, even with nothing loaded
    ram = card.locator("[data-device=ram]")
    expect(ram.locator("[data-fact=budget]")).to_have_text("2.0 GiB")
    expect(ram.locator("[data-fact=held]")).to_have_text("0 B")
    row = page.locator("tr[data-model=held]")
    row.locator("button[data-action=load]").click()
    expect(row.locator(".badge")).to_have_text("ready", timeout=15_000)
    expect(ram.locator("[data-fact=held]")).to_have_text("96.0 MiB", timeout=10_000)
    expect(ram.locator("[data-fact=budgetFree]")).to_have_text("1.9 GiB")
    with server.client() as client:
        entry = client.get("/running").json()["running"][0]
    kv = entry["kvCache"]
    expect(row.locator("[data-fact=footprint]")).to_have_text("footprint ram 96.0 MiB (declared)")
    expect(row.locator("[data-fact=kvCache]")).to_have_text(
        f"KV cache {kv['restoredTokens']} restored · {kv['savedTokens']} saved (0 B)"
    )
    shot(page, artifacts, "models-memory")
    page.set_viewport_size({"width": 420, "height": 800})
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], width
    shot(page, artifacts, "models-memory-420")


def test_no_memory_panel_without_budgets(start_swapd: Any, open_page: Any) -> None:
    server = start_swapd("models:\n" + model("plain"))
    page, _ = open_page()
    goto(page, server, "/ui/models")
    expect(page.locator("tr[data-model=plain]")).to_be_visible()
    expect(page.locator(".memory-card")).to_be_hidden()
