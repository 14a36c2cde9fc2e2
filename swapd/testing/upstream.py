"""swapd's demo upstream: a small, fast, fake OpenAI/Anthropic-compatible inference server.

(Long for a module, about 1400 lines, on purpose: one self-contained test tool, read it by
its ``# ----`` sections: options, messages, generation, multipart, server state, handlers,
route table, HTTP connection, process.)

It is a real HTTP/1.1 server built on trio + h11 and the standard library only; it imports
nothing from swapd, so it also runs as a plain script. It is meant to run as a child process:

* the quickstart config runs it as a model's ``cmd``, so swapd can be tried without a GPU;
* swapd's tests start it to play every kind of upstream: healthy, slow to load, crashing,
  ignoring SIGTERM, leaving a grandchild behind, sleeping, dropping streams...;
* benchmarks use it as a fast upstream: keep-alive, TCP_NODELAY, one socket write per SSE
  event, one trio task per connection.

Run it::

    swapd-demo-upstream --port 8081 --model demo
    python -m swapd.testing.upstream --port 0 --chunks 20 --chunk-delay 0.05
    python /path/to/swapd/testing/upstream.py --port 0 --silent

Once listening it prints ``demo upstream <model> listening on http://HOST:PORT pid <pid>``
(flushed, with the real port when ``--port 0``), then one ``<METHOD> <path> <status>`` line
per request unless ``--silent``. A client that goes away mid-response is counted (``/stats``)
and logged as ``client disconnected after N chunks on <path>``, even with ``--silent``.
SIGTERM and SIGINT make it exit 0 promptly.

Flags::

    --host H                  interface to bind (default 127.0.0.1)
    --port N                  port, required; 0 picks a free one
    --model NAME              model name it reports (default "demo")
    --respond TEXT            the assistant's reply
    --start-delay S           sleep S seconds before binding the socket
    --loading-delay S         listen at once, but answer the health path (and the inference
                              routes) with 503 until S seconds after listening started
    --health-path P           health route (default /health)
    --exit-after S            exit with --exit-code S seconds after start (a crash)
    --exit-code N             exit code for --exit-after and --crash-before-listen (default 1)
    --crash-before-listen     print a line to stderr and exit with --exit-code instead of
                              listening (after --start-delay, if any)
    --ignore-sigterm          SIGTERM is ignored (also by the grandchild); only SIGKILL works
    --spawn-grandchild        start a long-lived `sleep`-like grandchild in the same process
                              group and print ``grandchild pid <N>``
    --sleep-mode              enable vLLM-style /sleep, /wake_up, /is_sleeping,
                              /collective_rpc, /reset_prefix_cache (asleep: inference is 503)
    --fail-sleep, --fail-wake /sleep or /wake_up answer 500
    --silent                  no request log lines
    --chunks N                SSE content chunks per streamed reply (default 10)
    --chunk-delay S           delay between content chunks (default 0)
    --first-chunk-delay S     delay before the first event (default 0)
    --crash-after-chunks N    exit at once (code --exit-code, no cleanup) right after writing
                              the Nth part of any streamed reply: a crash mid-stream
    --refuse-after-healthy    once the health path has answered 200, close the listening
                              socket: new connections are refused, the process lives on
    --load-stages             print llama-server-like load stage lines to stderr, spread
                              over --start-delay + --loading-delay (for load progress)
    --health-pattern LIST     answers of the health path to successive probes, cycling:
                              comma-separated statuses or ``drop`` (close the connection
                              without answering), e.g. ``503,drop,200,503``
    --hold-mib N              hold N MiB of really touched memory for the process's life
                              (memory-footprint tests measure it)
    --oom-first-start FILE    the first --oom-starts starts (counted in FILE) print
                              --oom-line to stderr and exit 1 (with --oom-kill: die by
                              SIGKILL) before listening: a server out of memory at start
    --oom-starts N            how many starts fail that way (default 1)
    --oom-line TEXT           the line printed (default: llama.cpp's cudaMalloc failure)
    --debug-fields            non-streamed chat replies also carry what the upstream saw:
                              ``x_upstream_model`` (its --model), ``x_request_body`` (the
                              body as received) and ``x_content_length`` (its header);
                              for tests, off by default so a user's replies look real

Per-request knobs (JSON body field, else request header, else the flag): ``x_chunks`` /
``x-chunks``, ``x_delay_ms`` / ``x-delay-ms``, ``x_first_delay_ms`` / ``x-first-delay-ms``.
Body only: ``x_fail_after_chunks: K`` (drop the connection after K content chunks, or before
answering when not streaming), ``x_status: N`` (answer N with an error body). Headers
``x-gzip: 1`` / ``x-deflate: 1`` (``raw`` for raw DEFLATE) compress a JSON reply when the
client's Accept-Encoding allows it. A non-streamed reply takes as long as the stream would.

Routes (unknown: 404 ``{"error": ...}``; known path, wrong method: 405)::

    GET  <health-path> / GET / / GET /test / GET /pid / GET /env / GET /stats / GET /props
    GET  /v1/models
    ANY  /echo[/...]                      request as JSON (method, path, query, headers, body)
    POST /v1/chat/completions             chat.completion or SSE chunks + [DONE]; honours
                                          response_format (JSON reply), tools (a tool
                                          call) and enable_thinking (reasoning_content)
    POST /v1/completions, /completion, /infill
    POST /v1/responses                    OpenAI Responses (stream too)
    POST /v1/embeddings                   8 floats per input, derived from a hash
    POST /v1/messages                     Anthropic message or its SSE event sequence
    POST /v1/messages/count_tokens
    POST /v1/audio/transcriptions         multipart: needs `model` and a `file` part
    POST /v1/audio/speech                 fake audio/mpeg bytes
    GET  /v1/audio/voices?model=X
    POST /v1/images/generations, /v1/images/edits (multipart), /sdapi/v1/txt2img
    POST /rerank, /v1/rerank, /v1/reranking, /reranking
    GET  /slow?chunks=N&delay=S&text=abc  plain-text chunks, `delay` apart
    GET  /status/<code>                   that status, JSON body
    GET  /big?bytes=N                     N deterministic bytes in 64 KiB writes
    --sleep-mode only: POST /sleep[?level=N], POST /wake_up, POST /wake_up_fail,
    GET /is_sleeping, POST /collective_rpc, POST /reset_prefix_cache

Token counts are words: prompt tokens are the whitespace-separated words of every message
text (at least 1); completion tokens are the chunks sent (stream) or the reply's words.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import http
import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

import h11
import trio

__all__ = ["Options", "main", "parse_args"]

#: What --oom-first-start prints by default (llama.cpp's CUDA allocation failure).
OOM_LINE = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9216.00 MiB on device 0: "
    "cudaMalloc failed: out of memory"
)


DEFAULT_REPLY = "Hello from the swapd demo upstream."
RECV_SIZE = 256 * 1024
BIG_BLOCK = (bytes(range(256)) * 256)[: 64 * 1024]
TINY_PNG_B64 = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAE"
    "hQGAhKmMIQAAAABJRU5ErkJggg=="
)
FAKE_MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(412)
JSON_HEADERS = [("content-type", "application/json")]
SSE_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
DONE = b"data: [DONE]\n\n"
MAX_CHUNKS = 100_000
REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """The command line, parsed."""

    port: int
    host: str = "127.0.0.1"
    model: str = "demo"
    respond: str = DEFAULT_REPLY
    start_delay: float = 0.0
    loading_delay: float = 0.0
    health_path: str = "/health"
    exit_after: float | None = None
    exit_code: int = 1
    crash_before_listen: bool = False
    ignore_sigterm: bool = False
    spawn_grandchild: bool = False
    sleep_mode: bool = False
    fail_wake: bool = False
    fail_sleep: bool = False
    silent: bool = False
    chunks: int = 10
    chunk_delay: float = 0.0
    first_chunk_delay: float = 0.0
    crash_after_chunks: int | None = None
    refuse_after_healthy: bool = False
    health_pattern: tuple[str, ...] = ()
    hold_mib: int = 0
    oom_first_start: str | None = None
    oom_starts: int = 1
    oom_line: str = OOM_LINE
    oom_kill: bool = False
    debug_fields: bool = False
    load_stages: bool = False
    draft: int | None = None  # speculative-decoding counts in the timings


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_CHUNKS:
        raise argparse.ArgumentTypeError(f"expected 0..{MAX_CHUNKS}, got {text!r}")
    return value


def _health_pattern(text: str) -> tuple[str, ...]:
    answers = tuple(part.strip() for part in text.split(","))
    for answer in answers:
        if answer != "drop" and not (answer.isdigit() and 200 <= int(answer) <= 599):
            raise argparse.ArgumentTypeError(f"expected statuses or 'drop', got {answer!r}")
    return answers


def parse_args(argv: list[str] | None = None) -> Options:
    p = argparse.ArgumentParser(
        prog="swapd-demo-upstream",
        description="A fake OpenAI/Anthropic-compatible inference server for demos and tests.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0 picks a free port")
    p.add_argument("--model", default="demo")
    p.add_argument("--respond", default=DEFAULT_REPLY, help="the assistant's reply text")
    p.add_argument("--start-delay", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--loading-delay", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--health-path", default="/health")
    p.add_argument("--exit-after", type=_seconds, default=None, metavar="S")
    p.add_argument("--exit-code", type=int, default=1, metavar="N")
    p.add_argument("--crash-before-listen", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--spawn-grandchild", action="store_true")
    p.add_argument("--sleep-mode", action="store_true")
    p.add_argument("--fail-wake", action="store_true")
    p.add_argument("--fail-sleep", action="store_true")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--chunks", type=_count, default=10, metavar="N")
    p.add_argument("--chunk-delay", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--first-chunk-delay", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--crash-after-chunks", type=_count, default=None, metavar="N")
    p.add_argument("--refuse-after-healthy", action="store_true")
    p.add_argument("--health-pattern", type=_health_pattern, default=(), metavar="LIST")
    p.add_argument("--hold-mib", type=_count, default=0, metavar="N")
    p.add_argument("--oom-first-start", default=None, metavar="FILE")
    p.add_argument("--oom-starts", type=_count, default=1, metavar="N")
    p.add_argument("--oom-line", default=OOM_LINE, metavar="TEXT")
    p.add_argument("--oom-kill", action="store_true")
    p.add_argument("--debug-fields", action="store_true")
    p.add_argument("--load-stages", action="store_true")
    p.add_argument(
        "--draft",
        type=_count,
        default=None,
        metavar="N",
        help="speculative decoding: timings report N drafted tokens, N // 2 accepted",
    )
    ns = p.parse_args(argv)
    if not ns.health_path.startswith("/"):
        p.error("--health-path must start with /")
    return Options(**vars(ns))


# --------------------------------------------------------------------------- messages


@dataclass
class Request:
    """One complete HTTP request (the body is read before any handler runs)."""

    method: str
    target: str
    path: str
    query: str
    raw_headers: list[tuple[str, str]]  # as received (original case, in order)
    headers: dict[str, str]  # lower-cased name -> last value
    body: bytes

    def arg(self, name: str, default: str = "") -> str:
        values = parse_qs(self.query, keep_blank_values=True).get(name)
        return values[-1] if values else default

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json_object(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body)
        except ValueError as exc:
            raise HTTPError(400, f"invalid JSON body: {exc}") from None
        if not isinstance(value, dict):
            raise HTTPError(400, "the JSON body must be an object")
        return value


@dataclass
class Reply:
    """A complete response, sent in one write after ``delay`` seconds of "generation"."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    delay: float = 0.0


