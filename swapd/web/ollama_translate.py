"""Ollama requests → OpenAI requests (pure: no I/O, no Quart).

Each ``*_request`` function takes the parsed JSON body of an Ollama route and returns an
``Upstream`` call: the OpenAI path and body to send to the model's upstream. Bad input
raises ``ValueError`` with a message for the client (the route answers 400).

Mapping, by Ollama field:

- ``messages`` (chat) → OpenAI messages: ``images`` (base64) become ``image_url`` content
  parts with a ``data:`` URL; an assistant's ``tool_calls`` get ids and JSON-string
  arguments; a ``tool`` message takes the id of the call it answers (Ollama has none).
- ``prompt``/``system``/``images`` (generate) → a system and a user message; ``raw: true``
  → ``/v1/completions`` with the prompt as is (no chat template).
- ``format``: ``"json"`` → ``response_format: json_object``; a JSON schema →
  ``response_format: json_schema``.
- ``options``: sampling options map to their OpenAI/llama-server names
  (``num_predict`` → ``max_tokens``, ``repeat_penalty``, ``top_k``, ``min_p``…). Load-time
  options (``num_ctx``, ``num_gpu``, ``num_thread``, ``use_mmap``…) are ignored: in swapd
  they belong to the model's ``cmd`` in the config, which a request cannot change.
- ``tools`` → OpenAI ``tools`` (same shape); ``think`` → llama-server's
  ``chat_template_kwargs.enable_thinking`` (and ``reasoning_effort`` for ``"low"``…).
- ``stream`` (default true) → ``stream`` with ``stream_options.include_usage``, so the
  last event carries the token counts.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "IGNORED_OPTIONS",
    "Upstream",
    "chat_request",
    "embed_request",
    "embeddings_request",
    "generate_request",
    "is_streaming",
    "map_options",
]

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

# Ollama option → OpenAI / llama-server request field.
_OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "typical_p": "typical_p",
    "seed": "seed",
    "stop": "stop",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "mirostat": "mirostat",
    "mirostat_tau": "mirostat_tau",
    "mirostat_eta": "mirostat_eta",
    "num_keep": "n_keep",
    "tfs_z": "tfs_z",
}
# Options that configure the model server when Ollama loads a model; swapd's model
# command line decides these, so a request's values are ignored.
IGNORED_OPTIONS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "num_thread",
        "numa",
        "use_mmap",
        "use_mlock",
        "vocab_only",
        "logits_all",
        "embedding_only",
        "f16_kv",
        "penalize_newline",
    }
)
_THINK_LEVELS = ("low", "medium", "high")


@attrs.frozen
class Upstream:
    """What to send to the model's upstream: an OpenAI path and its JSON body."""

    path: str
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True


def is_streaming(body: Mapping[str, Any]) -> bool:
    """Ollama streams unless the request says ``"stream": false``."""
    return body.get("stream") is not False


def chat_request(body: Mapping[str, Any]) -> Upstream:
    """``POST /api/chat`` → ``/v1/chat/completions``."""
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise ValueError("'messages' must be a list")
    out = _common(body)
    out["messages"] = _messages(messages)
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
    return Upstream(CHAT_PATH, out)


def generate_request(body: Mapping[str, Any]) -> Upstream:
    """``POST /api/generate`` → ``/v1/chat/completions`` (or ``/v1/completions`` when raw)."""
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    if body.get("suffix"):
        raise ValueError(
            "'suffix' (fill-in-the-middle) is not supported on /api/generate; "
            "use the model's /infill route through swapd instead"
        )
    out = _common(body)
    if body.get("raw") is True:
        if body.get("images"):
            raise ValueError("'images' cannot be used with 'raw': true")
        out["prompt"] = prompt
        return Upstream(COMPLETIONS_PATH, out)
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        if not isinstance(system, str):
            raise ValueError("'system' must be a string")
        messages.append({"role": "system", "content": system})
    messages.append(_message({"role": "user", "content": prompt, "images": body.get("images")}))
    out["messages"] = messages
    return Upstream(CHAT_PATH, out)


def embed_request(body: Mapping[str, Any]) -> Upstream:
    """``POST /api/embed`` → ``/v1/embeddings``."""
    raw = body.get("input")
    valid = isinstance(raw, str) or (
        isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw)
    )
    if not valid:
        raise ValueError("'input' must be a string or a non-empty list of strings")
    out: dict[str, Any] = {"model": _model(body), "input": raw}
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
            raise ValueError("'dimensions' must be a positive integer")
        out["dimensions"] = dimensions
    return Upstream(EMBEDDINGS_PATH, out)


