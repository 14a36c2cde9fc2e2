"""Kept models (persistent groups, preloads) come back after a crash, with back-off, and
swapd gives up on one that keeps crashing. Mock clock, scripted fake models."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from swapd.core.events import ModelRestart
from swapd.core.restart import CrashHistory, RestartPolicy
from swapd.core.states import ModelState
from swapd.testing.harness import Script, open_swap_harness

KEPT = """
groups:
  always:
    persistent: true
    swap: false
    members: [p]
models:
  p:
    cmd: server --port ${PORT}
  q:
    cmd: server --port ${PORT}
"""


def test_back_off_doubles_and_gives_up_within_the_window() -> None:
    history = CrashHistory(RestartPolicy(limit=4, window=100.0, first=1.0, most=3.0))
    assert [history.crashed(t) for t in (0.0, 10.0, 20.0)] == [1.0, 2.0, 3.0]
    assert history.crashed(30.0) is None
    assert history.gave_up
    history.reset()
    assert history.crashed(200.0) == 1.0
    # crashes older than the window are forgotten
    assert [history.crashed(t) for t in (201.0, 400.0)] == [2.0, 1.0]


async def test_a_crashing_persistent_model_is_restarted_then_given_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scripts = {"p": Script(start_delay=1.0, crash_after=5.0), "q": Script(start_delay=1.0)}
    events: list[ModelRestart] = []
    async with open_swap_harness(KEPT, scripts) as harness:
        supervisor = harness.supervisor
        with supervisor.bus.watch(
            lambda e: events.append(e) if isinstance(e, ModelRestart) else None
        ):
            await supervisor.load("p")
            while not any(e.state == "gaveUp" for e in events):  # noqa: ASYNC110
                await trio.sleep(1)
            [stat] = [s for s in supervisor.statistics() if s.model == "p"]
            assert stat.gave_up
            assert stat.crashes == 5
            assert stat.state is ModelState.STOPPED
            await trio.sleep(120)  # nothing restarts it any more
            assert harness.launches.count("p") == 5
            # someone asks for it: swapd tries again, afresh
            await supervisor.load("p")
            [stat] = [s for s in supervisor.statistics() if s.model == "p"]
            assert (stat.state, stat.gave_up, stat.crashes) == (ModelState.READY, False, 0)
            await supervisor.unload("p")
    assert [e.state for e in events] == ["scheduled"] * 4 + ["gaveUp"]
    assert [e.delay for e in events[:4]] == [1.0, 2.0, 4.0, 8.0]
    assert all("exited unexpectedly" in (e.error or "") for e in events)
    launches = [r.at for r in harness.events("launch") if r.model == "p"]
    # each relaunch follows the crash (launch + 1 s start + 5 s up) by its back-off
    gaps = [b - a for a, b in itertools.pairwise(launches)]
    assert [round(g - 6.0, 3) for g in gaps[:4]] == [1.0, 2.0, 4.0, 8.0]


async def test_an_ordinary_model_is_not_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scripts = {"q": Script(start_delay=1.0, crash_after=2.0)}
    async with open_swap_harness(KEPT, scripts) as harness:
        await harness.supervisor.load("q")
        await trio.sleep(60)
        assert harness.launches == ["q"]
        [stat] = [s for s in harness.supervisor.statistics() if s.model == "q"]
        assert (stat.state, stat.crashes, stat.gave_up) == (ModelState.STOPPED, 0, False)


async def test_a_preloaded_model_is_kept_too(autojump_clock: trio.testing.MockClock) -> None:
    config = "hooks:\n  on_startup:\n    preload: [q]\n" + KEPT
    scripts = {"q": Script(start_delay=1.0, crash_after=3.0)}
    async with open_swap_harness(config, scripts) as harness:
        await harness.supervisor.load("q")
        await trio.sleep(5)  # crashed at 4, back at 4 + 1 + 1
        assert harness.launches == ["q", "q"]
        await harness.supervisor.unload("q")  # an unload is not a crash
        await trio.sleep(60)
        assert harness.launches == ["q", "q"]


async def test_a_real_persistent_model_comes_back_after_a_crash() -> None:
    import httpx

    from swapd.testing import open_swapd, upstream_cmd

    config = (
        "groups:\n  always:\n    persistent: true\n    swap: false\n    members: [p]\n"
        "models:\n  p:\n"
        f"    cmd: {upstream_cmd('--model', 'p', '--exit-after', '1', '--exit-code', '3')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    restarts: list[ModelRestart] = []
    with trio.fail_after(30):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            with swapd.services.bus.watch(
                lambda e: restarts.append(e) if isinstance(e, ModelRestart) else None
            ):
                assert (await client.post("/api/models/load/p")).status_code == 200
                [first] = (await client.get("/running")).json()["running"]
                while not restarts:  # noqa: ASYNC110 - waiting on a real process
                    await trio.sleep(0.05)
                while True:
                    running = (await client.get("/running")).json()["running"]
                    if running and running[0]["state"] == "ready":
                        break
                    await trio.sleep(0.05)
    assert running[0]["pid"] != first["pid"]
    assert running[0]["crashes"] == 1
    assert restarts[0].state == "scheduled"
    assert restarts[0].delay == 1.0
    assert "exit code 3" in (restarts[0].error or "")
