"""What a loading model server is doing, read from the lines it prints.

Pure: one small parser per server family turns one output line into a
:class:`StageUpdate` (a :class:`Stage`, and a fraction of that stage where the server
prints one), or ``None`` for a line that says nothing about the load. Parsers keep no
state, so a line may be fed twice or out of context without harm.

Families and what they print (samples: ``tests/data/load_output/``):

- **llama.cpp** ``llama-server``: the model file opened and its metadata read, tensors
  loading (older builds print one ``.`` per percent; current builds print nothing, but
  run as a router child they report the exact fraction on stdout as
  ``cmd_child_to_router:state:{json}``), KV cache and context allocated, warm-up, then
  ``model loaded`` / ``listening on``. Its timestamp prefix and ``--log-jsonl`` form are
  understood. Older builds print ``HTTP server is listening`` *before* loading: that is
  not readiness and is ignored.
- **vLLM**: engine initialising, weights loading (checkpoint-shard bar), torch.compile,
  KV cache sized, CUDA graph capture (bar), ``Application startup complete``.
- **whisper.cpp** server and **stable-diffusion.cpp** ``sd-server``: model opened,
  weights loaded (sd.cpp has a bar), buffers allocated, listening.

Progress bars (tqdm, sd.cpp) redraw with carriage returns, so one line may hold many
updates: only the text after the last ``\\r`` counts.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Sequence
from pathlib import PurePath
from typing import Final

import attrs

__all__ = [
    "Parser",
    "Stage",
    "StageUpdate",
    "parse_any",
    "parse_llama_cpp",
    "parse_sd_cpp",
    "parse_vllm",
    "parse_whisper_cpp",
    "parser_for_command",
]


class Stage(enum.Enum):
    """Steps of a model server's start, in the order they usually happen."""

    STARTING = "starting"
    OPENING = "opening"
    LOADING_WEIGHTS = "loading_weights"
    ALLOCATING = "allocating"
    COMPILING = "compiling"
    WARMING_UP = "warming_up"
    LISTENING = "listening"
    #: Not printed by any server: swapd's own health check passed (set by the tracker).
    READY = "ready"

    @property
    def label(self) -> str:
        """Words for a person watching the load."""
        return _LABELS[self]


_LABELS: Final = {
    Stage.STARTING: "starting",
    Stage.OPENING: "opening the model file",
    Stage.LOADING_WEIGHTS: "loading weights",
    Stage.ALLOCATING: "allocating memory",
    Stage.COMPILING: "compiling",
    Stage.WARMING_UP: "warming up",
    Stage.LISTENING: "server listening",
    Stage.READY: "ready",
}


@attrs.frozen
class StageUpdate:
    """A stage the server reached; ``fraction`` (0 to 1) of it when the server says."""

    stage: Stage
    fraction: float | None = None


Parser = Callable[[str], StageUpdate | None]

_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _last_redraw(line: str) -> str:
    """The text a terminal would show: after the last ``\\r``, without colour codes."""
    line = line.rstrip("\r\n")
    return _ANSI.sub("", line.rsplit("\r", 1)[-1])


def _ratio(done: str, total: str) -> float | None:
    whole = int(total)
    return min(1.0, int(done) / whole) if whole > 0 else None


# -- llama.cpp ---------------------------------------------------------------------------

# "0.04.174.197 I " (minutes.seconds.millis.micros, then the level letter)
_LLAMA_STAMP: Final = re.compile(r"^\d+\.\d{2}\.\d{3}\.\d{3} [A-Z] ")
_LLAMA_CHILD: Final = "cmd_child_to_router:state:"
_DOTS: Final = re.compile(r"^\.+$")
_LLAMA_RULES: Final[tuple[tuple[re.Pattern[str], Stage], ...]] = (
    (
        re.compile(r"load_model: loading model '|llama_model_loader: loaded meta data"),
        Stage.OPENING,
    ),
    (re.compile(r"load_tensors: loading model tensors|llm_load_tensors: "), Stage.LOADING_WEIGHTS),
    (
        re.compile(r"llama_context: constructing|llama_new_context_with_model: |llama_kv_cache"),
        Stage.ALLOCATING,
    ),
    # At the default verbosity the threadpool line is the only sign between "loading
    # model" and "model loaded"; the -lv 4 capture shows it printed right before warm-up.
    (re.compile(r"warming up the model|llama threadpool init"), Stage.WARMING_UP),
    (
        re.compile(r"(llama_server|main): (model loaded|(server is )?listening on http)"),
        Stage.LISTENING,
    ),
)


def _llama_child_state(payload: str) -> StageUpdate | None:
    try:
        message = json.loads(payload)
        state = message["state"]
        value = message.get("payload", {}).get("value")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if state == "ready":
        return StageUpdate(Stage.LISTENING)
    if state == "loading" and isinstance(value, int | float):
        return StageUpdate(Stage.LOADING_WEIGHTS, min(1.0, max(0.0, float(value))))
    return None


def parse_llama_cpp(line: str) -> StageUpdate | None:
    """One line of ``llama-server`` output (plain, timestamped or ``--log-jsonl``)."""
    text = _last_redraw(line).strip()
    if text.startswith(_LLAMA_CHILD):
        return _llama_child_state(text[len(_LLAMA_CHILD) :])
    if text.startswith('{"type":"log"'):
        try:
            text = str(json.loads(text)["msg"]).strip()
        except (ValueError, KeyError, TypeError):
            return None
    text = _LLAMA_STAMP.sub("", text)
    if _DOTS.match(text):
        # Older builds: one dot per percent of the tensors loaded.
        return StageUpdate(Stage.LOADING_WEIGHTS, min(1.0, len(text) / 100))
    for pattern, stage in _LLAMA_RULES:
        if pattern.search(text):
            return StageUpdate(stage)
    return None


