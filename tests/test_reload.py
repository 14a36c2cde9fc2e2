"""Config hot reload: the per-model diff, port keeping, and reloads of a real swapd.

The swapd tests run real demo upstreams and change a real file, then reload through
``POST /api/config/reload``, SIGHUP-free in-process (SIGHUP itself is covered with swapd
as a process in test_daemon_signals.py) and ``--watch-config``.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from event_feed import parse_sse

from swapd.config import load_config, parse_config
from swapd.config.diff import diff_configs
from swapd.core.events import ModelPreloaded
from swapd.testing import open_swapd, upstream_cmd
from swapd.testing.process import run_swapd
from swapd.testing.server import free_port_base

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def model_yaml(name: str, *flags: str, ttl: int = 0, extra: str = "") -> str:
    lines = [
        f"  {name}:",
        f"    cmd: {upstream_cmd('--model', name, *flags)}",
        "    proxy: http://127.0.0.1:${PORT}",
    ]
    if ttl:
        lines.append(f"    ttl: {ttl}")
    if extra:
        lines.append(f"    {extra}")
    return "\n".join(lines) + "\n"


def chat(model: str, **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


# --- the diff and port keeping (pure) --------------------------------------------------


BASE = """
startPort: 7000
models:
  b:
    cmd: server --port ${PORT}
  d:
    cmd: server --port ${PORT} --flag
    ttl: 5
  e:
    cmd: server --port ${PORT}
groups:
  g:
    members: [b, d]
