"""A key limited to some models reads the observe routes filtered to its models
(docs/keys.md): the event feed, ``/running``, ``/metrics``, the token metrics and its
models' own logs; swapd's own and the combined logs stay closed to it; admin keys and
keys of every model see everything. ``GET /api/key`` says what the presented key is."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
from event_feed import parse_sse
from prometheus_client.parser import text_string_to_metric_families
from ws_client import open_ws

from swapd.testing import open_swapd, upstream_cmd

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

ROOT = {"Authorization": "Bearer sk-root"}
OBSERVER = {"Authorization": "Bearer sk-obs"}  # observer of beta (by its alias)
INFERENCE = {"Authorization": "Bearer sk-inf"}  # inference, alpha only
BOSS = {"Authorization": "Bearer sk-boss"}  # admin limited to beta for inference
EVERY = {"Authorization": "Bearer sk-every"}  # observer of every model


def model(name: str, alias: str) -> str:
    return (
        f"  {name}:\n    cmd: {upstream_cmd('--model', name)}\n"
        f"    proxy: http://127.0.0.1:${{PORT}}\n    aliases: [{alias}]\n"
    )


CONFIG = (
    """
apiKeys: [sk-root]
keys:
  - name: watcher
    secret: sk-obs
    role: observer
    models: [bee]
  - name: inf-alpha
    secret: sk-inf
    models: [alpha]
  - name: boss
    secret: sk-boss
    role: admin
    models: [beta]
  - name: every
    secret: sk-every
    role: observer
groups:
  both: {swap: false, members: [alpha, beta]}