@dataclass
class StreamReply:
    """A streamed response: each part is (seconds to wait first, bytes for one write)."""

    status: int
    headers: list[tuple[str, str]]
    parts: Iterable[tuple[float, bytes]]
    abort: bool = False  # after the parts, drop the connection instead of ending the body


@dataclass
class Drop:
    """Close the connection without answering, after ``delay`` seconds (a crash)."""

    delay: float = 0.0
    why: str = "x_fail_after_chunks"


Answer = Reply | StreamReply | Drop


class HTTPError(Exception):
    """Raised by handlers; the route's error style turns it into a JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_reply(obj: Any, status: int = 200, delay: float = 0.0) -> Reply:
    # The newline keeps a shell prompt off curl's output in the README's walkthrough.
    return Reply(status, JSON_HEADERS, _dumps(obj) + b"\n", delay)


def text_reply(text: str, status: int = 200) -> Reply:
    return Reply(status, [("content-type", "text/plain; charset=utf-8")], text.encode())


def sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


def typed_event(kind: str, **fields: Any) -> bytes:
    """An SSE event named ``kind`` whose data starts with ``"type": kind`` (Anthropic style)."""
    return b"event: " + kind.encode() + b"\ndata: " + _dumps({"type": kind, **fields}) + b"\n\n"


_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error", 503: "unavailable_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 404: "not_found_error", 503: "overloaded_error"}


def error_reply(status: int, message: str, style: str) -> Reply:
    """An error body in the route's style: ``openai``, ``anthropic`` or ``plain``."""
    body: dict[str, Any]
    if style == "openai":
        kind = _OPENAI_TYPES.get(status, "server_error")
        body = {"error": {"message": message, "type": kind, "code": status}}
    elif style == "anthropic":
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": message}
    return json_reply(body, status)


# --------------------------------------------------------------------------- generation


