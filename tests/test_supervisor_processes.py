"""The supervisor with real child processes: group kill, escalation, cmdStop, port checks,
sleep/wake over HTTP, crashes. Real clock, short bounds; the autouse fixture in
conftest.py fails any test that leaves a model process behind."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import trio

from swapd.supervise.lifeline import marked_processes
from swapd.testing import open_swapd, upstream_cmd


def ours() -> set[int]:
    prefix = f"{os.getpid()}:"
    return {
        pid for pid, value in marked_processes("SWAPD_INSTANCE").items() if value.startswith(prefix)
    }


def model(name: str, *flags: str, extra: str = "") -> str:
    lines = [
        f"  {name}:",
        f"    cmd: {upstream_cmd('--model', name, '--respond', f'hi from {name}', *flags)}",
        "    proxy: http://127.0.0.1:${PORT}",
    ]
    lines.extend("    " + line for line in extra.splitlines() if line.strip())
    return "\n".join(lines) + "\n"


def chat(name: str) -> dict[str, object]:
    return {"model": name, "messages": [{"role": "user", "content": "hello"}]}


async def test_unload_kills_the_whole_process_group_grandchild_included() -> None:
    config = "models:\n" + model("m", "--spawn-grandchild")
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            assert (await client.post("/v1/chat/completions", json=chat("m"))).status_code == 200
            running = ours()
            assert len(running) == 2  # the server and the grandchild it spawned
            await client.post("/api/models/unload/m")
            assert ours() == set()


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace() -> None:
    config = "models:\n" + model("stubborn", "--ignore-sigterm")
    with trio.fail_after(30):
        async with (
            open_swapd(config, stop_grace=0.5) as swapd,
            httpx.AsyncClient(base_url=swapd.url) as client,
        ):
            await client.post("/api/models/load/stubborn")
            assert len(ours()) == 1
            started = time.monotonic()
            await client.post("/api/models/unload/stubborn")
            took = time.monotonic() - started
            assert ours() == set()
            assert 0.5 <= took < 5


async def test_cmd_stop_is_used_with_the_pid(tmp_path: Path) -> None:
    marker = tmp_path / "stopped-by-cmdstop"
    stop = f"sh -c 'echo $0 > {marker}; kill -TERM $0' ${{PID}}"
    config = "models:\n" + model("m", extra=f'cmdStop: "{stop}"')
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            await client.post("/api/models/load/m")
            pid = (await client.get("/running")).json()["running"][0]["pid"]
            await client.post("/api/models/unload/m")
            assert marker.read_text().strip() == str(pid)
            assert ours() == set()


async def test_a_taken_port_is_refused_before_spawning() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cmd = upstream_cmd("--model", "m").replace("${PORT}", str(port))
        config = f"models:\n  m:\n    cmd: {cmd}\n    proxy: http://127.0.0.1:{port}\n"
        with trio.fail_after(30):
            async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
                reply = await client.post("/v1/chat/completions", json=chat("m"))
                assert reply.status_code == 502
                assert (
                    f"port {port} on 127.0.0.1 is already in use"
                    in reply.json()["error"]["message"]
                )
                assert ours() == set()


async def test_sleep_and_wake_over_http_keep_the_process() -> None:
    sleepy = "sleepEndpoints: [{endpoint: /sleep?level=1}]\nwakeEndpoints: [{endpoint: /wake_up}]"
    config = (
        "models:\n"
        + model("a", "--sleep-mode", extra=sleepy)
        + model("b", "--sleep-mode", extra=sleepy)
    )
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            first = await client.post("/v1/chat/completions", json=chat("a"))
            pid_a = (await client.get("/running")).json()["running"][0]["pid"]
            await client.post("/v1/chat/completions", json=chat("b"))
            running = {r["model"]: r for r in (await client.get("/running")).json()["running"]}
            why = swapd.services.supervisor.runner("a").last_error
            assert {m: r["state"] for m, r in running.items()} == {"a": "asleep", "b": "ready"}, why
            # ask the sleeping server itself (through swapd the request would wake it)
            async with httpx.AsyncClient(base_url=running["a"]["proxy"]) as direct:
                assert (await direct.get("/is_sleeping")).json()["is_sleeping"] is True
            again = await client.post("/v1/chat/completions", json=chat("a"))
            running = {r["model"]: r for r in (await client.get("/running")).json()["running"]}
            assert running["a"]["state"] == "ready"
            assert running["a"]["pid"] == pid_a  # woken, not restarted
            assert running["b"]["state"] == "asleep"
            assert first.json()["choices"][0]["message"]["content"] == "hi from a"
            assert again.json()["choices"][0]["message"]["content"] == "hi from a"


async def test_explicit_sleep_and_wake_routes() -> None:
    sleepy = "sleepEndpoints: [{endpoint: /sleep}]\nwakeEndpoints: [{endpoint: /wake_up}]"
    config = "models:\n" + model("a", "--sleep-mode", extra=sleepy) + model("plain")
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            not_ready = await client.post("/api/models/sleep/a")
            assert not_ready.status_code == 409
            assert "is stopped, not ready" in not_ready.json()["error"]["message"]
            assert (await client.post("/api/models/load/a")).status_code == 200
            pid = (await client.get("/running")).json()["running"][0]["pid"]

            reply = await client.post("/api/models/sleep/a")
            assert reply.status_code == 200
            assert reply.json()["state"] == "asleep"
            [entry] = (await client.get("/running")).json()["running"]
            assert (entry["state"], entry["pid"]) == ("asleep", pid)
            async with httpx.AsyncClient(base_url=entry["proxy"]) as direct:
                assert (await direct.get("/is_sleeping")).json()["is_sleeping"] is True

            reply = await client.post("/api/models/wake/a")
            assert reply.status_code == 200
            [entry] = (await client.get("/running")).json()["running"]
            assert (entry["state"], entry["pid"]) == ("ready", pid)  # woken, not restarted

            no_sleep = await client.post("/api/models/sleep/plain")
            assert no_sleep.status_code == 409
            assert "no sleep mode" in no_sleep.json()["error"]["message"]
            assert (await client.post("/api/models/sleep/nope")).status_code == 404


async def test_failed_wake_falls_back_to_a_cold_start() -> None:
    sleepy = "sleepEndpoints: [{endpoint: /sleep}]\nwakeEndpoints: [{endpoint: /wake_up}]"
    config = (
        "models:\n"
        + model("a", "--sleep-mode", "--fail-wake", extra=sleepy)
        + model("b", "--sleep-mode", extra=sleepy)
    )
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            await client.post("/v1/chat/completions", json=chat("a"))
            pid_a = (await client.get("/running")).json()["running"][0]["pid"]
            await client.post("/v1/chat/completions", json=chat("b"))
            reply = await client.post("/v1/chat/completions", json=chat("a"))
            assert reply.status_code == 200
            running = {r["model"]: r for r in (await client.get("/running")).json()["running"]}
            assert running["a"]["pid"] != pid_a


async def test_a_crash_is_followed_by_a_restart_on_the_next_request() -> None:
    config = "models:\n" + model("m", "--exit-after", "1.0", "--exit-code", "7")
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            with swapd.services.bus.subscribe() as events:
                await client.post("/api/models/load/m")
                await trio.sleep(1.5)
                assert (await client.get("/running")).json()["running"] == []
                reply = await client.post("/v1/chat/completions", json=chat("m"))
                assert reply.status_code == 200
                seen = []
                while (event := events.receive_nowait()) is not None:
                    seen.append(event)
            crash = [e for e in seen if getattr(e, "reason", "").startswith("exited unexpectedly")]
            assert len(crash) == 1
            assert "exit code 7" in crash[0].error


async def test_shutdown_stops_every_model_including_grandchildren() -> None:
    config = (
        "models:\n"
        + model("a", "--spawn-grandchild")
        + model("b")
        + ("groups:\n  all: {swap: false, exclusive: false, members: [a, b]}\n")
    )
    with trio.fail_after(30):
        async with open_swapd(config) as swapd, httpx.AsyncClient(base_url=swapd.url) as client:
            await client.post("/api/models/load/a")
            await client.post("/api/models/load/b")
            assert len(ours()) == 3
        assert ours() == set()
