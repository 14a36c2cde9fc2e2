"""config-schema.json never drifts from the loader.

Two locks: the committed file must equal what ``swapd schema`` generates from the config
model, and a corpus of files must get the same verdict (valid / invalid) from the loader
and from a JSON-schema validator reading the YAML the way an editor does (YAML 1.2 core
types). Problems only the loader can see (cross references, macros) are listed apart and
the schema is shown to accept them, so the boundary is explicit.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from swapd.config import ConfigError, parse_config, source
from swapd.config.schema import config_schema, render_schema
from swapd.config.shape import typed_value

ROOT = Path(__file__).parent.parent
ENV = {"HOME": "/home/tester", "SWAPD_TEST_KEY": "k", "SWAPD_TEST_PEER_KEY": "p"}


def editor_view(text: str) -> Any:
    """The YAML as JSON data, typed like yaml-language-server types it (YAML 1.2 core)."""

    def convert(node: Any) -> Any:
        if isinstance(node, source.Mapping):
            return {str(k): convert(v) for k, v in node.items()}
        if isinstance(node, source.Sequence):
            return [convert(v) for v in node]
        return typed_value(str(node), quoted=source.is_quoted(node) or source.is_block(node))

    tree = source.parse_yaml(text, file="corpus")
    return {} if tree is None else convert(tree)


def schema_accepts(text: str) -> bool:
    validator = jsonschema.Draft7Validator(config_schema())
    return not list(validator.iter_errors(editor_view(text)))


def loader_accepts(text: str, *, strict: bool = False) -> bool:
    """Whether the loader accepts ``text``; ``strict`` (as ``swapd --strict``) also refuses
    what it only warns about, such as unknown keys, which the schema refuses outright."""
    try:
        parse_config(text, file="corpus", environ=ENV, strict=strict)
    except ConfigError:
        return False
    return True


VALID = [
    "",
    "models:\n  m:\n    cmd: s --port ${PORT}\n",
    "healthCheckTimeout: 5\n",  # raised to 15 with a warning, not an error
    "startPort: ${env.PORT_BASE}\n".replace("${env.PORT_BASE}", "9000"),
    "logLevel: DEBUG\nlogTimeFormat: RFC3339\n",
    "models:\n  m:\n    cmd: s --port ${PORT}\n    ttl:\n    aliases:\n",
    "models:\n  m:\n    cmd: 1234\n    proxy: http://h:1\n    name: 5\n",
    "models:\n  m:\n    cmd: s --port ${PORT}\n    metadata: {a: [1, {b: null}]}\n",
    "models:\n  m:\n    cmd: s --port ${PORT}\n    sleepEndpoints: [{endpoint: /s, method: post}]\n"
    "    wakeEndpoints: [{endpoint: /w}]\n",
    "hooks:\n  on_startup:\n    preload: []\n",
    "peers:\n  p:\n    proxy: http://h\n    models: [x]\n    filters: {setParams: {k: {n: 1}}}\n",
]

SHAPE_INVALID = [
    "profiles:\n  old: [a]\n",  # llama-swap's legacy list form, an error since v241
    "startPort: abc\n",
    "startPort: 0\n",
    'startPort: "5800"\n',
    "sendLoadingState: yes\n",
    "logToStdout: loud\n",
    "logLevel: verbose\n",
    "logTimeFormat: iso\n",
    "unknownKey: 1\n",
    "models: [a]\n",
    "models:\n  m:\n    ttl: 5\n",
    "models:\n  m:\n    cmd: s\n    ttll: 5\n",
    "models:\n  m:\n    cmd: s\n    aliases: one\n",
    "models:\n  m:\n    cmd: s\n    env: {A: b}\n",
    "models:\n  m:\n    cmd: s\n    sleepMode: maybe\n",
    "models:\n  m:\n    cmd: s\n    sleepEndpoints: [{method: GET}]\n",
    "models:\n  m:\n    cmd: s\n    sleepEndpoints: [{endpoint: /s, method: DELETE}]\n",
    "models:\n  m:\n    cmd: s\n    sleepEndpoints: [{endpoint: /s, timeout: -1}]\n",
    "groups:\n  g:\n    swap: maybe\n",
    "groups:\n  g:\n    members: a\n",
    "peers:\n  p:\n    models: [a]\n",
    "peers:\n  p:\n    proxy: http://h\n",
    "hooks:\n  onStartup:\n    preload: a\n",
    "hooks:\n  onShutdown: {}\n",
    "macros:\n  a: [1]\n",
    "apiKeys: key\n",
]

# The loader rejects these; a JSON schema cannot express why (cross references, macros).
LOADER_ONLY = [
    "models:\n  m:\n    cmd: s --port 8080\n",  # default proxy needs ${PORT} in cmd
    "models:\n  m:\n    cmd: s ${nope}\n    proxy: http://h:1\n",
    "models:\n  a: {cmd: s, proxy: 'http://h:1'}\ngroups:\n  g: {members: [ghost]}\n",
    "models:\n  a: {cmd: s, proxy: 'http://h:1', aliases: [x]}\n"
    "  b: {cmd: s, proxy: 'http://h:2', aliases: [x]}\n",
    "apiKeys: ['']\n",
    "macros:\n  PORT: 1\n",
    "peers:\n  p: {proxy: '://bad', models: [a]}\n",
]


def corpus_files() -> list[Path]:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    return [*examples, ROOT / "tests/configs/llama-swap-style.yaml"]


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "config-schema.json").read_text(encoding="utf-8")
    assert committed == render_schema(), "run `nox -s schema` to regenerate config-schema.json"


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(json.loads(render_schema()))


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_example_files_are_valid_for_both(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert loader_accepts(text)
    assert schema_accepts(text)


@pytest.mark.parametrize("text", VALID)
def test_valid_for_both(text: str) -> None:
    assert loader_accepts(text)
    assert schema_accepts(text)


@pytest.mark.parametrize("text", SHAPE_INVALID)
def test_invalid_for_both(text: str) -> None:
    assert not loader_accepts(text, strict=True)
    assert not schema_accepts(text)


@pytest.mark.parametrize("text", LOADER_ONLY)
def test_loader_only_problems(text: str) -> None:
    assert not loader_accepts(textwrap.dedent(text), strict=True)
    assert schema_accepts(text)


def test_committed_configuration_reference_is_current() -> None:
    from swapd.config.schema import render_reference

    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_reference(), "run `swapd schema --reference > docs/configuration.md`"


def test_reference_lists_every_legacy_spelling() -> None:
    from swapd.config.schema import render_reference

    text = render_reference()
    assert "(also `on_startup`)" in text
    assert "(also `strip_params`)" in text
