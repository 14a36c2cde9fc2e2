"""Load-time prediction survives a restart: two swapd runs on one store file.

The demo upstream waits before it listens (``--start-delay``), so each cold start takes a
measurable time. The first run records the load in the store's ``loads`` table; the
second run's first load is predicted from that row (basis ``history``), not the default.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import openai
import pytest
import trio

from swapd.core.events import LoadProgressed
from swapd.observe.loads import command_hash
from swapd.testing import open_swapd, upstream_cmd
from swapd.testing.server import free_port_base


def config(store: Path) -> str:
    cmd = upstream_cmd("--model", "slow", "--respond", "hello", "--start-delay", "1")
    return (
        # One port range for both runs: the port is part of the command line swapd runs.
        f"startPort: {free_port_base()}\nhealthCheckTimeout: 60\nstore:\n  path: {store}\n"
        f"models:\n  slow:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:${{PORT}}\n"
    )


async def load_once(text: str) -> tuple[list[LoadProgressed], str]:
    """Start swapd, make it load ``slow`` with one chat request, stop it; the readings
    and the model's command line as swapd ran it."""
    seen: list[LoadProgressed] = []
    ready = trio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, LoadProgressed):
            seen.append(event)
            if event.stage == "ready":
                ready.set()

    async with open_swapd(text) as swapd:
        cmd = swapd.services.config.models["slow"].cmd
        with swapd.services.bus.watch(on_event):
            async with openai.AsyncOpenAI(
                base_url=swapd.url + "/v1", api_key="sk-any", max_retries=0, timeout=90
            ) as client:
                reply = await client.chat.completions.create(
                    model="slow", messages=[{"role": "user", "content": "hi"}]
                )
            assert reply.choices[0].message.content == "hello"
            await ready.wait()  # the final reading is published
    return seen, cmd


async def test_a_restart_keeps_the_load_time_prediction(tmp_path: Path) -> None:
    store = tmp_path / "activity.db"
    text = config(store)
    with trio.fail_after(120):
        first, cmd = await load_once(text)
    assert first[0].prediction_basis == "default"
    with sqlite3.connect(store) as conn:
        rows = conn.execute("SELECT model_id, cmd_hash, kind, outcome, duration_ms FROM loads")
        loads = rows.fetchall()
    assert len(loads) == 1
    model_id, cmd_hash, kind, outcome, duration_ms = loads[0]
    assert (model_id, kind, outcome) == ("slow", "start", "ready")
    assert duration_ms >= 1000  # the upstream's start delay
    # The store's rows and the prediction key on the same digest of the command line.
    assert cmd_hash == command_hash(cmd)

    with trio.fail_after(120):
        second, _ = await load_once(text)
    assert second[0].prediction_basis == "history"
    assert second[0].predicted == pytest.approx(duration_ms / 1000)
