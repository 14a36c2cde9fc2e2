"""Soak test: mixed traffic against a real swapd for N minutes; report its memory, file
descriptors and leftover processes.

    nox -s soak                       # 10 minutes
    nox -s soak -- --minutes 60 --workers 16 --report soak.json
    python tests/soak.py --minutes 1  # a smoke run

swapd runs as a process (``python -m swapd``) on a loopback port with five demo-upstream
models in three groups (two exclusive swap groups and a shared one), so the traffic makes
it swap all the time. Each worker loops until the deadline over a mix of: chat (plain and
streamed, some streams dropped halfway), embeddings, a small multipart upload, listings,
metrics, unknown models, clients that give up while their model loads, and now and then
an unload or a config reload. One model crashes every few hundred chunks.

Every 10 s it samples swapd's RSS, open file descriptors, threads and live model
processes. At the end swapd gets SIGTERM; then any process carrying its instance marker
is a leak. Exit status 1 when a process leaked, a request hung (hit the client timeout),
swapd answered 500, or swapd exited with an error; RSS and fd growth are reported, not
judged (the first minutes include warm-up: compare the second half with the first).

Not part of the default test run; see docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

from swapd.supervise.lifeline import marked_processes
from swapd.testing.server import free_port_base, upstream_cmd

MODELS = {
    "a1": ("alpha", ["--chunks", "20", "--chunk-delay", "0.01"]),
    "a2": ("alpha", ["--start-delay", "0.5"]),
    "b1": ("beta", ["--crash-after-chunks", "400"]),
    "b2": ("beta", ["--loading-delay", "0.3"]),
    "c1": ("gamma", []),
}


def config_text(base: int, version: int = 0) -> str:
    lines = [f"startPort: {base + 1}", "logToStdout: proxy", "maxSwapWait: 2", "models:"]
    for name, (_, flags) in MODELS.items():
        lines += [
            f"  {name}:",
            f"    cmd: {upstream_cmd('--model', name, '--respond', f'soak {name} v{version}', *flags)}",
            "    proxy: http://127.0.0.1:${PORT}",
        ]
        if name == "b2":
            lines.append("    sendLoadingState: true")
        if name == "a1":
            lines.append("    ttl: 20")
    lines += [
        "groups:",
        "  alpha: {swap: true, exclusive: true, members: [a1, a2]}",
        "  beta: {swap: true, exclusive: true, members: [b1, b2]}",
        "  gamma: {swap: false, exclusive: false, members: [c1]}",
    ]
    return "\n".join(lines) + "\n"


def proc_status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    values["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return values


def model_processes(swapd_pid: int) -> list[int]:
    prefix = f"{swapd_pid}:"
    return sorted(
        pid for pid, value in marked_processes("SWAPD_INSTANCE").items() if value.startswith(prefix)
    )


class Traffic:
    def __init__(self, url: str, config: Path, base: int, rng: random.Random) -> None:
        self.url = url
        self.config = config
        self.base = base
        self.rng = rng
        self.outcomes: Counter[str] = Counter()
        self.hangs = 0
        self.server_errors: list[str] = []  # swapd's own 500s: a failed run
        self.upstream_errors: list[str] = []  # 502/503s (a crash, an unload): for the report
        self.reloads = 0

    def record(self, kind: str, reply: httpx.Response | None) -> None:
        status = reply.status_code if reply is not None else 0
        self.outcomes[f"{kind} {status}"] += 1
        if reply is not None and status == 500:
            self.server_errors.append(f"{kind}: {reply.text[:200]}")
        elif reply is not None and status >= 500 and len(self.upstream_errors) < 20:
            self.upstream_errors.append(f"{kind} {status}: {reply.text[:200]}")

    async def one(self, client: httpx.AsyncClient) -> None:
        rng = self.rng
        model = rng.choice(list(MODELS))
        roll = rng.random()
        chat = {"model": model, "messages": [{"role": "user", "content": "soak test"}]}
        if roll < 0.35:
            self.record("chat", await client.post("/v1/chat/completions", json=chat))
        elif roll < 0.6:
            drop_after = rng.choice([None, None, 1, 3])
            async with client.stream(
                "POST", "/v1/chat/completions", json={**chat, "stream": True}
            ) as reply:
                if reply.status_code >= 500:
                    await reply.aread()  # a short error body, kept for the report
                else:
                    received = 0
                    async for _ in reply.aiter_raw():
                        received += 1
                        if drop_after is not None and received >= drop_after:
                            break
            self.record("stream" if drop_after is None else "stream-dropped", reply)
        elif roll < 0.7:
            body = {"model": model, "input": "soak"}
            self.record("embeddings", await client.post("/v1/embeddings", json=body))
        elif roll < 0.72:
            body = {"model": model, "max_tokens": 16, "stream": rng.random() < 0.5}
            body["messages"] = [{"role": "user", "content": "soak test"}]
            self.record("anthropic", await client.post("/v1/messages", json=body))
        elif roll < 0.73:
            self.record("upstream", await client.get(f"/upstream/{model}/health"))
        elif roll < 0.75:
            reply = await client.post(
                "/v1/audio/transcriptions",
                data={"model": model},
                files={"file": ("a.wav", os.urandom(64 * 1024), "audio/wav")},
            )
            self.record("upload", reply)
        elif roll < 0.85:
            path = rng.choice(["/v1/models", "/running", "/metrics", "/api/metrics", "/health"])
            self.record(path, await client.get(path))
        elif roll < 0.9:
            self.record(
                "unknown", await client.post("/v1/chat/completions", json={**chat, "model": "nope"})
            )
        elif roll < 0.97:
            with trio.move_on_after(rng.uniform(0.01, 0.5)):  # gives up, maybe while loading
                await client.post("/v1/chat/completions", json=chat)
                self.outcomes["impatient finished"] += 1
                return
            self.outcomes["impatient gave up"] += 1
        elif roll < 0.99:
            self.record("unload", await client.post(f"/api/models/unload/{model}"))
        else:
            self.reloads += 1
            self.config.write_text(config_text(self.base, self.reloads))
            self.record("reload", await client.post("/api/config/reload"))

    async def worker(self, deadline: float) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            while trio.current_time() < deadline:
                try:
                    await self.one(client)
                except httpx.TimeoutException:
                    self.hangs += 1
                except httpx.TransportError as exc:  # a model crashed mid-stream, etc.
                    self.outcomes[f"transport {type(exc).__name__}"] += 1


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = free_port_base()
    workdir = Path(tempfile.mkdtemp(prefix="swapd-soak-"))
    config = workdir / "swapd.yaml"
    config.write_text(config_text(base))
    url = f"http://127.0.0.1:{base}"
    log = (workdir / "swapd.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before the traffic
        [sys.executable, "-m", "swapd", "--config", str(config), "--listen", f"127.0.0.1:{base}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        # its activity database goes to the scratch folder, not the user's state directory
        env={**os.environ, "XDG_STATE_HOME": str(workdir / "state")},
    )
    samples: list[dict[str, Any]] = []
    traffic = Traffic(url, config, base, random.Random(args.seed))
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=url) as probe:
            with trio.fail_after(30):
                while True:
                    try:
                        if (await probe.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await trio.sleep(0.1)
        deadline = trio.current_time() + args.minutes * 60

        async def sampler() -> None:
            while True:
                sample = {"t": round(time.monotonic() - started, 1), **proc_status(proc.pid)}
                sample["models"] = len(model_processes(proc.pid))
                samples.append(sample)
                print(json.dumps(sample), flush=True)
                await trio.sleep(args.every)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler)
            async with trio.open_nursery() as workers:
                for _ in range(args.workers):
                    workers.start_soon(traffic.worker, deadline)
            await trio.sleep(1)  # let the last releases land
            samples.append(
                {"t": round(time.monotonic() - started, 1), **proc_status(proc.pid), "final": True}
            )
            nursery.cancel_scope.cancel()
        proc.send_signal(signal.SIGTERM)
        exit_code = await trio.to_thread.run_sync(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    await trio.sleep(0.5)
    leaked = model_processes(proc.pid)
    first, last = samples[0], samples[-1]
    half = samples[len(samples) // 2]
    return {
        "minutes": args.minutes,
        "workers": args.workers,
        "requests": sum(traffic.outcomes.values()),
        "outcomes": dict(sorted(traffic.outcomes.items())),
        "reloads": traffic.reloads,
        "hung_requests": traffic.hangs,
        "server_errors": traffic.server_errors[:20],
        "upstream_errors": traffic.upstream_errors,
        "rss_kib": {"start": first["VmRSS"], "half": half["VmRSS"], "end": last["VmRSS"]},
        "rss_growth_second_half_kib": last["VmRSS"] - half["VmRSS"],
        "peak_rss_kib": max(s["VmHWM"] for s in samples),
        "fds": {"start": first["fds"], "half": half["fds"], "end": last["fds"]},
        "threads_end": last["Threads"],
        "swapd_exit_code": exit_code,
        "leaked_processes": leaked,
        "log": str(workdir / "swapd.log"),
        "samples": samples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", type=Path, help="write the report here as JSON")
    args = parser.parse_args()
    report = trio.run(run, args)
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    failed = (
        report["leaked_processes"]
        or report["hung_requests"]
        or report["server_errors"]
        or report["swapd_exit_code"] != 0
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
