"""Secrets kept out of what the admin routes show: the config text and command lines.

- :func:`redact_config_text`: the config file as written, with every ``apiKeys`` entry
  and every peer's ``apiKey`` replaced by ``REDACTED``. The scalars are found in the
  parsed YAML by position, so a key written with quoting or escapes (``'it''s'``,
  ``"\\x41…"``), where the file's text differs from the key, is redacted too; then any
  remaining literal copy of a key (a macro defining it, a comment) is replaced as text.
- :func:`redact_command`: a model's command line with the config's keys, the values of
  options whose name says secret (``--api-key X``, ``--hf-token=X``) and the values of
  swapd's secret-named environment variables (``*KEY*``, ``*TOKEN*``, …, which a
  ``${env.NAME}`` macro may have put there) replaced.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from swapd.config.model import Config
from swapd.config.source import parse_yaml
from swapd.errors import ConfigError

__all__ = ["REDACTED", "config_secrets", "redact_command", "redact_config_text"]

REDACTED = "REDACTED"

_SECRET_WORD = r"(?:key|token|secret|passw(?:or)?d|auth|credential)"  # noqa: S105
_SECRET_NAME = re.compile(rf"[A-Za-z0-9_]*{_SECRET_WORD}[A-Za-z0-9_]*", re.IGNORECASE)
# --api-key X, --api-key=X, -hf-token 'X' (the value: a quoted string or one word)
_SECRET_OPTION = re.compile(
    rf"(?P<opt>(?<!\S)--?[\w-]*{_SECRET_WORD}[\w-]*)(?P<sep>=|\s+)"
    r"(?P<value>'[^']*'|\"(?:[^\"\\]|\\.)*\"|[^\s'\"]+)",
    re.IGNORECASE,
)
_MIN_SECRET = 4  # shorter environment values ("1", "yes") would redact innocent text


def config_secrets(config: Config) -> set[str]:
    """The client API keys (plain and scoped) and the peers' keys of ``config``."""
    peers = (p.api_key for p in config.peers.values())
    return set(filter(None, {*config.api_keys, *(k.secret for k in config.keys), *peers}))


def _replace_all(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):  # a key may contain another
        text = text.replace(secret, REDACTED)
    return text


def redact_command(cmd: str, config: Config, environ: Mapping[str, str] | None = None) -> str:
    """``cmd`` without the secrets described in the module docstring."""
    environ = os.environ if environ is None else environ
    secrets = config_secrets(config)
    secrets.update(
        value
        for name, value in environ.items()
        if len(value) >= _MIN_SECRET and _SECRET_NAME.fullmatch(name)
    )
    cmd = _replace_all(cmd, secrets)
    return _SECRET_OPTION.sub(lambda m: f"{m['opt']}{m['sep']}{REDACTED}", cmd)


def redact_config_text(text: str, config: Config) -> str:
    """``text`` (the config file) without its keys; see the module docstring."""
    spans: list[tuple[int, int]] = []
    try:
        root = parse_yaml(text, file="<config>")
    except ConfigError:
        root = None  # the file changed since it loaded: fall back to text replacement
    if isinstance(root, Mapping):
        root_map: Any = root
        starts = _line_starts(text)
        keys: Any = root_map.get("apiKeys")
        if isinstance(keys, list):
            flow = _in_flow(keys)
            spans.extend(
                _scalar_span(text, starts, _lc(keys).item(index), flow=flow)
                for index in range(len(keys))
            )
        peers: Any = root_map.get("peers")
        if isinstance(peers, Mapping):
            peer: Any
            for peer in peers.values():
                if isinstance(peer, Mapping) and "apiKey" in peer:
                    position = _lc(peer).value("apiKey")
                    spans.append(_scalar_span(text, starts, position, flow=_in_flow(peer)))
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + REDACTED + text[end:]
    return _replace_all(text, config_secrets(config))


def _lc(node: object) -> Any:
    """The node's source positions (ruamel's ``lc``)."""
    return node.lc  # type: ignore[attr-defined]


def _in_flow(node: Any) -> bool:
    return bool(getattr(getattr(node, "fa", None), "flow_style", lambda: False)())


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts.extend(match.end() for match in re.finditer("\n", text))
    return starts


_DOUBLE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SINGLE = re.compile(r"'(?:[^']|'')*'")


def _scalar_span(
    text: str, starts: list[int], position: tuple[int, int], *, flow: bool
) -> tuple[int, int]:
    """``(start, end)`` of the scalar whose first character is at 0-based ``position``."""
    line, col = position
    start = starts[line] + col
    first = text[start : start + 1]
    if first in ('"', "'"):
        match = (_DOUBLE if first == '"' else _SINGLE).match(text, start)
        return (start, match.end()) if match else (start, start)
    line_end = text.find("\n", start)
    line_end = len(text) if line_end < 0 else line_end
    if first in ("|", ">"):  # a block scalar: the lines indented deeper than this one
        here = text[starts[line] : line_end]
        indent = len(here) - len(here.lstrip(" "))
        end = line_end
        for next_start in starts[line + 1 :]:
            next_end = text.find("\n", next_start)
            next_end = len(text) if next_end < 0 else next_end
            content = text[next_start:next_end]
            if content.strip() and len(content) - len(content.lstrip(" ")) <= indent:
                break
            end = next_end
        return start, end
    stop = re.compile(r"\s#|[,\]}]" if flow else r"\s#").search(text, start, line_end)
    end = stop.start() if stop else line_end
    return start, len(text[start:end].rstrip()) + start