@functools.lru_cache(maxsize=64)
def split_reply(text: str, n: int) -> tuple[str, ...]:
    """Split text into n pieces that join back to it, on word boundaries when possible."""
    if n <= 0:
        return ()
    words = re.findall(r"\S+\s*|\s+", text)
    if n <= len(words):
        return tuple(
            "".join(words[i * len(words) // n : (i + 1) * len(words) // n]) for i in range(n)
        )
    if n <= len(text):
        return tuple(text[i * len(text) // n : (i + 1) * len(text) // n] for i in range(n))
    return (*text, *([""] * (n - len(text))))


def _texts(value: Any) -> Iterator[str]:
    """Every prompt text inside messages / input / prompt values (OpenAI or Anthropic)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for key in ("content", "text", "input", "prompt"):
            if key in value:
                yield from _texts(value[key])


def count_words(*values: Any) -> int:
    """Prompt "tokens": whitespace-separated words of every text, at least 1."""
    return max(1, sum(len(text.split()) for value in values for text in _texts(value)))


def _knob(body: dict[str, Any], req: Request, name: str) -> Any:
    if name in body:
        return body[name]
    return req.headers.get(name.replace("_", "-"))


def _int_knob(body: dict[str, Any], req: Request, name: str, default: int) -> int:
    value = _knob(body, req, name)
    if value is None:
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise HTTPError(400, f"{name} must be an integer, got {value!r}") from None
    if not 0 <= number <= MAX_CHUNKS:
        raise HTTPError(400, f"{name} must be in 0..{MAX_CHUNKS}, got {number}")
    return number


def _ms_knob(body: dict[str, Any], req: Request, name: str, default: float) -> float:
    """A delay given in milliseconds (body or header), returned in seconds."""
    value = _knob(body, req, name)
    if value is None:
        return default
    try:
        ms = float(value)
    except (TypeError, ValueError):
        raise HTTPError(400, f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(ms) or ms < 0:
        raise HTTPError(400, f"{name} must be >= 0, got {value!r}")
    return ms / 1000


@dataclass(frozen=True)
class Gen:
    """One reply to generate: requested model, text pieces, pacing and fault injection."""

    model: str
    pieces: tuple[str, ...]
    prompt_tokens: int
    first_delay: float
    chunk_delay: float
    fail_after: int | None
    stream: bool
    draft: int | None = None  # --draft: speculative-decoding counts in the timings

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def duration(self) -> float:
        """How long the whole reply takes to generate (also for non-streamed replies)."""
        return self.first_delay + self.chunk_delay * max(0, len(self.pieces) - 1)

    @property
    def completion_tokens(self) -> int:
        return len(self.pieces) if self.stream else len(self.text.split())

    def usage(self) -> dict[str, int]:
        done = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }

    def timings(self) -> dict[str, float]:
        """llama.cpp-style timings, derived from the configured pacing (deterministic)."""
        prompt_n, predicted_n = self.prompt_tokens, self.completion_tokens
        prompt_ms = self.first_delay * 1000 or prompt_n * 0.25
        predicted_ms = self.chunk_delay * 1000 * predicted_n or predicted_n * 1.0

        def rate(n: int, ms: float) -> float:
            return round(n * 1000 / ms, 3) if ms > 0 else 0.0

        return {
            "prompt_n": prompt_n,
            "prompt_ms": round(prompt_ms, 3),
            "prompt_per_second": rate(prompt_n, prompt_ms),
            "predicted_n": predicted_n,
            "predicted_ms": round(predicted_ms, 3),
            "predicted_per_second": rate(predicted_n, predicted_ms),
            "cache_n": 0,
            **(
                {}
                if self.draft is None
                else {"draft_n": self.draft, "draft_n_accepted": self.draft // 2}
            ),
        }


def plan(up: Upstream, req: Request, body: dict[str, Any], *prompt: Any) -> Gen:
    """Read the generation knobs of an inference request (raises HTTPError for x_status)."""
    forced = body.get("x_status")
    if forced is not None:
        if not isinstance(forced, int) or not 400 <= forced <= 599:
            raise HTTPError(400, f"x_status must be an integer in 400..599, got {forced!r}")
        raise HTTPError(forced, f"forced error status {forced} (x_status)")
    fail_after = body.get("x_fail_after_chunks")
    if fail_after is not None and (not isinstance(fail_after, int) or fail_after < 0):
        raise HTTPError(400, f"x_fail_after_chunks must be an integer >= 0, got {fail_after!r}")
    n = _int_knob(body, req, "x_chunks", up.opts.chunks)
    model = body.get("model")
    return Gen(
        model=model if isinstance(model, str) else up.opts.model,
        pieces=split_reply(up.opts.respond, n),
        prompt_tokens=count_words(*prompt),
        first_delay=_ms_knob(body, req, "x_first_delay_ms", up.opts.first_chunk_delay),
        chunk_delay=_ms_knob(body, req, "x_delay_ms", up.opts.chunk_delay),
        fail_after=fail_after,
        stream=body.get("stream") is True,
        draft=up.opts.draft,
    )


def paced(gen: Gen, head: list[bytes], deltas: list[bytes], tail: list[bytes]) -> StreamReply:
    """An SSE reply: head events, content deltas ``chunk_delay`` apart, tail events.

    The first event waits ``first_delay``. With ``x_fail_after_chunks: K`` only the head
    and K deltas are sent, then the connection is dropped.
    """
    parts = [(0.0, event) for event in head]
    parts += [(gen.chunk_delay if i else 0.0, delta) for i, delta in enumerate(deltas)]
    if gen.fail_after is not None:
        parts = parts[: len(head) + gen.fail_after]
    else:
        parts += [(0.0, event) for event in tail]
    if parts:
        parts[0] = (gen.first_delay + parts[0][0], parts[0][1])
    return StreamReply(200, SSE_HEADERS, parts, abort=gen.fail_after is not None)


def complete(gen: Gen, obj: Any) -> Answer:
    """A non-streamed reply, sent once the whole reply could have been generated."""
    if gen.fail_after is not None:
        return Drop(gen.first_delay)
    return json_reply(obj, delay=gen.duration)


def embedding(value: Any) -> list[float]:
    """Eight deterministic floats in [-1, 1] from a hash of the input."""
    text = value if isinstance(value, str) else json.dumps(value)
    digest = hashlib.sha256(text.encode()).digest()
    return [
        round(int.from_bytes(digest[i : i + 4], "big") / 0xFFFFFFFF * 2 - 1, 6)
        for i in range(0, 32, 4)
    ]


def _score(query: str, document: str) -> float:
    digest = hashlib.sha256(f"{query}\0{document}".encode()).digest()
    return round(int.from_bytes(digest[:4], "big") / 2**32, 6)


# --------------------------------------------------------------------------- multipart

_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """``'form-data; name="a"'`` -> ``("form-data", {"name": "a"})``."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        quoted = m.group(2)
        params[m.group(1).lower()] = (
            re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else m.group(3)
        )
    return main.strip().lower(), params


@dataclass
class FilePart:
    filename: str
    content_type: str
    data: bytes


def parse_multipart(req: Request) -> tuple[dict[str, str], dict[str, FilePart]]:
    """Split a multipart/form-data body into text fields and file parts (bytes.find only)."""
    kind, params = header_params(req.headers.get("content-type", ""))
    boundary = params.get("boundary")
    if kind != "multipart/form-data" or not boundary:
        raise HTTPError(400, "expected multipart/form-data with a boundary")
    body, delimiter = req.body, b"--" + boundary.encode()
    fields: dict[str, str] = {}
    files: dict[str, FilePart] = {}
    pos = body.find(delimiter)
    if pos < 0:
        raise HTTPError(400, "multipart body without its boundary")
    while True:
        pos += len(delimiter)
        if body.startswith(b"--", pos):
            return fields, files
        start = body.find(b"\r\n", pos) + 2
        end = body.find(b"\r\n" + delimiter, start)
        if start < 2 or end < 0:
            raise HTTPError(400, "truncated multipart body")
        if body.startswith(b"\r\n", start):  # a part without headers
            head, content = b"", body[start + 2 : end]
        else:
            split = body.find(b"\r\n\r\n", start, end)
            if split < 0:
                raise HTTPError(400, "multipart part without a blank line after its headers")
            head, content = body[start:split], body[split + 4 : end]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", errors="replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        _, disposition = header_params(headers.get("content-disposition", ""))
        name = disposition.get("name", "")
        if "filename" in disposition:
            ctype = headers.get("content-type", "application/octet-stream")
            files[name] = FilePart(disposition["filename"], ctype, content)
        else:
            fields[name] = content.decode("utf-8", errors="replace")
        pos = end + 2


# --------------------------------------------------------------------------- server state


@dataclass(frozen=True)
class Route:
    handler: Handler
    inference: bool = False  # 503 while loading or asleep
    style: str = "openai"  # error body format: openai | anthropic | plain


def say(line: str, *, err: bool = False) -> None:
    """Print and flush; a closed or broken stdout must never take the server down."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr if err else sys.stdout, flush=True)


class Upstream:
    """Counters, sleep state and the route table of one running server."""

    def __init__(self, opts: Options, scope: trio.CancelScope) -> None:
        self.opts = opts
        self.scope = scope  # cancelled to exit
        self.exit_code: int | None = None
        self.requests = 0
        self.disconnects = 0
        self.aborts = 0
        self.in_flight = 0
        self.asleep = False
        self.sleep_level = 0
        self.ready_at = math.inf  # trio time at which loading ends
        self.ids = itertools.count(1)
        self.grandchild: subprocess.Popen[bytes] | None = None
        self.health_probes = 0
        self.stop_accepting: Callable[[], None] | None = None  # --refuse-after-healthy
        self.routes = dict(ROUTES)
        if opts.sleep_mode:
            self.routes.update(SLEEP_ROUTES)
        self.routes["GET", opts.health_path] = Route(health, style="plain")
        self.paths = {path for _, path in self.routes}

    def stop(self, code: int, why: str) -> None:
        if self.exit_code is None:
            self.exit_code = code
            say(f"demo upstream {self.opts.model} exiting with code {code}: {why}", err=code != 0)
        self.scope.cancel()

    def loading(self) -> bool:
        return trio.current_time() < self.ready_at

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-demo{next(self.ids)}"

    def log(self, req: Request, status: int) -> None:
        if not self.opts.silent:
            say(f"{req.method} {req.path} {status}")

    def client_gone(self, req: Request, chunks: int) -> None:
        self.disconnects += 1
        say(f"client disconnected after {chunks} chunks on {req.path}")

    def dropped(self, req: Request, chunks: int, why: str = "x_fail_after_chunks") -> None:
        self.aborts += 1
        say(f"dropping the connection after {chunks} chunks on {req.path} ({why})")

    def find(self, method: str, path: str) -> Route | None:
        route = self.routes.get((method if method != "HEAD" else "GET", path))
        if route is not None:
            return route
        for prefix, prefixed in PREFIX_ROUTES:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return prefixed
        return None

    def dispatch(self, req: Request) -> Answer:
        route = self.find(req.method, req.path)
        if route is None:
            if req.path in self.paths:
                return error_reply(405, f"method {req.method} not allowed on {req.path}", "plain")
            return error_reply(404, f"not found: {req.method} {req.path}", "plain")
        if route.inference and self.loading():
            return error_reply(503, "Loading model", route.style)
        if route.inference and self.asleep:
            return error_reply(503, "the model is sleeping", route.style)
        try:
            answer = route.handler(self, req)
        except HTTPError as exc:
            return error_reply(exc.status, exc.message, route.style)
        except Exception as exc:
            traceback.print_exc()
            return error_reply(500, f"demo upstream bug: {exc!r}", route.style)
        if isinstance(answer, Reply):
            return compress(req, answer)
        return answer


Handler = Callable[[Upstream, Request], Answer]


def _accepted(header: str) -> set[str]:
    codings = set()
    for item in header.split(","):
        name, _, params = item.partition(";")
        if params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            codings.add(name.strip().lower())
    return codings


def compress(req: Request, reply: Reply) -> Reply:
    """Gzip/deflate a JSON body when asked (x-gzip / x-deflate) and accepted."""
    gz, deflate = req.headers.get("x-gzip"), req.headers.get("x-deflate")
    if (
        not (gz or deflate)
        or not reply.body
        or ("content-type", "application/json") not in reply.headers
    ):
        return reply
    accepted = _accepted(req.headers.get("accept-encoding", ""))
    if gz == "1" and "gzip" in accepted:
        body, coding = gzip.compress(reply.body, mtime=0), "gzip"
    elif deflate in ("1", "raw") and "deflate" in accepted:
        packer = zlib.compressobj(wbits=-15 if deflate == "raw" else 15)
        body, coding = packer.compress(reply.body) + packer.flush(), "deflate"
    else:
        return reply
    headers = [*reply.headers, ("content-encoding", coding), ("vary", "accept-encoding")]
    return replace(reply, body=body, headers=headers)


# --------------------------------------------------------------------------- handlers: misc


def health(up: Upstream, req: Request) -> Answer:
    if up.loading():
        return json_reply({"status": "loading"}, 503)
    pattern = up.opts.health_pattern
    if pattern:
        answer = pattern[up.health_probes % len(pattern)]
        up.health_probes += 1
        if answer == "drop":
            return Drop(why="--health-pattern")
        if answer != "200":
            return json_reply({"status": "flapping"}, int(answer))
    if up.stop_accepting is not None:  # --refuse-after-healthy: this is the last accept
        up.stop_accepting()
        up.stop_accepting = None
    return json_reply({"status": "ok"})


def root(up: Upstream, req: Request) -> Answer:
    return text_reply(f"{req.method} {req.path}")


def test_text(up: Upstream, req: Request) -> Answer:
    return text_reply(up.opts.respond)


def pid(up: Upstream, req: Request) -> Answer:
    return json_reply({"pid": os.getpid()})


def env(up: Upstream, req: Request) -> Answer:
    return json_reply(dict(os.environ))


def stats(up: Upstream, req: Request) -> Answer:
    return json_reply(
        {
            "requests": up.requests,
            "disconnects": up.disconnects,
            "aborts": up.aborts,
            "in_flight": up.in_flight - 1,  # not counting this request
            "is_sleeping": up.asleep,
            "model": up.opts.model,
        }
    )


def models(up: Upstream, req: Request) -> Answer:
    entry = {"id": up.opts.model, "object": "model", "created": 0, "owned_by": "swapd-demo"}
    return json_reply({"object": "list", "data": [entry]})


def props(up: Upstream, req: Request) -> Answer:
    settings = {"n_ctx": 4096, "params": {"temperature": 0.8, "top_k": 40, "top_p": 0.95}}
    return json_reply(
        {
            "default_generation_settings": settings,
            "total_slots": 1,
            "model_path": f"/models/{up.opts.model}.gguf",
            "modalities": {"vision": False, "audio": False},
            "build_info": "swapd-demo-upstream",
        }
    )


def echo(up: Upstream, req: Request) -> Answer:
    return json_reply(
        {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "headers": [list(pair) for pair in req.raw_headers],
            "body": req.text(),
            "body_length": len(req.body),
        }
    )


def status_route(up: Upstream, req: Request) -> Answer:
    code = req.path.removeprefix("/status/")
    if not code.isdigit() or not 200 <= int(code) <= 599:
        raise HTTPError(400, f"expected /status/<200..599>, got {req.path}")
    if int(code) in (204, 304):
        return Reply(int(code), [])
    return json_reply({"status": int(code)}, int(code))


def _query_number(req: Request, name: str, default: float) -> float:
    try:
        value = float(req.arg(name) or default)
    except ValueError:
        raise HTTPError(400, f"?{name}= must be a number") from None
    if not math.isfinite(value) or value < 0:
        raise HTTPError(400, f"?{name}= must be >= 0")
    return value


def slow(up: Upstream, req: Request) -> Answer:
    chunks = min(int(_query_number(req, "chunks", 5)), MAX_CHUNKS)
    delay = _query_number(req, "delay", 0.1)
    piece = req.arg("text", "tick\n").encode()
    parts = [(delay if i else 0.0, piece) for i in range(chunks)]
    return StreamReply(200, [("content-type", "text/plain; charset=utf-8")], parts)


def big(up: Upstream, req: Request) -> Answer:
    size = int(_query_number(req, "bytes", 1024 * 1024))

    def parts() -> Iterator[tuple[float, bytes]]:
        for offset in range(0, size, len(BIG_BLOCK)):
            yield 0.0, BIG_BLOCK[: size - offset]

    headers = [("content-type", "application/octet-stream"), ("content-length", str(size))]
    return StreamReply(200, headers, parts())


# --------------------------------------------------------------------------- handlers: inference


def json_shaped(body: dict[str, Any], text: str) -> str | None:
    """The reply as JSON when ``response_format`` asks for it: ``json_object`` gives
    ``{"reply": text}``; ``json_schema`` an object with the schema's properties, each a
    value of its type (strings say ``text``)."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt["type"] == "json_schema" else None
    if not isinstance(schema, dict):
        return json.dumps({"reply": text})
    samples = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    props = schema.get("properties") or {}
    return json.dumps({k: samples.get(v.get("type"), text) for k, v in props.items()})


def tool_calls_for(body: dict[str, Any]) -> list[dict[str, Any]]:
    """With ``tools`` (and ``tool_choice`` not ``none``), unless the last message is a tool's
    answer: one call of the first tool, each parameter of the schema set to a value of its
    type (strings say ``<name> value``), arguments as a JSON string."""
    tools = body.get("tools")
    messages = body.get("messages") or [{}]
    if not tools or body.get("tool_choice") == "none" or messages[-1].get("role") == "tool":
        return []
    function = tools[0].get("function") or {}
    props = (function.get("parameters") or {}).get("properties") or {}
    samples = {"integer": 1, "number": 1.5, "boolean": True}
    arguments = {k: samples.get(v.get("type"), f"{k} value") for k, v in props.items()}
    name = function.get("name", "tool")
    return [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)},
        }
    ]


def reasoning_for(body: dict[str, Any]) -> str:
    """llama-server's ``reasoning_content`` when ``chat_template_kwargs.enable_thinking``."""
    kwargs = body.get("chat_template_kwargs")
    thinking = isinstance(kwargs, dict) and kwargs.get("enable_thinking") is True
    return "Thinking it over before answering." if thinking else ""


def chat_completions(up: Upstream, req: Request) -> Answer:
    body = req.json_object()
    gen = plan(up, req, body, body.get("messages"))
    cid, created = up.next_id("chatcmpl"), int(time.time())
    shaped = json_shaped(body, up.opts.respond)
    if shaped is not None:
        gen = replace(gen, pieces=split_reply(shaped, len(gen.pieces)))
    calls = tool_calls_for(body)
    reasoning = reasoning_for(body)
    if calls or reasoning:
        return chat_extras(gen, cid, created, calls, reasoning)
    if gen.stream:

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": gen.model,
                "choices": [choice],
            }

        deltas = [
            sse(chunk({"role": "assistant", "content": p} if i == 0 else {"content": p}))
            for i, p in enumerate(gen.pieces)
        ]
        final = {**chunk({}, "stop"), "usage": gen.usage(), "timings": gen.timings()}
        return paced(gen, [], deltas, [sse(final), DONE])
    message = {"role": "assistant", "content": gen.text}
    reply: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": gen.model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": gen.usage(),
        "timings": gen.timings(),
    }
    if up.opts.debug_fields:
        reply["x_upstream_model"] = up.opts.model
        reply["x_request_body"] = req.text()
        reply["x_content_length"] = req.headers.get("content-length")
    return complete(gen, reply)