"""


def test_diff_sorts_models_into_added_removed_changed_updated_unchanged() -> None:
    old = parse_config(BASE)
    new = parse_config(
        BASE.replace("--flag", "--other-flag")  # d's process changes
        .replace("  e:\n    cmd: server --port ${PORT}\n", "")  # e removed
        .replace("models:\n", "models:\n  a:\n    cmd: server --port ${PORT}\n    ttl: 9\n")
        .replace("    ttl: 5\n", "    ttl: 5\n    aliases: [dee]\n"),
        keep_ports={m: s.port for m, s in old.models.items() if s.port},
    )
    diff = diff_configs(old, new)
    assert diff.added == ("a",)
    assert diff.removed == ("e",)
    assert diff.changed == ("d",)
    assert diff.unchanged == ("b",)
    assert diff.updated == ()


def test_settings_that_do_not_touch_the_process_are_updates() -> None:
    old = parse_config(BASE)
    new = parse_config(BASE.replace("ttl: 5", "ttl: 50"))
    assert diff_configs(old, new).updated == ("d",)
    moved = parse_config(BASE.replace("members: [b, d]", "members: [b]"))
    assert diff_configs(old, moved).updated == ("d",)


def test_a_new_model_does_not_renumber_the_ports_of_existing_ones() -> None:
    old = parse_config(BASE)
    assert {m: s.port for m, s in old.models.items()} == {"b": 7000, "d": 7001, "e": 7002}
    text = BASE.replace("models:\n", "models:\n  a:\n    cmd: server --port ${PORT}\n")
    keep = {m: s.port for m, s in old.models.items() if s.port}
    new = parse_config(text, keep_ports=keep)
    assert {m: s.port for m, s in new.models.items()} == {
        "a": 7003,
        "b": 7000,
        "d": 7001,
        "e": 7002,
    }
    assert diff_configs(old, new).unchanged == ("b", "d", "e")
    # Without keeping, the new model takes the first number and the others shift.
    assert parse_config(text).models["b"].port == 7001


# --- reloads of a real swapd ------------------------------------------------------------


@attrs.define
class ConfigFile:
    path: Path
    head: str

    def write(self, models: str, together: tuple[str, ...] = ()) -> None:
        """Write the file; ``together`` are models that may run at the same time."""
        groups = ""
        if together:
            groups = (
                f"groups:\n  together:\n    swap: false\n    members: [{', '.join(together)}]\n"
            )
        self.path.write_text(self.head + groups + "models:\n" + models, encoding="utf-8")


@pytest.fixture
def config_file(tmp_path: Path) -> ConfigFile:
    return ConfigFile(tmp_path / "swapd.yaml", f"startPort: {free_port_base()}\n")


async def pids(client: httpx.AsyncClient) -> dict[str, int | None]:
    running = (await client.get("/running")).json()["running"]
    return {entry["model"]: entry.get("pid") for entry in running}


async def test_reload_keeps_unchanged_models_running_and_adds_new_ones(
    config_file: ConfigFile,
) -> None:
    config_file.write(model_yaml("a") + model_yaml("b", ttl=100), together=("a", "b"))
    with trio.fail_after(40):
        async with (
            open_swapd(load_config(config_file.path)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
            assert (await client.post("/v1/chat/completions", json=chat("b"))).status_code == 200
            before = await pids(client)
            assert before["a"] and before["b"]

            # "aa" sorts before both: without port keeping, a and b would be renumbered.
            config_file.write(
                model_yaml("aa") + model_yaml("a") + model_yaml("b", ttl=300),
                together=("a", "b"),
            )
            reply = await client.post("/api/config/reload")
            assert reply.status_code == 200, reply.text
            result = reply.json()
            assert result["ok"] is True
            assert result["added"] == ["aa"]
            assert result["unchanged"] == ["a"]
            assert result["updated"] == ["b"]
            assert result["changed"] == result["removed"] == []

            assert await pids(client) == before  # the same processes, untouched
            models = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            assert models == ["a", "aa", "b"]
            reply = await client.post("/v1/chat/completions", json=chat("aa"))
            assert reply.status_code == 200
            assert reply.json()["model"] == "aa"
            state = (await client.get("/api/config")).json()
            assert "aa:" in state["yaml"]
            assert state["last_reload"]["ok"] is True


async def test_a_broken_file_changes_nothing(config_file: ConfigFile) -> None:
    config_file.write(model_yaml("a"))
    good_text = config_file.path.read_text()
    with trio.fail_after(40):
        async with (
            open_swapd(load_config(config_file.path)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            assert (await client.post("/v1/chat/completions", json=chat("a"))).status_code == 200
            before = await pids(client)

            config_file.write(model_yaml("a") + "  b:\n    cmd: x\n    ttl: soon\n")
            reply = await client.post("/api/config/reload")
            assert reply.status_code == 400
            body = reply.json()
            message = body["error"]["message"]
            assert str(config_file.path) in message
            assert ":8:" in message or "line 8" in message  # file, line and field named
            assert "ttl" in message
            assert body["reload"]["ok"] is False

            assert await pids(client) == before
            reply = await client.post("/v1/chat/completions", json=chat("a"))
            assert reply.status_code == 200
            assert (await client.post("/v1/chat/completions", json=chat("b"))).status_code == 404
            state = (await client.get("/api/config")).json()
            assert state["yaml"] == good_text  # the running config, not the broken file
            assert state["last_reload"]["ok"] is False


async def test_the_config_is_shown_without_its_keys(config_file: ConfigFile) -> None:
    """GET /api/config shows the running file, but not the API keys or a peer's key: one
    key opens every route, and the config page is what gets screenshotted and pasted."""
    config_file.head += (
        "apiKeys: [sk-client-secret-1, sk-client-secret-12]\n"
        "peers:\n  far:\n    proxy: http://127.0.0.1:9\n    apiKey: sk-peer-secret\n"
        "    models: [remote]\n"
    )
    config_file.write(model_yaml("a"))
    auth = {"authorization": "Bearer sk-client-secret-12"}
    with trio.fail_after(30):
        async with (
            open_swapd(load_config(config_file.path)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20, headers=auth) as client,
        ):
            reply = await client.get("/api/config")
    assert reply.status_code == 200
    shown = reply.json()["yaml"]
    assert "sk-client-secret" not in shown and "sk-peer-secret" not in shown
    assert "apiKeys: [REDACTED, REDACTED]" in shown
    assert "apiKey: REDACTED" in shown
    # everything else as written
    assert shown.replace("REDACTED", "k") == config_file.path.read_text().replace(
        "sk-client-secret-12", "k"
    ).replace("sk-client-secret-1", "k").replace("sk-peer-secret", "k")


async def test_a_changed_model_finishes_its_stream_then_restarts(config_file: ConfigFile) -> None:
    config_file.write(model_yaml("a", "--chunks", "20", "--chunk-delay", "0.1"))
    with trio.fail_after(40):
        async with (
            open_swapd(load_config(config_file.path)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
        ):
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat("a", stream=True)
            ) as stream:
                assert stream.status_code == 200
                chunks = stream.aiter_raw()
                received = await anext(chunks)
                old_pid = (await pids(client))["a"]

                config_file.write(model_yaml("a", "--respond", "after the change"))
                result = (await client.post("/api/config/reload")).json()
                assert result["changed"] == ["a"]

                # A request arriving now waits for the restart instead of failing.
                async with trio.open_nursery() as nursery:
                    replies: list[httpx.Response] = []

                    async def late() -> None:
                        replies.append(await client.post("/v1/chat/completions", json=chat("a")))

                    nursery.start_soon(late)
                    async for chunk in chunks:  # the stream is not cut
                        received += chunk
                assert received.rstrip().endswith(b"data: [DONE]")
                assert received.count(b"data: {") == 20 + 1  # every chunk plus the final one
            [reply] = replies
            assert reply.status_code == 200
            assert reply.json()["choices"][0]["message"]["content"] == "after the change"
            assert (await pids(client))["a"] != old_pid


async def test_a_removed_model_finishes_in_flight_then_stops(config_file: ConfigFile) -> None:
    config_file.write(model_yaml("a", "--chunks", "10", "--chunk-delay", "0.1") + model_yaml("b"))
    with trio.fail_after(40):
        async with (
            open_swapd(load_config(config_file.path)) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
            client.stream("POST", "/v1/chat/completions", json=chat("a", stream=True)) as stream,
        ):
            chunks = stream.aiter_raw()
            received = await anext(chunks)
            config_file.write(model_yaml("b"))
            result = (await client.post("/api/config/reload")).json()
            assert result["removed"] == ["a"]
            reply = await client.post("/v1/chat/completions", json=chat("a"))
            assert reply.status_code == 404
            async for chunk in chunks:
                received += chunk
            assert received.rstrip().endswith(b"data: [DONE]")
            while "a" in await pids(client):  # noqa: ASYNC110 - polling swapd over HTTP
                await trio.sleep(0.05)
            models = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
            assert models == ["b"]


async def test_watch_config_reloads_on_change_with_events(config_file: ConfigFile) -> None:
    config_file.write(model_yaml("a"))
    config = load_config(config_file.path)
    with trio.fail_after(40):
        async with (
            open_swapd(config, watch_config=True) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=20) as client,
            client.stream("GET", "/api/events") as events,
        ):
            chunks = events.aiter_raw()
            await anext(chunks)  # the snapshot
            config_file.write(model_yaml("a") + model_yaml("b"))
            seen: list[tuple[str, object]] = []
            while not any(kind == "configReload" and data["state"] == "end" for kind, data in seen):  # type: ignore[index]
                seen += parse_sse(await anext(chunks))
            while not any(kind == "modelStatus" for kind, _ in seen):
                seen += parse_sse(await anext(chunks))
    reloads = [data for kind, data in seen if kind == "configReload"]
    assert reloads[0] == {"state": "start", "trigger": "file changed"}
    assert reloads[1]["ok"] is True  # type: ignore[index]
    assert reloads[1]["added"] == ["b"]  # type: ignore[index]
    status = [data for kind, data in seen if kind == "modelStatus"][-1]
    assert [m["id"] for m in status] == ["a", "b"]  # type: ignore[attr-defined,index]


async def test_preload_reports_success_and_failure_as_events(tmp_path: Path) -> None:
    text = (
        f"startPort: {free_port_base()}\n"
        "hooks:\n  on_startup:\n    preload: [good, bad]\n"
        "groups:\n  both:\n    swap: false\n    members: [good, bad]\n"
        "models:\n"
        # Both take a second, so the watcher below is in place before either reports.
        + model_yaml("good", "--start-delay", "1")
        + model_yaml("bad", "--start-delay", "1", "--crash-before-listen")
    )
    path = tmp_path / "swapd.yaml"
    path.write_text(text)
    preloads: dict[str, ModelPreloaded] = {}
    both = trio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, ModelPreloaded):
            preloads[event.model] = event
            if len(preloads) == 2:
                both.set()

    with trio.fail_after(40):
        async with open_swapd(load_config(path)) as swapd:
            with swapd.services.bus.watch(on_event):
                await both.wait()
            async with httpx.AsyncClient(base_url=swapd.url, timeout=20) as client:
                assert "good" in await pids(client)
    assert preloads["good"].success is True
    assert preloads["bad"].success is False
    assert "exited" in (preloads["bad"].error or "")


def test_sighup_reloads_a_running_daemon(tmp_path: Path) -> None:
    """swapd as users run it: edit the file, ``kill -HUP``, the new model is served and
    the running one keeps its process."""
    config = ConfigFile(tmp_path / "swapd.yaml", f"startPort: {free_port_base()}\n")
    config.write(model_yaml("a"), together=("a",))
    with run_swapd(config.path) as swapd:
        httpx.post(f"{swapd.url}/api/models/load/a", timeout=20).raise_for_status()
        pid = httpx.get(f"{swapd.url}/running").json()["running"][0]["pid"]

        config.write(model_yaml("a") + model_yaml("b"), together=("a", "b"))
        swapd.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while httpx.get(f"{swapd.url}/api/config").json()["last_reload"] is None:
            assert time.monotonic() < deadline, "no reload after SIGHUP"
            time.sleep(0.05)
        last = httpx.get(f"{swapd.url}/api/config").json()["last_reload"]
        assert (last["ok"], last["trigger"], last["added"]) == (True, "SIGHUP", ["b"])
        reply = httpx.post(f"{swapd.url}/v1/chat/completions", json=chat("b"), timeout=20)
        assert reply.status_code == 200
        running = httpx.get(f"{swapd.url}/running").json()["running"]
        assert {r["model"]: r["pid"] for r in running}["a"] == pid
    assert b"received SIGHUP, reloading the configuration" in swapd.output
    assert b"configuration reloaded (SIGHUP): added b" in swapd.output
