"""Sampling profiles of swapd under load (py-spy), summarised by layer.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``). A
sample is charged to the **layer** of its innermost frame that belongs to a known package
(hypercorn, quart/werkzeug/flask, h11, httpx/httpcore, swapd's modules); frames of trio or
the standard library under it count for that layer too ("trio" and "other" columns), so
"hypercorn 30% (trio 17)" means 30% of swapd's samples were in hypercorn or in trio/stdlib
code hypercorn called. Samples with no known frame at all are trio's scheduler itself
(``run loop``). Idle samples are not recorded (py-spy's default), and trio's worker thread,
which py-spy sees as busy while it waits for work, is left out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PYSPY = shutil.which("py-spy") or (
    str(Path(sys.executable).with_name("py-spy"))
    if Path(sys.executable).with_name("py-spy").exists()
    else None
)

#: (path fragment, layer), first match wins.
LAYERS = (
    ("swapd/web/forward", "swapd relay (forward.py)"),
    ("swapd/web/inference", "swapd inference route"),
    ("swapd/web/", "swapd web (app, auth, other routes)"),
    ("swapd/observe", "swapd observe (metrics tap, telemetry, captures)"),
    ("swapd/supervise", "swapd supervisor"),
    ("swapd/core", "swapd core (routing, policy)"),
    ("swapd/", "swapd other"),
    ("hypercorn", "hypercorn"),
    ("quart", "quart/werkzeug/flask"),
    ("werkzeug", "quart/werkzeug/flask"),
    ("flask", "quart/werkzeug/flask"),
    ("httpcore", "httpx/httpcore"),
    ("httpx", "httpx/httpcore"),
    ("h11", "h11 (hypercorn's and the relay's)"),
)
#: The bottom of every stack (the process's main function calling trio.run): not an owner.
ROOTS = ("swapd/__main__.py", "swapd/cli.py", "runpy", "main (swapd/daemon.py")
_FRAME = re.compile(r"\(([^()]*?)(?::\d+)?\)\s*$")


def _path(frame: str) -> str:
    match = _FRAME.search(frame)
    return match.group(1) if match else frame


def _layer(path: str) -> str | None:
    for fragment, layer in LAYERS:
        if fragment in path:
            return layer
    return None


def _kind(path: str) -> str:
    return "trio" if "trio/" in path else "other"


def summarise(raw: str) -> dict[str, Any]:
    """Per-layer shares (percent of samples) of a raw py-spy profile, plus the top frames."""
    layers: Counter[str] = Counter()
    split: Counter[tuple[str, str]] = Counter()
    leaf_frames: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if "WorkerThread._work" in stack or "thread_cache" in stack.split(";")[-1]:
            continue  # trio's idle worker thread
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf = frames[-1]
        leaf_frames[re.sub(r":\d+\)", ")", leaf.strip())] += count
        owner = None
        for frame in reversed(frames):
            if any(root in frame for root in ROOTS):
                continue
            owner = _layer(_path(frame))
            if owner is not None:
                break
        owner = owner or "trio run loop"
        layers[owner] += count
        leaf_layer = _layer(_path(leaf))
        split[(owner, "self" if leaf_layer is not None else _kind(_path(leaf)))] += count
    if not total:
        return {"samples": 0, "layers": [], "top_frames": []}
    pct = 100.0 / total
    return {
        "samples": total,
        "layers": [
            {
                "layer": layer,
                "percent": round(count * pct, 1),
                "self": round(split[(layer, "self")] * pct, 1),
                "trio": round(split[(layer, "trio")] * pct, 1),
                "other": round(split[(layer, "other")] * pct, 1),
            }
            for layer, count in layers.most_common()
        ],
        "top_frames": [
            {"frame": frame, "percent": round(count * pct, 1)}
            for frame, count in leaf_frames.most_common(15)
        ],
    }


def record(pid: int, seconds: float, out: Path, *, rate: int = 500) -> str | None:
    """py-spy record of ``pid`` for ``seconds`` (raw collapsed stacks into ``out``);
    returns the raw text, or None (with the reason printed) if py-spy is not usable."""
    if PYSPY is None:
        print("  (profile skipped: py-spy not found; pip install py-spy, or '.[bench]')")
        return None
    argv = [PYSPY, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", str(rate), "--format", "raw", "--output", str(out), "--nonblocking"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not out.exists():
        print(f"  (profile failed: {(done.stderr or done.stdout).strip()[-300:]})")
        return None
    raw = out.read_text(encoding="utf-8", errors="replace")
    out.write_text(compact(raw), encoding="utf-8")
    return raw


def compact(raw: str) -> str:
    """The raw stacks without line numbers, merged, each below trio's run loop only (still
    collapsed-stack format, for flamegraph.pl or speedscope)."""
    merged: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit() or "WorkerThread._work" in stack:
            continue
        stack = re.sub(r":\d+\)", ")", stack)
        marker = "unrolled_run (trio/_core/_run.py);"
        if marker in stack:
            stack = stack.split(marker, 1)[1]
        merged[stack] += int(count)
    return "".join(f"{stack} {count}\n" for stack, count in sorted(merged.items()))


def print_summary(title: str, summary: dict[str, Any]) -> None:
    print(f"\n{title} ({summary['samples']} samples; % of swapd's busy samples)")
    print(f"  {'layer':<48} {'total':>6} {'own':>6} {'trio':>6} {'other':>6}")
    for row in summary["layers"]:
        print(
            f"  {row['layer']:<48} {row['percent']:6.1f} {row['self']:6.1f}"
            f" {row['trio']:6.1f} {row['other']:6.1f}"
        )
    print("  top frames (self):")
    for row in summary["top_frames"][:8]:
        print(f"    {row['percent']:5.1f}%  {row['frame'][:100]}")