def chat_extras(
    gen: Gen, cid: str, created: int, calls: list[dict[str, Any]], reasoning: str
) -> Answer:
    """A chat reply with tool calls (no text) or with reasoning before its text."""
    pieces = () if calls else gen.pieces
    gen = replace(gen, pieces=pieces)
    finish = "tool_calls" if calls else "stop"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        base = {"id": cid, "object": "chat.completion.chunk", "created": created}
        return {**base, "model": gen.model, "choices": [choice]}

    if gen.stream:
        head = (
            [sse(chunk({"role": "assistant", "reasoning_content": reasoning}))] if reasoning else []
        )
        deltas = [sse(chunk({"content": p})) for p in pieces]
        for i, call in enumerate(calls):  # name first, then the arguments in two halves
            fn = call["function"]
            half = len(fn["arguments"]) // 2
            start = {"index": i, "id": call["id"], "type": "function"}
            deltas.append(
                sse(
                    chunk(
                        {
                            "tool_calls": [
                                {**start, "function": {"name": fn["name"], "arguments": ""}}
                            ]
                        }
                    )
                )
            )
            deltas.extend(
                sse(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
                for part in (fn["arguments"][:half], fn["arguments"][half:])
            )
        final = {**chunk({}, finish), "usage": gen.usage(), "timings": gen.timings()}
        return paced(gen, head, deltas, [sse(final), DONE])
    message: dict[str, Any] = {"role": "assistant", "content": gen.text}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message, "finish_reason": finish}
    return complete(
        gen,
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": gen.model,
            "choices": [choice],
            "usage": gen.usage(),
            "timings": gen.timings(),
        },
    )


