"""How long swapd takes to load a config with many models (issue target: 1,000 in ≤ 1 s).

Method: generate a config of N models (cmd with ${PORT}, proxy, one alias, ttl), time
``swapd.config.parse_config`` on it (best of R runs, so the number is the code's cost,
not the machine's noise), and break out the strict-YAML parse alone. Writes
``results/config_scale.json``.

    python benchmarks/config_scale.py [--models 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from swapd.config import parse_config
from swapd.config.source import parse_yaml


def generate(models: int) -> str:
    lines = ["models:"]
    for i in range(models):
        lines += [
            f"  model-{i}:",
            f"    cmd: llama-server --port ${{PORT}} -m /models/{i}.gguf",
            "    proxy: http://127.0.0.1:${PORT}",
            f"    aliases: [alias-{i}]",
            "    ttl: 300",
        ]
    return "\n".join(lines) + "\n"


def best_of(repeat: int, fn: object) -> float:
    assert callable(fn)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 models, one run")
    args = parser.parse_args()
    models, repeat = (100, 1) if args.quick else (args.models, args.repeat)
    text = generate(models)
    total = best_of(repeat, lambda: parse_config(text, file="scale.yaml"))
    yaml_only = best_of(repeat, lambda: parse_yaml(text, file="scale.yaml"))
    print(f"{models} models, best of {repeat}:")
    print(f"  load + validate   {total * 1000:8.0f} ms   (target for 1,000: <= 1000 ms)")
    print(f"  strict YAML parse {yaml_only * 1000:8.0f} ms   ({yaml_only / total:.0%} of it)")
    out = (
        Path(__file__).parent
        / "results"
        / ("config_scale.quick.json" if args.quick else "config_scale.json")
    )
    out.write_text(
        json.dumps({"models": models, "load_s": total, "yaml_parse_s": yaml_only}, indent=2) + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