# -- vLLM --------------------------------------------------------------------------------

_VLLM_BAR: Final = re.compile(
    r"(?P<what>Loading \S+ checkpoint shards|Capturing CUDA graph[^:]*):"
    r".*?(?P<done>\d+)/(?P<total>\d+)"
)
_VLLM_RULES: Final[tuple[tuple[re.Pattern[str], Stage, float | None], ...]] = (
    (re.compile(r"Initializing an? (V1 )?LLM engine"), Stage.OPENING, None),
    (re.compile(r"Starting to load model"), Stage.LOADING_WEIGHTS, 0.0),
    (re.compile(r"Loading weights took|Model loading took"), Stage.LOADING_WEIGHTS, 1.0),
    (re.compile(r"torch\.compile|Dynamo bytecode transform"), Stage.COMPILING, None),
    (re.compile(r"GPU KV cache size|# (GPU|cuda) blocks"), Stage.ALLOCATING, None),
    (re.compile(r"Graph capturing finished"), Stage.COMPILING, 1.0),
    (re.compile(r"init engine \(profile, create kv cache, warmup model\)"), Stage.WARMING_UP, 1.0),
    (
        re.compile(r"Application startup complete|Starting vLLM API server"),
        Stage.LISTENING,
        None,
    ),
)


def parse_vllm(line: str) -> StageUpdate | None:
    """One line of ``vllm serve`` output (API server or engine core)."""
    text = _last_redraw(line)
    if bar := _VLLM_BAR.search(text):
        stage = Stage.LOADING_WEIGHTS if bar["what"].startswith("Loading") else Stage.COMPILING
        return StageUpdate(stage, _ratio(bar["done"], bar["total"]))
    for pattern, stage, fraction in _VLLM_RULES:
        if pattern.search(text):
            return StageUpdate(stage, fraction)
    return None


# -- whisper.cpp -------------------------------------------------------------------------

_WHISPER_RULES: Final[tuple[tuple[re.Pattern[str], Stage, float | None], ...]] = (
    (re.compile(r"whisper_init_from_file\w*: loading model from"), Stage.OPENING, None),
    (re.compile(r"whisper_model_load: loading model"), Stage.OPENING, None),
    (re.compile(r"whisper_model_load: +\w+ total size"), Stage.LOADING_WEIGHTS, None),
    (re.compile(r"whisper_model_load: model size"), Stage.LOADING_WEIGHTS, 1.0),
    (re.compile(r"whisper_init_state: "), Stage.ALLOCATING, None),
    (re.compile(r"whisper server listening at"), Stage.LISTENING, None),
)


def parse_whisper_cpp(line: str) -> StageUpdate | None:
    """One line of whisper.cpp's ``whisper-server`` output."""
    text = _last_redraw(line)
    for pattern, stage, fraction in _WHISPER_RULES:
        if pattern.search(text):
            return StageUpdate(stage, fraction)
    return None


# -- stable-diffusion.cpp ----------------------------------------------------------------

_SD_BAR: Final = re.compile(r"^\s*\|[=> ]*\|\s*(?P<done>\d+)/(?P<total>\d+)\s*-")
_SD_RULES: Final[tuple[tuple[re.Pattern[str], Stage, float | None], ...]] = (
    # "completed" first: the same "loading model from" starts and ends the load.
    (
        re.compile(r"loading model from .* completed|loading tensors completed"),
        Stage.LOADING_WEIGHTS,
        1.0,
    ),
    (re.compile(r"loading model from '|load \S+ using \w+ format"), Stage.OPENING, None),
    (re.compile(r"total params memory size"), Stage.LOADING_WEIGHTS, 0.0),
    (re.compile(r"running in [\w-]+ mode|finished loaded file"), Stage.ALLOCATING, None),
    (re.compile(r"^listening on: "), Stage.LISTENING, None),
)


def parse_sd_cpp(line: str) -> StageUpdate | None:
    """One line of stable-diffusion.cpp's ``sd-server`` output."""
    text = _last_redraw(line)
    if bar := _SD_BAR.search(text):
        return StageUpdate(Stage.LOADING_WEIGHTS, _ratio(bar["done"], bar["total"]))
    for pattern, stage, fraction in _SD_RULES:
        if pattern.search(text):
            return StageUpdate(stage, fraction)
    return None


# -- choosing a parser -------------------------------------------------------------------

_PARSERS: Final[tuple[Parser, ...]] = (parse_llama_cpp, parse_vllm, parse_whisper_cpp, parse_sd_cpp)


def parse_any(line: str) -> StageUpdate | None:
    """Every family's parser in turn: for commands that hide the server (scripts, docker)."""
    for parse in _PARSERS:
        if (update := parse(line)) is not None:
            return update
    return None


def parser_for_command(argv: Sequence[str]) -> Parser:
    """The parser for the server a command line starts (by program name), else :func:`parse_any`."""
    names = [PurePath(arg).name.lower() for arg in argv[:3]]
    for name in names:
        if name.startswith("llama-server"):
            return parse_llama_cpp
        if name == "vllm" or name.startswith("vllm."):
            return parse_vllm
        if name.startswith("whisper-server"):
            return parse_whisper_cpp
        if name.startswith("sd-server"):
            return parse_sd_cpp
    return parse_any