def completions(up: Upstream, req: Request) -> Answer:
    body = req.json_object()
    gen = plan(up, req, body, body.get("prompt"))
    cid, created = up.next_id("cmpl"), int(time.time())

    def envelope(text: str, finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return {
            "id": cid,
            "object": "text_completion",
            "created": created,
            "model": gen.model,
            "choices": [choice],
        }

    if gen.stream:
        final = {**envelope("", "stop"), "usage": gen.usage(), "timings": gen.timings()}
        return paced(gen, [], [sse(envelope(p, None)) for p in gen.pieces], [sse(final), DONE])
    return complete(
        gen, {**envelope(gen.text, "stop"), "usage": gen.usage(), "timings": gen.timings()}
    )


def llama_completion(up: Upstream, req: Request) -> Answer:
    """llama-server's native /completion and /infill (no [DONE]; timings, no usage)."""
    body = req.json_object()
    prompt = [body.get(key) for key in ("prompt", "input_prefix", "input_suffix", "input_extra")]
    gen = plan(up, req, body, prompt)
    final = {
        "index": 0,
        "content": "" if gen.stream else gen.text,
        "stop": True,
        "model": gen.model,
        "stop_type": "eos",
        "tokens_predicted": gen.completion_tokens,
        "tokens_evaluated": gen.prompt_tokens,
        "timings": gen.timings(),
    }
    if gen.stream:
        deltas = [sse({"index": 0, "content": p, "stop": False}) for p in gen.pieces]
        return paced(gen, [], deltas, [sse(final)])
    return complete(gen, [final] if body.get("x_array") is True else final)


def responses(up: Upstream, req: Request) -> Answer:
    body = req.json_object()
    gen = plan(up, req, body, body.get("instructions"), body.get("input"))
    rid, mid = up.next_id("resp"), up.next_id("msg")

    def response(status: str, text: str) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        item = {"type": "message", "id": mid, "status": status, "role": "assistant"}
        output = [{**item, "content": content}]
        obj: dict[str, Any] = {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": gen.model,
            "output": output if text else [],
            "output_text": text,
        }
        if status == "completed":
            done = gen.completion_tokens
            usage = {"input_tokens": gen.prompt_tokens, "output_tokens": done}
            obj["usage"] = {**usage, "total_tokens": gen.prompt_tokens + done}
        return obj

    if gen.stream:
        created = typed_event("response.created", response=response("in_progress", ""))
        deltas = [
            typed_event(
                "response.output_text.delta", item_id=mid, output_index=0, content_index=0, delta=p
            )
            for p in gen.pieces
        ]
        done = typed_event("response.completed", response=response("completed", gen.text))
        return paced(gen, [created], deltas, [done])
    return complete(gen, response("completed", gen.text))


def messages(up: Upstream, req: Request) -> Answer:
    """Anthropic Messages API: a message object or its SSE event sequence."""
    body = req.json_object()
    gen = plan(up, req, body, body.get("system"), body.get("messages"))
    mid = up.next_id("msg")
    message: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": gen.model,
        "content": [{"type": "text", "text": gen.text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": gen.prompt_tokens, "output_tokens": gen.completion_tokens},
    }
    if gen.stream:
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": gen.prompt_tokens, "output_tokens": 1},
        }
        block = {"type": "text", "text": ""}
        head = [
            typed_event("message_start", message=start),
            typed_event("content_block_start", index=0, content_block=block),
        ]
        deltas = [
            typed_event("content_block_delta", index=0, delta={"type": "text_delta", "text": p})
            for p in gen.pieces
        ]
        stop = {"stop_reason": "end_turn", "stop_sequence": None}
        tail = [
            typed_event("content_block_stop", index=0),
            typed_event(
                "message_delta", delta=stop, usage={"output_tokens": gen.completion_tokens}
            ),
            typed_event("message_stop"),
        ]
        return paced(gen, head, deltas, tail)
    return complete(gen, message)


def count_tokens(up: Upstream, req: Request) -> Answer:
    body = req.json_object()
    return json_reply({"input_tokens": count_words(body.get("system"), body.get("messages"))})


def embeddings(up: Upstream, req: Request) -> Answer:
    body = req.json_object()
    plan(up, req, body)  # honours x_status
    raw = body.get("input")
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        inputs: list[Any] = [raw]
    elif isinstance(raw, list) and raw:
        inputs = raw
    else:
        raise HTTPError(400, "input must be a string or a non-empty list")
    data = [
        {"object": "embedding", "index": i, "embedding": embedding(v)} for i, v in enumerate(inputs)
    ]
    tokens = count_words(inputs)
    return json_reply(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", up.opts.model),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def rerank(up: Upstream, req: Request) -> Answer:
    body = req.json_object()
    plan(up, req, body)
    query, documents = body.get("query"), body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list):
        raise HTTPError(400, "rerank needs a string query and a list of documents")
    texts = [d if isinstance(d, str) else " ".join(_texts(d)) for d in documents]
    results = [{"index": i, "relevance_score": _score(query, t)} for i, t in enumerate(texts)]
    results.sort(key=lambda r: -float(r["relevance_score"]))
    top_n = body.get("top_n")
    if isinstance(top_n, int) and top_n >= 0:
        results = results[:top_n]
    tokens = count_words(query, texts)
    return json_reply(
        {
            "object": "list",
            "model": body.get("model", up.opts.model),
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def transcriptions(up: Upstream, req: Request) -> Answer:
    fields, files = parse_multipart(req)
    if "model" not in fields:
        raise HTTPError(400, "Missing model parameter")
    upload = files.get("file")
    if upload is None:
        raise HTTPError(400, "Missing file parameter")
    return json_reply(
        {
            "text": f"The length of the file is {len(upload.data)} bytes",
            "model": fields["model"],
            "fields": fields,
            "filename": upload.filename,
            "h_content_type": req.headers.get("content-type"),
            "h_content_length": req.headers.get("content-length"),
        }
    )


def speech(up: Upstream, req: Request) -> Answer:
    body = req.json_object()
    plan(up, req, body)
    digest = hashlib.sha256(str(body.get("input", "")).encode()).digest()
    return Reply(200, [("content-type", "audio/mpeg")], FAKE_MP3 + digest)


def voices(up: Upstream, req: Request) -> Answer:
    return json_reply({"voices": ["voice1"], "model": req.arg("model")})


def images(up: Upstream, req: Request) -> Answer:
    if req.path.endswith("/edits"):
        fields, _ = parse_multipart(req)
        count = fields.get("n", "1")
    else:
        body = req.json_object()
        plan(up, req, body)
        count = str(body.get("n", 1))
    n = min(int(count), 10) if count.isdigit() else 1
    return json_reply({"created": int(time.time()), "data": [{"b64_json": TINY_PNG_B64}] * n})


def txt2img(up: Upstream, req: Request) -> Answer:
    req.json_object()
    return json_reply({"images": [TINY_PNG_B64], "parameters": {}, "info": "{}"})


# --------------------------------------------------------------------------- handlers: sleep


def sleep_route(up: Upstream, req: Request) -> Answer:
    if up.opts.fail_sleep:
        raise HTTPError(500, "sleep failed (--fail-sleep)")
    level = req.arg("level", "1")
    up.asleep, up.sleep_level = True, int(level) if level.isdigit() else 1
    return json_reply({"is_sleeping": True, "level": up.sleep_level})


def wake_up(up: Upstream, req: Request) -> Answer:
    if up.opts.fail_wake:
        raise HTTPError(500, "wake_up failed (--fail-wake)")
    up.asleep = False
    return json_reply({"is_sleeping": False})


def wake_up_fail(up: Upstream, req: Request) -> Answer:
    raise HTTPError(500, "wake_up_fail always fails")


def is_sleeping(up: Upstream, req: Request) -> Answer:
    return json_reply({"is_sleeping": up.asleep})


def collective_rpc(up: Upstream, req: Request) -> Answer:
    if b"reload_weights" not in req.body:
        raise HTTPError(400, "collective_rpc: only reload_weights is supported")
    return json_reply({"results": [None]})


def reset_prefix_cache(up: Upstream, req: Request) -> Answer:
    return json_reply({"status": "ok"})


ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/"): Route(root, style="plain"),
    ("GET", "/test"): Route(test_text, style="plain"),
    ("GET", "/pid"): Route(pid, style="plain"),
    ("GET", "/env"): Route(env, style="plain"),
    ("GET", "/stats"): Route(stats, style="plain"),
    ("GET", "/props"): Route(props, style="plain"),
    ("GET", "/v1/models"): Route(models),
    ("GET", "/slow"): Route(slow, style="plain"),
    ("GET", "/big"): Route(big, style="plain"),
    ("POST", "/v1/chat/completions"): Route(chat_completions, inference=True),
    ("POST", "/v1/completions"): Route(completions, inference=True),
    ("POST", "/completion"): Route(llama_completion, inference=True),
    ("POST", "/infill"): Route(llama_completion, inference=True),
    ("POST", "/v1/responses"): Route(responses, inference=True),
    ("POST", "/v1/embeddings"): Route(embeddings, inference=True),
    ("POST", "/v1/messages"): Route(messages, inference=True, style="anthropic"),
    ("POST", "/v1/messages/count_tokens"): Route(count_tokens, inference=True, style="anthropic"),
    ("POST", "/v1/audio/transcriptions"): Route(transcriptions, inference=True, style="plain"),
    ("POST", "/v1/audio/speech"): Route(speech, inference=True),
    ("GET", "/v1/audio/voices"): Route(voices),
    ("POST", "/v1/images/generations"): Route(images, inference=True),
    ("POST", "/v1/images/edits"): Route(images, inference=True),
    ("POST", "/sdapi/v1/txt2img"): Route(txt2img, inference=True, style="plain"),
    **{
        ("POST", p): Route(rerank, inference=True)
        for p in ("/rerank", "/v1/rerank", "/v1/reranking", "/reranking")
    },
}
# As a server without /v1 (swapd's versionless /v/... routes strip the /v).
ROUTES["POST", "/chat/completions"] = Route(chat_completions, inference=True)
SLEEP_ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/sleep"): Route(sleep_route, style="plain"),
    ("POST", "/wake_up"): Route(wake_up, style="plain"),
    ("POST", "/wake_up_fail"): Route(wake_up_fail, style="plain"),
    ("GET", "/is_sleeping"): Route(is_sleeping, style="plain"),
    ("POST", "/collective_rpc"): Route(collective_rpc, style="plain"),
    ("POST", "/reset_prefix_cache"): Route(reset_prefix_cache, style="plain"),
}
PREFIX_ROUTES: tuple[tuple[str, Route], ...] = (
    ("/echo/", Route(echo, style="plain")),
    ("/status/", Route(status_route, style="plain")),
)


# --------------------------------------------------------------------------- HTTP connection


class Connection:
    """One client connection: requests in turn (keep-alive), each answered completely."""

    def __init__(self, up: Upstream, stream: trio.SocketStream) -> None:
        self.up = up
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER)
        self.chunks_sent = 0

    async def serve(self) -> None:
        try:
            while await self._serve_one():
                self.h11.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            await self._reject(exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except h11.LocalProtocolError:  # a bug here must not take the whole server down
            traceback.print_exc()
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _serve_one(self) -> bool:
        req = await self._read_request()
        if req is None:
            return False
        self.up.requests += 1
        self.up.in_flight += 1
        try:
            keep = await self._answer(req, self.up.dispatch(req))
        finally:
            self.up.in_flight -= 1
        return keep and self.h11.our_state is h11.DONE

    async def _next_event(self) -> object:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            self.h11.receive_data(data)

    async def _read_request(self) -> Request | None:
        event = await self._next_event()
        if not isinstance(event, h11.Request):
            return None
        if self.h11.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))
        chunks: list[bytes] = []
        while True:
            part = await self._next_event()
            if isinstance(part, h11.Data):
                chunks.append(part.data)
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                return None
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()]
        return Request(
            method=event.method.decode("ascii"),
            target=target,
            path=path,
            query=query,
            raw_headers=raw,
            headers={k.lower(): v for k, v in raw},
            body=b"".join(chunks),
        )

    async def _send(self, *events: h11.Event) -> None:
        """Everything given goes out in a single socket write."""
        data = b"".join(self.h11.send(e) or b"" for e in events)
        if data:
            await self.stream.send_all(data)

    def _head(self, status: int, headers: list[tuple[str, str]]) -> h11.Response:
        return h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b""))

    async def _answer(self, req: Request, answer: Answer) -> bool:
        """Send the answer; False when the connection must close."""
        if isinstance(answer, StreamReply):
            return await self._send_stream(req, answer)
        if isinstance(answer, Drop):
            if await self._watched(req, functools.partial(trio.sleep, answer.delay)):
                self.up.dropped(req, 0, answer.why)
            return False
        if answer.delay > 0:
            return await self._watched(req, functools.partial(self._send_reply, req, answer))
        await self._send_reply(req, answer)
        return True

    async def _send_reply(self, req: Request, reply: Reply) -> None:
        if reply.delay > 0:
            await trio.sleep(reply.delay)
        no_body = reply.status in (204, 304)
        headers = (
            reply.headers if no_body else [*reply.headers, ("content-length", str(len(reply.body)))]
        )
        events: list[h11.Event] = [self._head(reply.status, headers)]
        if reply.body and not no_body and req.method != "HEAD":
            events.append(h11.Data(data=reply.body))
        events.append(h11.EndOfMessage())
        await self._send(*events)
        self.up.log(req, reply.status)

    async def _send_stream(self, req: Request, reply: StreamReply) -> bool:
        async def work() -> None:
            await self._send(self._head(reply.status, reply.headers))
            self.up.log(req, reply.status)
            if req.method != "HEAD":
                for delay, data in reply.parts:
                    if delay > 0:
                        await trio.sleep(delay)
                    await self._send(h11.Data(data=data))
                    self.chunks_sent += 1
                    if self.chunks_sent == self.up.opts.crash_after_chunks:
                        say(f"demo upstream crashing after {self.chunks_sent} chunks", err=True)
                        os._exit(self.up.opts.exit_code)
                if reply.abort:
                    return
            await self._send(h11.EndOfMessage())

        if not await self._watched(req, work):
            return False
        if reply.abort:
            self.up.dropped(req, self.chunks_sent)
            return False
        return True

    async def _watched(self, req: Request, work: Callable[[], Awaitable[None]]) -> bool:
        """Run work while watching the client; False (and counted) if it went away."""
        self.chunks_sent = 0
        broken = completed = False
        with trio.CancelScope() as gone:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_client, gone)
                try:
                    await work()
                    completed = True
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    broken = True
                nursery.cancel_scope.cancel()
        if broken or (gone.cancelled_caught and not completed):
            self.up.client_gone(req, self.chunks_sent)
            return False
        return True

    async def _watch_client(self, gone: trio.CancelScope) -> None:
        """Cancel ``gone`` at EOF; bytes that arrive (a pipelined request) go to h11."""
        while True:
            try:
                data = await self.stream.receive_some(RECV_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                gone.cancel()
                return
            self.h11.receive_data(data)

    async def _reject(self, exc: h11.RemoteProtocolError) -> None:
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        reply = error_reply(exc.error_status_hint, f"bad request: {exc}", "plain")
        headers = [
            *reply.headers,
            ("content-length", str(len(reply.body))),
            ("connection", "close"),
        ]
        with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError):
            await self._send(
                self._head(reply.status, headers),
                h11.Data(data=reply.body),
                h11.EndOfMessage(),
            )


