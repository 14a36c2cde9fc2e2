"""The models page's hardware card (issue #18, item 3) in headless Chromium against a real
swapd: folded at first; opened, the machine /api/hardware found and the latest
/api/performance sample; it stays open across reloads.

The routes come with the ``obs2`` branch; on a swapd without them the test skips, saying so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import model
from test_ui import expect, goto, shot


def test_hardware_card_shows_the_machine_and_the_latest_sample(
    start_swapd: Any, open_page: Any, artifacts: Path
) -> None:
    server = start_swapd("performance:\n  every: 5s\nmodels:\n" + model("plain"))
    with server.client() as client:
        hardware = client.get("/api/hardware")
        if hardware.status_code == 404:
            pytest.skip("this swapd has no /api/hardware (the obs2 branch adds it)")
        hardware.raise_for_status()
        machine = hardware.json()
    page, _ = open_page()
    goto(page, server, "/ui/models")
    card = page.locator(".hardware-card")
    expect(card).not_to_have_attribute("open", "")  # folded until asked for
    card.locator("summary").click()
    expect(card).to_have_attribute("open", "")
    threads = machine["cpu"]["logical_thread_count"]
    expect(card.locator("[data-fact=cpu]")).to_contain_text(f"{threads} threads")
    gpus = card.locator("[data-fact=gpus]")
    if machine["accelerators"]:
        expect(gpus).to_contain_text(machine["accelerators"][0]["model"])
    else:
        expect(gpus).to_have_text("none found")
    # the sampler's first sample, read by the page's 5 s poll
    expect(card.locator("[data-fact=cpuBusy]")).to_have_text(re.compile(r"^\d+%$"), timeout=20_000)
    expect(card.locator("[data-fact=memUsed]")).to_contain_text(" / ")
    shot(page, artifacts, "models-hardware")
    page.reload()  # the card stays open
    expect(page.locator(".hardware-card [data-fact=cpu]")).to_contain_text(f"{threads} threads")
