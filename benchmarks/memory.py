"""A memory budget against a swap group: three models that fit two at a time (issue #19).

::

    python benchmarks/memory.py [--out FILE]     # also run by ``nox -s bench``

Deterministic: the real Supervisor drives scripted in-process models
(``swapd.testing.harness``) on trio's mock clock, so every run prints the same table.
Three models ``a``, ``b``, ``c`` each declare ``footprint: {gpu0: 9GiB}``; each loads in
10 s and stops in 0.5 s. Two configs serve the same traffic:

- **budget**: ``memory.budgets: {gpu0: 20GiB}`` and no groups: any two fit, the third
  evicts the least recently used idle one;
- **swap group**: the same models in one ``swap: true`` group, the only way a group can
  say "they do not all fit": one model at a time.

Traffic (seeded, so fixed): 120 requests with exponential gaps (mean 3 s), each held 2 s;
*two hot*: a and b get 45 % each, c 10 %; *uniform*: a third each; *one hot*: a 80 %,
b and c 10 % each. The table shows launches, the mean, 95th percentile and largest
answer time (arrival to end of the answer) and when the last answer ended.

Writes ``results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import trio
import trio.testing

from swapd.testing.harness import Script, open_swap_harness

MODELS = ("a", "b", "c")
MODEL_LINES = "".join(
    f'  {m}: {{cmd: "fake --port ${{PORT}}", footprint: {{gpu0: 9GiB}}, footprintLearn: false}}\n'
    for m in MODELS
)
CONFIGS = {
    "budget": "healthCheckTimeout: 600\nmemory:\n  budgets:\n    gpu0: 20GiB\nmodels:\n"
    + MODEL_LINES,
    "swap group": "healthCheckTimeout: 600\nmodels:\n"
    + MODEL_LINES
    + "groups:\n  gpu:\n    swap: true\n    members: [a, b, c]\n",
}
MIXES = {
    "two hot": {"a": 0.45, "b": 0.45, "c": 0.10},
    "uniform": {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3},
    "one hot": {"a": 0.80, "b": 0.10, "c": 0.10},
}
REQUESTS = 120
MEAN_GAP = 3.0  # seconds between arrivals, on average
DURATION = 2.0  # seconds each request holds its model
LOAD = 10.0  # seconds a model takes to load
STOP = 0.5  # seconds a stop takes
SEED = 19


def traffic(mix: dict[str, float]) -> list[tuple[float, str]]:
    """(arrival time, model) for every request; the same for every config."""
    rng = random.Random(f"{SEED}-{sorted(mix.items())}")  # a fixed workload
    at, result = 0.0, []
    for _ in range(REQUESTS):
        at += rng.expovariate(1 / MEAN_GAP)
        result.append((at, rng.choices(MODELS, weights=[mix[m] for m in MODELS])[0]))
    return result


async def measure(config: str, arrivals: list[tuple[float, str]]) -> dict[str, float]:
    scripts = {m: Script(start_delay=LOAD, stop_delay=STOP) for m in MODELS}
    async with open_swap_harness(config, scripts=scripts) as h:
        for at, model in arrivals:
            h.request(model, at=at, duration=DURATION)
    failed = [o for o in h.outcomes if o.error is not None or o.finished is None]
    if failed:
        raise SystemExit(f"requests failed: {failed}")
    answers = sorted((o.finished or 0.0) - o.arrived for o in h.outcomes)
    return {
        "launches": len(h.launches),
        "mean_answer_s": round(sum(answers) / len(answers), 2),
        "p95_answer_s": round(answers[math.ceil(0.95 * len(answers)) - 1], 2),
        "max_answer_s": round(answers[-1], 2),
        "last_answer_s": round(max(o.finished or 0.0 for o in h.outcomes), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_out = Path(__file__).parent / "results" / "memory.json"
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    rows = []
    for mix_name, mix in MIXES.items():
        arrivals = traffic(mix)
        for config_name, config in CONFIGS.items():
            result = trio.run(
                measure, config, arrivals, clock=trio.testing.MockClock(autojump_threshold=0)
            )
            rows.append({"traffic": mix_name, "config": config_name, **result})
    print(
        f"Memory budget vs swap group: 3 models of 9 GiB, budget 20 GiB; {REQUESTS} requests,"
        f" mean gap {MEAN_GAP:g} s, {DURATION:g} s each, loads {LOAD:g} s"
    )
    header = ("traffic", "config", "launches", "mean answer", "p95 answer", "max answer", "last")
    print("{:>8} | {:>10} | {:>8} | {:>11} | {:>10} | {:>10} | {:>8}".format(*header))
    for r in rows:
        print(
            f"{r['traffic']:>8} | {r['config']:>10} | {r['launches']:>8} |"
            f" {r['mean_answer_s']:>10.1f}s | {r['p95_answer_s']:>9.1f}s |"
            f" {r['max_answer_s']:>9.1f}s | {r['last_answer_s']:>7.1f}s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"scenario": "memory", "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