# --------------------------------------------------------------------------- process


async def _watch_signals(
    up: Upstream, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    signals = {signal.SIGINT} if up.opts.ignore_sigterm else {signal.SIGINT, signal.SIGTERM}
    with trio.open_signal_receiver(*signals) as received:
        task_status.started()
        async for signum in received:
            up.stop(0, f"received {signal.Signals(signum).name}")


async def _exit_later(up: Upstream, seconds: float) -> None:
    await trio.sleep(seconds)
    up.stop(up.opts.exit_code, f"--exit-after {seconds:g}")


def _spawn_grandchild() -> subprocess.Popen[bytes]:
    """A long-lived child in our process group (it inherits stdout, like real helpers do)."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(3600)"], stdin=subprocess.DEVNULL
    )
    say(f"grandchild pid {child.pid}")
    return child


async def _handle(up: Upstream, stream: trio.SocketStream) -> None:
    # trio already sets TCP_NODELAY on TCP streams; set it explicitly since latency matters here
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await Connection(up, stream).serve()


def _refuse_from_now(accepting: trio.CancelScope, listeners: list[trio.SocketListener]) -> None:
    """Close the listening sockets now, before the healthy answer is written: closing them
    only when the cancelled accept loop next ran left a window (wide on a busy machine) in
    which swapd, already told "healthy", connected and was served normally."""
    accepting.cancel()  # first, so the accept loop wakes cancelled, not on a closed socket
    for listener in listeners:
        listener.socket.close()


async def _serve(up: Upstream) -> None:
    opts = up.opts
    await trio.sleep(opts.start_delay)
    if opts.crash_before_listen:
        say(
            f"demo upstream {opts.model}: crashing before listening (--crash-before-listen)",
            err=True,
        )
        up.stop(opts.exit_code, "--crash-before-listen")
        return
    try:
        listeners = await trio.open_tcp_listeners(opts.port, host=opts.host)
    except OSError as exc:
        up.stop(1, f"cannot listen on {opts.host}:{opts.port}: {exc}")
        return
    up.ready_at = trio.current_time() + opts.loading_delay
    host, port = listeners[0].socket.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    say(f"demo upstream {opts.model} listening on http://{shown}:{port} pid {os.getpid()}")
    if not opts.refuse_after_healthy:
        await trio.serve_listeners(functools.partial(_handle, up), listeners)  # never returns
    # --refuse-after-healthy: connections live in their own nursery, so they outlast the
    # accept loop that the first healthy answer cancels.
    async with trio.open_nursery() as connections:
        with trio.CancelScope() as accepting:
            up.stop_accepting = functools.partial(_refuse_from_now, accepting, listeners)
            await trio.serve_listeners(
                functools.partial(_handle, up), listeners, handler_nursery=connections
            )
        say(f"demo upstream {opts.model}: healthy once, now refusing connections", err=True)
        await trio.sleep_forever()


#: --load-stages: (share of the load, line) in the shape of llama-server's own output.
LOAD_STAGE_LINES = (
    (0.0, "srv    load_model: loading model '{model}.gguf'"),
    (0.2, "load_tensors: loading model tensors, this can take a while... (load_mode = mmap)"),
    (0.6, "llama_context: constructing llama_context"),
    (0.7, "common_init_: warming up the model with an empty run - please wait ..."),
    (1.0, "srv  llama_server: model loaded"),
)


async def _print_load_stages(opts: Options) -> None:
    total = opts.start_delay + opts.loading_delay
    started = trio.current_time()
    for share, line in LOAD_STAGE_LINES:
        await trio.sleep_until(started + share * total)
        say(line.format(model=opts.model), err=True)


async def run(opts: Options) -> int:
    """Serve until a signal, --exit-after or --crash-before-listen; returns the exit code."""
    async with trio.open_nursery() as nursery:
        up = Upstream(opts, nursery.cancel_scope)
        await nursery.start(_watch_signals, up)
        if opts.exit_after is not None:
            nursery.start_soon(_exit_later, up, opts.exit_after)
        if opts.spawn_grandchild:
            up.grandchild = _spawn_grandchild()
        if opts.load_stages:
            nursery.start_soon(_print_load_stages, opts)
        nursery.start_soon(_serve, up)
    return up.exit_code or 0


def _hold_memory(mib: int) -> bytearray:
    """``mib`` MiB with one byte written per page, so every page is really resident."""
    block = bytearray(mib * 1024 * 1024)
    block[::4096] = b"\x01" * len(range(0, len(block), 4096))
    return block


def _out_of_memory_now(opts: Options) -> bool:
    """``--oom-first-start``: count this start in the file; True (after printing the
    out-of-memory line) while fewer than ``--oom-starts`` starts came before it."""
    if opts.oom_first_start is None:
        return False
    try:
        with open(opts.oom_first_start, encoding="utf-8") as file:
            before = int(file.read().strip() or 0)
    except FileNotFoundError:
        before = 0
    with open(opts.oom_first_start, "w", encoding="utf-8") as file:
        file.write(f"{before + 1}\n")
    if before >= opts.oom_starts:
        return False
    say("load_tensors: loading model tensors, this can take a while...", err=True)
    say(opts.oom_line, err=True)
    say("main: exiting due to model loading error", err=True)
    if opts.oom_kill:
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if _out_of_memory_now(opts):
        return 1
    held = _hold_memory(opts.hold_mib)  # noqa: F841 - kept alive until the process exits
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if opts.ignore_sigterm else None
    try:
        return trio.run(run, opts)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
