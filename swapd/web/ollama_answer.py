"""OpenAI answers → Ollama answers (pure: no I/O, no Quart).

- ``SseDecoder`` splits an upstream event stream into its ``data:`` payloads as bytes
  arrive, so each upstream event becomes one NDJSON line at once (nothing is buffered
  beyond one partial line).
- ``StreamTranslator`` turns those events into Ollama stream lines for ``/api/chat`` or
  ``/api/generate``: content and ``reasoning_content`` (→ ``thinking``) as they come; tool
  call fragments are joined and sent as one line with their arguments as objects (Ollama
  clients expect whole calls); the ``done`` line carries the counts and durations.
- ``chat_answer`` / ``generate_answer`` / ``embed_answer`` / ``embeddings_answer``
  translate whole (non-streamed) answers.

Counts and durations (``Timing``): token counts come from the upstream's ``usage``, else
from llama-server's ``timings``; ``prompt_eval_duration`` and ``eval_duration`` from
``timings`` (milliseconds) when present, else from when swapd saw the first and last
bytes; ``load_duration`` is the time spent before the upstream answered (waiting for the
model to load, or for a free slot); all in nanoseconds as Ollama sends them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "SseDecoder",
    "StreamTranslator",
    "Timing",
    "chat_answer",
    "embed_answer",
    "embeddings_answer",
    "error_message",
    "generate_answer",
    "stats",
]

Kind = Literal["chat", "generate"]


@attrs.define
class Timing:
    """When things happened, in seconds on one monotonic clock."""

    started: float  # the request arrived
    answered: float | None = None  # the upstream's response head arrived
    first: float | None = None  # the first content arrived
    ended: float | None = None  # the last byte arrived


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def _number(source: Mapping[str, Any] | None, key: str) -> float | None:
    value = source.get(key) if source else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def stats(
    usage: Mapping[str, Any] | None, timings: Mapping[str, Any] | None, timing: Timing
) -> dict[str, int]:
    """Ollama's counts and durations for one answer (see the module docstring)."""
    ended = timing.ended if timing.ended is not None else timing.started
    answered = timing.answered if timing.answered is not None else timing.started
    first = timing.first if timing.first is not None else answered
    out = {
        "total_duration": _ns(ended - timing.started),
        "load_duration": _ns(answered - timing.started),
    }
    prompt_n = _number(usage, "prompt_tokens")
    if prompt_n is None:
        prompt_n = _number(timings, "prompt_n")
    eval_n = _number(usage, "completion_tokens")
    if eval_n is None:
        eval_n = _number(timings, "predicted_n")
    prompt_ms = _number(timings, "prompt_ms")
    eval_ms = _number(timings, "predicted_ms")
    out["prompt_eval_count"] = int(prompt_n or 0)
    out["prompt_eval_duration"] = (
        _ns(prompt_ms / 1000) if prompt_ms is not None else _ns(first - answered)
    )
    out["eval_count"] = int(eval_n or 0)
    out["eval_duration"] = _ns(eval_ms / 1000) if eval_ms is not None else _ns(ended - first)
    return out


def error_message(body: bytes) -> str:
    """The message of an upstream's (or swapd's) error body, whatever its dialect."""
    try:
        data = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or "the upstream answered with an error"
    if isinstance(data, Mapping):
        error = data.get("error")
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return json.dumps(data)[:500]


class SseDecoder:
    """Bytes of an event stream in, ``data`` payloads out (one per event)."""

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[str]:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data).decode("utf-8", "replace"))
                    self._data = []
            elif line.startswith(b"data:"):
                self._data.append(line[5:].removeprefix(b" "))
        return events

    def close(self) -> list[str]:
        """Whatever event the stream ended in without its blank line."""
        events = self.feed(b"\n\n") if self._partial or self._data else []
        return events


