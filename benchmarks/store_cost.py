"""CPU the activity store costs per request, measured in-process (no HTTP, no noise from
the load generator): what ``bench.py``'s per-request CPU would gain from the store.

    .venv/bin/python benchmarks/store_cost.py [--rows N]

Three numbers, each CPU time (``time.process_time``: every thread of this process, so
the writer's worker thread is counted) divided by the rows:

* *producer*: what a request pays on its own task: the recorder's bookkeeping (its
  in-flight entry, opened, updated and closed, with their bus events; watching the
  response; the row with token metrics) and ``Telemetry.record_activity`` (the id, the
  channel, the bus event);
* *writer*: the writer task and its thread: batching, ``executemany`` and the commit,
  in WAL mode on a file in a temporary directory, with the retention pass;
* their sum (less the CPU of the pacing loop alone, measured separately), to set
  against swapd's CPU per request from ``bench.py`` (2-3.5 ms for a
  small request at c=16 on the 2-core benchmark machine).

Rows are added 16 at a time, 2 ms apart (8,000 rows/s, several times what swapd serves on
that machine), so the writer forms batches the way it does under load and none is dropped
(the run fails if one is).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from swapd.config import parse_config
from swapd.observe.bus import EventBus
from swapd.observe.metrics import TokenMetrics
from swapd.observe.telemetry import Telemetry
from swapd.web.recording import RequestActivity, _ResponseWatch


async def _noop_send(message: dict[str, object]) -> None:
    pass


async def pacing_cost(rows: int) -> float:
    """CPU of the pacing alone (the sleeps between bursts), subtracted from the writer's."""
    began = time.process_time()
    for i in range(rows):
        if i % 16 == 15:
            await trio.sleep(0.002)
    return time.process_time() - began


async def measure(rows: int, folder: Path) -> dict[str, float]:
    config = parse_config("models: {}\n", file="<bench>")
    telemetry = Telemetry(
        config, EventBus(), stdout=lambda _: None, environ={"XDG_STATE_HOME": str(folder)}
    )
    store = telemetry.activity
    metrics = TokenMetrics(
        id=7, timestamp=time.time(), model="m", input_tokens=25, output_tokens=10
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        tracker = telemetry.inflight
        headers = [(b"content-type", b"application/json")]
        request_headers = [(b"content-type", b"application/json"), (b"authorization", b"x")]
        produce = 0.0
        began = time.process_time()
        for i in range(rows):
            t0 = time.process_time()
            # what ActivityRecorder does for one request, minus the app it wraps
            inflight = tracker.open(
                method="POST",
                path="/v1/chat/completions",
                headers=request_headers,
                remote_ip="127.0.0.1",
            )
            entry = RequestActivity(
                started=trio.current_time(), inflight=inflight, tracker=tracker, queue_ms=0
            )
            watch = _ResponseWatch(_noop_send, inflight, tracker)
            entry.note_model("m")
            await watch.send({"type": "http.response.start", "status": 200, "headers": headers})
            await watch.send({"type": "http.response.body", "body": b"{}", "more_body": False})
            entry.note_finished(metrics, cut=False)
            tracker.close(inflight)
            telemetry.record_activity(watch.row(entry, "/v1/chat/completions", failed=False))
            produce += time.process_time() - t0
            if i % 16 == 15:
                await trio.sleep(0.002)  # 16 requests end every 2 ms: 8,000 rows/s
        await store.wait_written(rows)
        total = time.process_time() - began - await pacing_cost(rows)
        assert store.statistics().dropped == 0, "rows were dropped: the numbers would lie"
        await store.aclose()
    return {
        "rows": rows,
        "producer_us": produce / rows * 1e6,
        "writer_us": (total - produce) / rows * 1e6,
        "total_us": total / rows * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = trio.run(measure, args.rows, Path(folder))
    print(
        f"{result['rows']} rows: producer {result['producer_us']:.1f} us, "
        f"writer {result['writer_us']:.1f} us, total {result['total_us']:.1f} us CPU per row"
    )


if __name__ == "__main__":
    main()
