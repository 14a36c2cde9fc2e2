"""``kill -9`` swapd in the middle of traffic: the activity history keeps every request
that was answered before the kill, give or take the documented loss window.

The store commits a batch at most ``COMMIT_INTERVAL`` after its first row, and a row is
queued just after its response has been sent (docs/reliability.md, "The activity store").
So the test notes what was answered, lets the traffic go on for the commit interval plus
a generous allowance for writing one batch on a loaded machine, then kills swapd while
requests are still in flight, starts it again on the same database and looks for each
of those answers by its unique prompt size (the demo upstream counts prompt words).
"""

from __future__ import annotations

import itertools
import signal
from pathlib import Path

import httpx
import pytest
import trio

from swapd.observe.store import COMMIT_INTERVAL
from swapd.testing.process import run_swapd
from swapd.testing.server import free_port_base, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

WORKERS = 6
ANSWERED_BEFORE_CUTOFF = 40
WRITE_ALLOWANCE = 2.0  # seconds: one batch write, on a machine shared with other work


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "swapd.yaml"
    path.write_text(
        f"startPort: {free_port_base()}\n"
        "models:\n"
        "  m1:\n"
        f"    cmd: {upstream_cmd('--model', 'm1')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
        "    concurrencyLimit: 64\n"
    )
    return path


def chat(words: int) -> dict[str, object]:
    return {"model": "m1", "messages": [{"role": "user", "content": " ".join(["w"] * words)}]}


async def traffic(url: str, answered: list[int], enough: trio.Event) -> None:
    """Requests from WORKERS clients, each with a prompt of a size no other has, until
    cancelled; ``answered`` gets the size of every request answered with 200."""
    sizes = itertools.count(1)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while True:
                words = next(sizes)
                try:
                    reply = await client.post("/v1/chat/completions", json=chat(words))
                except httpx.TransportError:
                    return  # swapd is gone
                if reply.status_code == 200:
                    answered.append(words)
                    if len(answered) >= ANSWERED_BEFORE_CUTOFF:
                        enough.set()

    async with trio.open_nursery() as nursery:
        for _ in range(WORKERS):
            nursery.start_soon(worker)


async def all_rows(url: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for page in itertools.count(1):
            body = (
                await client.get("/api/metrics/activity", params={"limit": 999, "page": page})
            ).json()
            rows += body["data"]
            if page >= body["total_pages"]:
                return rows
    raise AssertionError("unreachable")


async def test_sigkill_mid_traffic_loses_no_answered_request(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    answered: list[int] = []
    with run_swapd(config) as swapd:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                enough = trio.Event()
                nursery.start_soon(traffic, swapd.url, answered, enough)
                await enough.wait()
                before_cutoff = set(answered)
                # the traffic goes on; the rows of the answers so far are committed meanwhile
                await trio.sleep(COMMIT_INTERVAL + WRITE_ALLOWANCE)
                in_flight_at_kill = len(answered)
                swapd.proc.send_signal(signal.SIGKILL)
                nursery.cancel_scope.cancel()
        assert swapd.proc.wait(timeout=10) == -signal.SIGKILL
    assert in_flight_at_kill > len(before_cutoff)  # the kill did land mid-traffic
    with run_swapd(config) as again:
        with trio.fail_after(60):
            rows = await all_rows(again.url)
    recorded = [r["tokens"]["input_tokens"] for r in rows if r["resp_status_code"] == 200]  # type: ignore[index]
    assert before_cutoff <= set(recorded), sorted(before_cutoff - set(recorded))
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