def _tool_calls(calls: Mapping[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Joined OpenAI tool call fragments as Ollama tool calls (arguments as objects)."""
    out = []
    for index in sorted(calls):
        call = calls[index]
        text = call["arguments"] or "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            raise ValueError(
                f"the model called {call['name']!r} with arguments that are not JSON: {text[:200]}"
            ) from None
        if not isinstance(arguments, Mapping):
            arguments = {"value": arguments}
        function = {"index": index, "name": call["name"], "arguments": arguments}
        entry: dict[str, Any] = {"function": function}
        if call["id"]:
            entry["id"] = call["id"]
        out.append(entry)
    return out


def _done_reason(finish: object) -> str:
    return "length" if finish == "length" else "stop"


class StreamTranslator:
    """Upstream SSE payloads of one answer → Ollama NDJSON objects.

    ``now`` gives the ``created_at`` timestamp of each line; ``think`` is the request's
    ``think`` (``False`` drops the model's reasoning, as Ollama does)."""

    def __init__(self, kind: Kind, model: str, now: Callable[[], str], think: object) -> None:
        self.kind = kind
        self.model = model
        self._now = now
        self._keep_thinking = think is not False
        self._calls: dict[int, dict[str, Any]] = {}
        self._finish: object = None
        self.usage: Mapping[str, Any] | None = None
        self.timings: Mapping[str, Any] | None = None
        self.saw_done = False

    def _line(self, content: str, thinking: str, **extra: Any) -> dict[str, Any]:
        line: dict[str, Any] = {"model": self.model, "created_at": self._now()}
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if "tool_calls" in extra:
                message["tool_calls"] = extra.pop("tool_calls")
            line["message"] = message
        else:
            line["response"] = content
            if thinking:
                line["thinking"] = thinking
        line.update(extra)
        return line

    def event(self, payload: str) -> list[dict[str, Any]]:
        """One upstream event → the Ollama lines it makes (often one, maybe none).

        Raises ``ValueError`` for an error event or a tool call that is not JSON."""
        if payload.strip() == "[DONE]":
            self.saw_done = True
            return []
        try:
            data = json.loads(payload)
        except ValueError:
            return []  # not JSON: a comment or keep-alive some servers send
        if not isinstance(data, Mapping):
            return []
        if "error" in data:
            raise ValueError(error_message(payload.encode()))
        if isinstance(data.get("usage"), Mapping):
            self.usage = data["usage"]
        if isinstance(data.get("timings"), Mapping):
            self.timings = data["timings"]
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
            return []
        choice = choices[0]
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):  # /v1/completions: {"text": ...}
            delta = {"content": choice.get("text")}
        content = delta.get("content") or ""
        thinking = (delta.get("reasoning_content") or "") if self._keep_thinking else ""
        for fragment in delta.get("tool_calls") or ():
            self._add_call(fragment)
        lines = []
        if content or thinking:
            lines.append(self._line(content, thinking, done=False))
        if self._finish and self._calls:
            lines.append(self._line("", "", tool_calls=_tool_calls(self._calls), done=False))
            self._calls = {}
        return lines

    def _add_call(self, fragment: object) -> None:
        if not isinstance(fragment, Mapping):
            return
        index = fragment.get("index", len(self._calls))
        call = self._calls.setdefault(index, {"id": "", "name": "", "arguments": ""})
        if fragment.get("id"):
            call["id"] = fragment["id"]
        function = fragment.get("function")
        if isinstance(function, Mapping):
            call["name"] += function.get("name") or ""
            call["arguments"] += function.get("arguments") or ""

    def finish(self, timing: Timing) -> list[dict[str, Any]]:
        """The last lines: any tool calls not sent yet, then the ``done`` line."""
        lines = []
        if self._calls:
            lines.append(self._line("", "", tool_calls=_tool_calls(self._calls), done=False))
            self._calls = {}
        lines.append(
            self._line(
                "",
                "",
                done=True,
                done_reason=_done_reason(self._finish),
                **stats(self.usage, self.timings, timing),
            )
        )
        return lines


def _first_choice(answer: Mapping[str, Any]) -> Mapping[str, Any]:
    choices = answer.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        return choices[0]
    raise ValueError("the upstream's answer has no choices")


def _message_parts(choice: Mapping[str, Any], think: object) -> tuple[str, str, list[Any]]:
    message = choice.get("message")
    if not isinstance(message, Mapping):  # /v1/completions
        return str(choice.get("text") or ""), "", []
    content = message.get("content") or ""
    thinking = (message.get("reasoning_content") or "") if think is not False else ""
    calls: dict[int, dict[str, Any]] = {}
    for index, call in enumerate(message.get("tool_calls") or ()):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        calls[index] = {
            "id": call.get("id") or "",
            "name": function.get("name") or "",
            "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
        }
    return str(content), str(thinking), _tool_calls(calls)


def chat_answer(
    answer: Mapping[str, Any], model: str, created_at: str, think: object, timing: Timing
) -> dict[str, Any]:
    """A whole ``/v1/chat/completions`` answer as an ``/api/chat`` answer."""
    choice = _first_choice(answer)
    content, thinking, calls = _message_parts(choice, think)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = calls
    return {
        "model": model,
        "created_at": created_at,
        "message": message,
        "done": True,
        "done_reason": _done_reason(choice.get("finish_reason")),
        **stats(_mapping(answer.get("usage")), _mapping(answer.get("timings")), timing),
    }


def generate_answer(
    answer: Mapping[str, Any], model: str, created_at: str, think: object, timing: Timing
) -> dict[str, Any]:
    """A whole chat or completions answer as an ``/api/generate`` answer."""
    choice = _first_choice(answer)
    content, thinking, _ = _message_parts(choice, think)
    out: dict[str, Any] = {"model": model, "created_at": created_at, "response": content}
    if thinking:
        out["thinking"] = thinking
    out.update(
        done=True,
        done_reason=_done_reason(choice.get("finish_reason")),
        **stats(_mapping(answer.get("usage")), _mapping(answer.get("timings")), timing),
    )
    return out


def _mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _vectors(answer: Mapping[str, Any]) -> list[list[float]]:
    data = answer.get("data")
    if not isinstance(data, list):
        raise ValueError("the upstream's embeddings answer has no data")
    items = sorted(
        (item for item in data if isinstance(item, Mapping)), key=lambda i: i.get("index", 0)
    )
    vectors = [item.get("embedding") for item in items]
    if not all(isinstance(v, list) for v in vectors):
        raise ValueError("the upstream's embeddings answer is not a list of vectors")
    return [[float(x) for x in v] for v in vectors if isinstance(v, list)]


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


def embed_answer(answer: Mapping[str, Any], model: str, timing: Timing) -> dict[str, Any]:
    """``/v1/embeddings`` → ``/api/embed``: vectors scaled to unit length, as Ollama's are."""
    usage = _mapping(answer.get("usage"))
    counts = stats(usage, None, timing)
    return {
        "model": model,
        "embeddings": [_normalized(v) for v in _vectors(answer)],
        "total_duration": counts["total_duration"],
        "load_duration": counts["load_duration"],
        "prompt_eval_count": counts["prompt_eval_count"],
    }


def embeddings_answer(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``/v1/embeddings`` → the older ``/api/embeddings`` (one vector, as the model gave it)."""
    vectors = _vectors(answer)
    return {"embedding": vectors[0] if vectors else []}