def embeddings_request(body: Mapping[str, Any]) -> Upstream:
    """The older ``POST /api/embeddings`` (one ``prompt``) → ``/v1/embeddings``."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    return Upstream(EMBEDDINGS_PATH, {"model": _model(body), "input": prompt})


def map_options(options: object) -> dict[str, Any]:
    """Ollama ``options`` → OpenAI/llama-server fields (load-time options dropped)."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValueError("'options' must be an object")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or key in IGNORED_OPTIONS:
            continue
        if key == "num_predict":
            # Ollama: -1 generates until done, -2 until the context is full; OpenAI has
            # no such value, so neither sets a limit.
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("'options.num_predict' must be an integer")
            if value >= 0:
                out["max_tokens"] = value
            continue
        if key == "stop" and isinstance(value, str):
            value = [value]
        target = _OPTIONS.get(key)
        if target is not None:
            out[target] = value
    return out


# --------------------------------------------------------------------------- helpers


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("missing or invalid 'model' in the request body")
    return model


def _common(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields chat and generate share: model, stream, options, format, think."""
    out: dict[str, Any] = {"model": _model(body)}
    out.update(map_options(body.get("options")))
    stream = is_streaming(body)
    out["stream"] = stream
    if stream:
        out["stream_options"] = {"include_usage": True}
    response_format = _response_format(body.get("format"))
    if response_format is not None:
        out["response_format"] = response_format
    think = body.get("think")
    if think is not None:
        if isinstance(think, bool):
            out["chat_template_kwargs"] = {"enable_thinking": think}
        elif think in _THINK_LEVELS:
            out["chat_template_kwargs"] = {"enable_thinking": True}
            out["reasoning_effort"] = think
        else:
            raise ValueError("'think' must be true, false, 'low', 'medium' or 'high'")
    return out


def _response_format(value: object) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, Mapping):
        return {
            "type": "json_schema",
            "json_schema": {"name": "response", "schema": dict(value), "strict": True},
        }
    raise ValueError("'format' must be \"json\" or a JSON schema object")


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise ValueError("'tools' must be a list")
    out = []
    for tool in tools:
        if not isinstance(tool, Mapping) or not isinstance(tool.get("function"), Mapping):
            raise ValueError("each tool must be an object with a 'function'")
        out.append({**tool, "type": tool.get("type") or "function"})
    return out


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    """Ollama messages → OpenAI messages, giving tool calls and their answers ids."""
    out = []
    pending: list[str] = []  # ids of tool calls not answered yet, oldest first
    for number, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"messages[{number}] must be an object")
        converted = _message(message)
        calls = converted.get("tool_calls")
        if calls:
            pending = [call["id"] for call in calls]
        elif converted["role"] == "tool" and "tool_call_id" not in converted and pending:
            converted["tool_call_id"] = pending.pop(0)
        out.append(converted)
    return out


def _message(message: Mapping[str, Any]) -> dict[str, Any]:
    role = message.get("role")
    if not isinstance(role, str) or not role:
        raise ValueError("each message needs a 'role'")
    content = message.get("content") or ""
    if not isinstance(content, str):
        raise ValueError("a message's 'content' must be a string")
    out: dict[str, Any] = {"role": role, "content": content}
    images = message.get("images")
    if images:
        if not isinstance(images, list):
            raise ValueError("'images' must be a list of base64 strings")
        parts: list[dict[str, Any]] = [{"type": "text", "text": content}] if content else []
        parts += [{"type": "image_url", "image_url": {"url": _data_url(i)}} for i in images]
        out["content"] = parts
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [_tool_call(call, n) for n, call in enumerate(calls)]
    call_id = message.get("tool_call_id")  # newer Ollama clients send the call's id
    if role == "tool" and isinstance(call_id, str) and call_id:
        out["tool_call_id"] = call_id
    return out


def _tool_call(call: object, number: int) -> dict[str, Any]:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        raise ValueError("each tool call must be an object with a 'function'")
    function = call["function"]
    arguments = function.get("arguments", {})
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    call_id = call.get("id")
    return {
        "id": call_id if isinstance(call_id, str) and call_id else f"call_{number}",
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": text},
    }


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def _data_url(image: object) -> str:
    """A base64 image (Ollama sends bare base64) as a ``data:`` URL with its real type."""
    if not isinstance(image, str):
        raise ValueError("each image must be a base64 string")
    if image.startswith("data:"):
        return image
    try:
        head = base64.b64decode(image[:64] + "=" * (-len(image[:64]) % 4), validate=True)
        base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an image is not valid base64") from None
    mime = "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        mime = "image/webp"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            mime = kind
    return f"data:{mime};base64,{image}"
