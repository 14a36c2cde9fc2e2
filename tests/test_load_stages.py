"""The load-stage parsers, on output captured from the pinned llama-server and on
reconstructed samples of vLLM, whisper.cpp and stable-diffusion.cpp (see
tests/data/load_output/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swapd.core.load_stages import (
    Parser,
    Stage,
    StageUpdate,
    parse_any,
    parse_llama_cpp,
    parse_sd_cpp,
    parse_vllm,
    parse_whisper_cpp,
    parser_for_command,
)

SAMPLES = Path(__file__).parent / "data" / "load_output"

OPEN, W, A, C, U, L = (
    Stage.OPENING,
    Stage.LOADING_WEIGHTS,
    Stage.ALLOCATING,
    Stage.COMPILING,
    Stage.WARMING_UP,
    Stage.LISTENING,
)


def sample_lines(name: str) -> list[str]:
    """The file's lines as swapd's reader cuts them: on ``\\n`` only, headers skipped."""
    raw = (SAMPLES / name).read_bytes().split(b"\n")
    lines = [line.decode("utf-8", "replace") for line in raw]
    if name.endswith(".reconstructed.txt"):
        lines = [line for line in lines if not line.startswith("#")]
    return lines


def updates(parse: Parser, name: str) -> list[StageUpdate]:
    return [u for line in sample_lines(name) if (u := parse(line)) is not None]


def stages(parse: Parser, name: str) -> list[Stage]:
    """The stages in order, repeats collapsed."""
    seen: list[Stage] = []
    for update in updates(parse, name):
        if not seen or seen[-1] is not update.stage:
            seen.append(update.stage)
    return seen


# -- llama.cpp, real output --------------------------------------------------------------


def test_llama_server_default_verbosity() -> None:
    # Default verbosity says little: the file, the threadpool line right before warm-up,
    # then "model loaded" / "listening on".
    for name in ("llama-server-smollm2.txt", "llama-server-tiny.txt"):
        assert stages(parse_llama_cpp, name) == [OPEN, U, L]


def test_llama_server_info_verbosity_shows_every_stage() -> None:
    assert stages(parse_llama_cpp, "llama-server-smollm2-lv4.txt") == [OPEN, W, A, U, L]


def test_llama_server_jsonl_logs() -> None:
    assert stages(parse_llama_cpp, "llama-server-smollm2-jsonl.txt") == [OPEN, U, L]


def test_llama_server_router_child_reports_exact_fractions() -> None:
    got = updates(parse_llama_cpp, "llama-server-smollm2-child-stdout.txt")
    weights = [u.fraction for u in got if u.stage is W]
    assert weights[0] == 0.0
    assert weights[-1] == 1.0
    assert any(0 < f < 1 for f in weights if f is not None)  # a real mid-load sample
    assert weights == sorted(weights, key=lambda f: f or 0.0)
    assert got[-1] == StageUpdate(L)


def test_nothing_after_listening_changes_the_stage() -> None:
    # The captures end with the server's shutdown lines: they are no stage.
    lines = sample_lines("llama-server-smollm2-lv4.txt")
    after = lines[next(i for i, x in enumerate(lines) if "listening on" in x) + 1 :]
    assert [parse_llama_cpp(x) for x in after if parse_llama_cpp(x) is not None] == []


# -- llama.cpp, older builds (reconstructed) ---------------------------------------------


def test_older_llama_server_dots_and_early_http_listening() -> None:
    name = "llama-server-legacy-dots.reconstructed.txt"
    assert stages(parse_llama_cpp, name) == [OPEN, W, A, U, L]
    assert StageUpdate(W, 1.0) in updates(parse_llama_cpp, name)  # the 100-dot line
    early = next(x for x in sample_lines(name) if "HTTP server is listening" in x)
    assert parse_llama_cpp(early) is None  # printed before loading: not readiness


def test_a_partial_dot_run_is_a_partial_fraction() -> None:
    assert parse_llama_cpp("." * 42) == StageUpdate(W, 0.42)
    assert parse_llama_cpp("." * 250) == StageUpdate(W, 1.0)


# -- other families (reconstructed) ------------------------------------------------------


def test_vllm_stages_and_bars() -> None:
    name = "vllm.reconstructed.txt"
    assert stages(parse_vllm, name) == [OPEN, W, C, A, C, U, L]
    shards = [u.fraction for u in updates(parse_vllm, name) if u.stage is W]
    assert shards[:4] == [0.0, 0.0, 0.5, 1.0]
    # The CUDA-graph bar is one line of \r-separated redraws: the last one counts.
    (graph_line,) = [x for x in sample_lines(name) if "Capturing CUDA graph" in x]
    assert "\r" in graph_line
    assert parse_vllm(graph_line) == StageUpdate(C, 1.0)
    assert parse_vllm(graph_line.rsplit("\r", 1)[0]) == StageUpdate(C, 30 / 67)


def test_vllm_newer_graph_bar_wording() -> None:
    line = "Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  40%|####  | 27/67 [00:05]"
    assert parse_vllm(line) == StageUpdate(C, 27 / 67)


def test_whisper_server_stages() -> None:
    name = "whisper-server.reconstructed.txt"
    assert stages(parse_whisper_cpp, name) == [OPEN, W, A, L]
    assert StageUpdate(W, 1.0) in updates(parse_whisper_cpp, name)


def test_sd_server_stages_and_bar() -> None:
    name = "sd-server.reconstructed.txt"
    assert stages(parse_sd_cpp, name) == [OPEN, W, A, L]
    (bar_line,) = [x for x in sample_lines(name) if "/1130" in x]
    assert parse_sd_cpp(bar_line) == StageUpdate(W, 1.0)
    assert parse_sd_cpp(bar_line.split("\r")[1]) == StageUpdate(W, 282 / 1130)


# -- choosing a parser -------------------------------------------------------------------

FAMILY_SAMPLES = [
    (parse_llama_cpp, "llama-server-smollm2-lv4.txt"),
    (parse_llama_cpp, "llama-server-smollm2-child-stdout.txt"),
    (parse_llama_cpp, "llama-server-legacy-dots.reconstructed.txt"),
    (parse_vllm, "vllm.reconstructed.txt"),
    (parse_whisper_cpp, "whisper-server.reconstructed.txt"),
    (parse_sd_cpp, "sd-server.reconstructed.txt"),
]


@pytest.mark.parametrize(("parse", "name"), FAMILY_SAMPLES)
def test_parse_any_reads_each_family_like_its_own_parser(parse: Parser, name: str) -> None:
    for line in sample_lines(name):
        assert parse_any(line) == parse(line), line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/opt/llama.cpp/build/bin/llama-server", "-m", "x.gguf"], parse_llama_cpp),
        (["vllm", "serve", "Qwen/Qwen2.5-1.5B-Instruct"], parse_vllm),
        (["python3", "-m", "vllm.entrypoints.openai.api_server"], parse_vllm),
        (["/usr/local/bin/whisper-server", "-m", "ggml-base.en.bin"], parse_whisper_cpp),
        (["sd-server", "-m", "sd.ckpt"], parse_sd_cpp),
        (["docker", "run", "--rm", "ghcr.io/ggml-org/llama.cpp:server"], parse_any),
        ([], parse_any),
    ],
)
def test_parser_for_command(argv: list[str], expected: Parser) -> None:
    assert parser_for_command(argv) is expected


@given(st.text(max_size=300))
def test_parsers_never_fail_and_fractions_stay_in_range(line: str) -> None:
    for parse in (parse_llama_cpp, parse_vllm, parse_whisper_cpp, parse_sd_cpp, parse_any):
        update = parse(line)
        if update is not None and update.fraction is not None:
            assert 0.0 <= update.fraction <= 1.0


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_bar_counts_never_divide_by_zero_or_exceed_one(done: int, total: int) -> None:
    update = parse_sd_cpp(f"  |=====>   | {done}/{total} - 3.00it/s")
    assert update is not None and update.stage is W
    assert update.fraction is None if total == 0 else 0.0 <= update.fraction <= 1.0