models:
"""
    + model("alpha", "first")
    + model("beta", "bee")
)


def chat(name: str) -> dict[str, object]:
    return {"model": name, "messages": [{"role": "user", "content": "hi"}]}


class Feed:
    """An ``/api/events`` stream read in the background: raw bytes and parsed events."""

    def __init__(self) -> None:
        self.raw = b""
        self.events: list[tuple[str, Any]] = []
        self.changed = trio.Event()

    async def read(
        self, client: httpx.AsyncClient, headers: dict[str, str], task_status: Any
    ) -> None:
        async with client.stream("GET", "/api/events", headers=headers) as reply:
            assert reply.status_code == 200
            task_status.started()
            pending = b""
            async for chunk in reply.aiter_raw():
                self.raw += chunk
                pending += chunk
                # only whole frames (a frame may arrive in pieces)
                whole, sep, pending = pending.rpartition(b"\n\n")
                if sep:
                    self.events += parse_sse(whole + sep)
                    self.changed.set()
                    self.changed = trio.Event()

    async def until(self, done: Any) -> None:
        while not done(self.events):
            await self.changed.wait()

    def of(self, kind: str) -> list[Any]:
        return [data for k, data in self.events if k == kind]


def beta_metrics(count: int) -> Any:
    def done(events: list[tuple[str, Any]]) -> bool:
        records = [r for kind, data in events if kind == "metrics" for r in data]
        return sum(r["model"] == "beta" for r in records) >= count

    return done


async def test_a_limited_observer_reads_only_its_models() -> None:
    with trio.fail_after(90):
        async with (
            open_swapd(CONFIG) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=httpx.Timeout(30, read=None)) as client,
            trio.open_nursery() as nursery,
        ):
            limited, everything = Feed(), Feed()
            await nursery.start(limited.read, client, OBSERVER)
            await nursery.start(everything.read, client, ROOT)

            for name in ("alpha", "beta"):
                reply = await client.post("/v1/chat/completions", headers=ROOT, json=chat(name))
                assert reply.status_code == 200
            # both rows committed (the unlimited feed hears each)...
            await everything.until(
                lambda events: len([k for k, _ in events if k == "activity"]) >= 2
            )
            # ...then one more beta request: once the limited feed has seen its metrics, it
            # has been offered every event about alpha (one bus, delivered in order)
            reply = await client.post("/v1/chat/completions", headers=OBSERVER, json=chat("beta"))
            assert reply.status_code == 200
            await limited.until(beta_metrics(2))
            await everything.until(beta_metrics(2))

            rows = (await client.get("/api/metrics/activity", headers=ROOT)).json()["data"]
            model_of = {r["id"]: r["model"] for r in rows}

            # the WebSocket feed (key as ?api_key=) is filtered the same way
            ws_url = swapd.url.replace("http", "ws", 1) + "/api/events/ws?api_key=sk-obs"
            async with open_ws(ws_url) as ws:
                snapshot = []
                while not any(kind == "inflight" for kind, _ in snapshot):
                    outer = json.loads(await ws.get_message())
                    snapshot.append((outer["type"], json.loads(outer["data"])))
            assert "alpha" not in json.dumps(snapshot)
            assert [d["source"] for k, d in snapshot if k == "logData"] == ["upstream"]
            assert [[e["id"] for e in d] for k, d in snapshot if k == "modelStatus"] == [["beta"]]
            assert {r["model"] for k, d in snapshot if k == "metrics" for r in d} == {"beta"}
            nursery.cancel_scope.cancel()

        # the unlimited feed saw both models, swapd's own log included
        assert {r["model"] for data in everything.of("metrics") for r in data} == {"alpha", "beta"}
        assert {d["source"] for d in everything.of("logData")} >= {"proxy", "upstream"}

        # the limited one: only beta, and never swapd's own log
        assert b"alpha" not in limited.raw
        assert {d["source"] for d in limited.of("logData")} == {"upstream"}
        assert "demo upstream beta listening" in "".join(d["data"] for d in limited.of("logData"))
        statuses = limited.of("modelStatus")
        assert statuses and all([e["id"] for e in s] == ["beta"] for s in statuses)
        assert {r["model"] for data in limited.of("metrics") for r in data} == {"beta"}
        activity = {d["id"] for d in limited.of("activity")}
        assert activity and {model_of[i] for i in activity if i in model_of} == {"beta"}
        upserts = [d["request"] for d in limited.of("inflight") if d["operation"] == "upsert"]
        assert upserts and {r["model"] for r in upserts} <= {"beta", "bee", ""}
        shown = {r["id"] for r in upserts}
        removed = {d["id"] for d in limited.of("inflight") if d["operation"] == "remove"}
        assert removed <= shown  # no other request's ID, not even as a removal


async def test_running_metrics_and_logs_follow_the_scope() -> None:
    with trio.fail_after(90):
        async with (
            open_swapd(CONFIG) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=httpx.Timeout(30, read=None)) as client,
        ):
            for name, headers in (("alpha", ROOT), ("bee", OBSERVER)):
                reply = await client.post("/v1/chat/completions", headers=headers, json=chat(name))
                assert reply.status_code == 200

            async def running(headers: dict[str, str]) -> list[str]:
                reply = await client.get("/running", headers=headers)
                assert reply.status_code == 200
                return [m["model"] for m in reply.json()["running"]]

            assert await running(OBSERVER) == ["beta"]
            for headers in (ROOT, BOSS, EVERY):
                assert await running(headers) == ["alpha", "beta"]
            assert (await client.get("/running", headers=INFERENCE)).status_code == 403

            # token metrics: only beta's records (rows are stored once a request is over)
            while len((await client.get("/api/metrics", headers=ROOT)).json()) < 2:  # noqa: ASYNC110
                await trio.sleep(0.05)
            records = (await client.get("/api/metrics", headers=OBSERVER)).json()
            assert records and {r["model"] for r in records} == {"beta"}

            # Prometheus: other models' samples and other keys' series are dropped
            def samples(text: str) -> list[tuple[str, dict[str, str]]]:
                return [
                    (s.name, s.labels)
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                ]

            full = samples((await client.get("/metrics", headers=ROOT)).text)
            assert any(labels.get("model") == "alpha" for _, labels in full)
            assert any(labels.get("key") == "apiKeys[0]" for _, labels in full)
            seen = samples((await client.get("/metrics", headers=OBSERVER)).text)
            assert {labels["model"] for _, labels in seen if "model" in labels} == {"beta"}
            assert {labels["key"] for _, labels in seen if "key" in labels} == {"watcher"}
            # process-wide series stay (those without a model or key label)
            process_wide = {n for n, labels in full if not {"model", "key"} & set(labels)}
            assert process_wide and process_wide <= {n for n, _ in seen}

            # logs: a model's own log when in scope, by ID or alias
            for name in ("beta", "bee"):
                async with client.stream("GET", f"/logs/stream/{name}", headers=OBSERVER) as reply:
                    assert reply.status_code == 200
                    first = await anext(reply.aiter_raw())
                    assert b"demo upstream beta listening" in first
            # another model's log: 403 naming only the name asked for
            for name in ("alpha", "first"):
                reply = await client.get(f"/logs/stream/{name}", headers=OBSERVER)
                assert reply.status_code == 403
                message = reply.json()["error"]["message"]
                assert name in message and "beta" not in message
                if name == "first":
                    assert "alpha" not in message
            # swapd's own and the combined logs: 403 saying why
            for path in ("/logs", "/logs/stream", "/logs/stream/proxy", "/logs/stream/upstream"):
                reply = await client.get(path, headers=OBSERVER)
                assert reply.status_code == 403, path
                assert "limited to some models" in reply.json()["error"]["message"]
                async with client.stream("GET", path, headers=BOSS) as reply:
                    assert reply.status_code == 200  # an admin key limited to beta: every log
            async with client.stream("GET", "/logs/stream/alpha", headers=EVERY) as reply:
                assert reply.status_code == 200
            # no spelling of the path opens swapd's own log or another model's
            proxy_line = "swapd listening"  # in the proxy log only
            for raw in (
                "/logs/stream/proxy/",
                "/logs/stream//proxy",
                "/logs/stream/pro%78y",
                "/logs/stream/%61lpha",
                "/logs/stream/beta/../proxy",
                "/logs/stream/beta/%2e%2e/upstream",
                "/logs/stream/./alpha",
                "/logs/",
            ):
                url = httpx.URL(swapd.url + "/").copy_with(raw_path=raw.encode())
                reply = await client.get(url, headers=OBSERVER)
                assert reply.status_code in (400, 403, 404, 308), (raw, reply.status_code)
                assert proxy_line not in reply.text and "alpha listening" not in reply.text
            # captures stay admin-only
            assert (await client.get("/api/captures/1", headers=OBSERVER)).status_code == 403
            assert (await client.get("/api/captures/1", headers=EVERY)).status_code == 403


async def test_api_key_describes_the_presented_key() -> None:
    with trio.fail_after(60):
        async with (
            open_swapd(CONFIG) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            assert (await client.get("/api/key")).status_code == 401
            assert (await client.get("/api/key", headers={"x-api-key": "sk-no"})).status_code == 401
            answers = {
                key: (await client.get("/api/key", headers=headers)).json()
                for key, headers in (("obs", OBSERVER), ("inf", INFERENCE), ("root", ROOT))
            }
            assert answers["obs"] == {
                "name": "watcher",
                "role": "observer",
                "models": ["bee"],
                "limits": {"maxConcurrent": 0, "requestsPerMinute": 0, "dailyTokens": 0},
            }
            assert answers["inf"]["role"] == "inference"
            assert answers["inf"]["models"] == ["alpha"]
            assert answers["root"]["name"] == "apiKeys[0]"
            assert answers["root"]["role"] == "admin" and answers["root"]["models"] == "*"
            assert "sk-" not in str(answers)
            # asking is not a model request: no per-key count
            text = (await client.get("/metrics", headers=ROOT)).text
            assert 'key="inf-alpha"' not in text

    without_keys = "models:\n" + model("alpha", "first")
    async with (
        open_swapd(without_keys) as swapd,
        httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
    ):
        reply = await client.get("/api/key")
        assert reply.status_code == 200
        assert reply.json()["role"] == "admin" and reply.json()["models"] == "*"
