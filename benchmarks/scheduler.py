"""The scheduler under slow loads: bursts over three swapping models (issue #15).

::

    python benchmarks/scheduler.py [--out FILE]     # also run by ``nox -s bench``

Deterministic: the real Supervisor drives scripted in-process models
(``swapd.testing.harness``) on trio's mock clock, so a minute of loading costs
milliseconds and every run prints the same table. Three models ``a``, ``b``, ``c`` share
one ``swap: true`` group (default ``maxSwapWait`` of 10 s); 24 requests arrive 10 ms apart
in the order a b c a b c …, each served in 1 s; stopping a model takes 0.1 s. For each
load time (every model loads in 1, 10, 30 or 60 s, and a mixed 10/30/60 s row) the table
shows swapd's launches and time to the last answer next to the **one-launch-per-swap
baseline**: the requests served in arrival order with a swap whenever the model changes
(what llama-swap v193 does, and what swapd did once a load exceeded maxSwapWait). The
baseline is computed, not run: sum over the 24 requests of (load + 1 s), plus a 0.1 s stop
before every launch but the first.

Writes ``results/scheduler.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import trio
import trio.testing

from swapd.testing.harness import Script, open_swap_harness

CONFIG = """
healthCheckTimeout: 600
models:
  a: {cmd: "fake --port ${PORT}"}
  b: {cmd: "fake --port ${PORT}"}
  c: {cmd: "fake --port ${PORT}"}
"""
MODELS = ("a", "b", "c")
REQUESTS = 24
GAP = 0.01  # seconds between arrivals
DURATION = 1.0  # seconds each request holds its model
STOP = 0.1  # seconds a stop takes
ROWS: dict[str, dict[str, float]] = {
    "1 s": dict.fromkeys(MODELS, 1.0),
    "10 s": dict.fromkeys(MODELS, 10.0),
    "30 s": dict.fromkeys(MODELS, 30.0),
    "60 s": dict.fromkeys(MODELS, 60.0),
    "10/30/60 s": {"a": 10.0, "b": 30.0, "c": 60.0},
}


def order() -> list[str]:
    return [MODELS[i % len(MODELS)] for i in range(REQUESTS)]


def baseline(loads: dict[str, float]) -> tuple[int, float]:
    """One launch per model change, served in arrival order (computed)."""
    launches = 0
    done = 0.0
    previous = None
    for model in order():
        if model != previous:
            done += (STOP if previous is not None else 0.0) + loads[model]
            launches += 1
            previous = model
        done += DURATION
    return launches, done


async def measure(loads: dict[str, float]) -> tuple[int, float, int]:
    scripts = {m: Script(start_delay=loads[m], stop_delay=STOP) for m in MODELS}
    async with open_swap_harness(CONFIG, scripts=scripts) as h:
        for i, model in enumerate(order()):
            h.request(model, at=i * GAP, duration=DURATION)
    failed = [o for o in h.outcomes if o.error is not None or o.granted is None]
    if failed:
        raise SystemExit(f"requests failed: {failed}")
    last = max(o.finished or 0.0 for o in h.outcomes)
    return len(h.launches), last, h.supervisor.bound_expirations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(__file__).parent / "results" / "scheduler.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    rows = []
    for name, loads in ROWS.items():
        launches, last, expirations = trio.run(
            measure, loads, clock=trio.testing.MockClock(autojump_threshold=0)
        )
        base_launches, base_last = baseline(loads)
        rows.append(
            {
                "loads": name,
                "launches": launches,
                "last_answer_s": round(last, 2),
                "bound_expirations": expirations,
                "baseline_launches": base_launches,
                "baseline_last_answer_s": round(base_last, 2),
            }
        )
    print(
        f"Scheduler: {REQUESTS} requests a b c a b c ... {GAP * 1000:g} ms apart,"
        f" {DURATION:g} s each, one swap group"
    )
    header = ("loads", "launches", "last answer", "baseline launches", "baseline last")
    print("{:>11} | {:>8} | {:>11} | {:>17} | {:>13}".format(*header))
    for r in rows:
        print(
            f"{r['loads']:>11} | {r['launches']:>8} | {r['last_answer_s']:>10.1f}s |"
            f" {r['baseline_launches']:>17} | {r['baseline_last_answer_s']:>12.1f}s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scenario": "scheduler", "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
