"""Loader policy for real llama-swap files: anchors and merge keys load, unknown keys and
stray group members are warnings with a hint, and ``--strict`` makes every warning an
error (library, ``check-config`` and the daemon command line)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
import trio

from swapd.config import Config, ConfigError, load_config, parse_config
from swapd.errors import ConfigProblem
from swapd.testing import open_swapd
from swapd.testing.server import free_port_base

ROOT = Path(__file__).parent.parent


def load(text: str, *, strict: bool = False) -> Config:
    return parse_config(textwrap.dedent(text), file="t.yaml", environ={}, strict=strict)


def problems(text: str, *, strict: bool = False) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load(text, strict=strict)
    return list(info.value.problems)


def swapd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swapd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


# --- anchors, aliases, merge keys --------------------------------------------------------

TEMPLATE = """\
x-base: &base
  cmd: |
    llama-server --port ${PORT}
    -m /models/${MODEL_ID}.gguf
  ttl: 300
  env: ["CUDA_VISIBLE_DEVICES=0"]
x-gpu1: &gpu1
  env: ["CUDA_VISIBLE_DEVICES=1"]
  unlisted: true
models:
  qwen:
    <<: *base
    ttl: 60
  gemma:
    <<: [*gpu1, *base]
  mistral:
    <<: *base
    aliases: &names [m7]
groups:
  g:
    members: [qwen, gemma]
"""


def test_merge_keys_and_aliases_load_like_written_out_models() -> None:
    config = load(TEMPLATE)
    qwen, gemma, mistral = (config.models[m] for m in ("qwen", "gemma", "mistral"))
    assert qwen.argv == ("llama-server", "--port", "5802", "-m", "/models/qwen.gguf")
    assert qwen.ttl == 60  # the model's own key wins over the merged one
    assert qwen.env == ("CUDA_VISIBLE_DEVICES=0",)
    # <<: [*a, *b]: the earlier source wins a clash (env from gpu1), the rest merges in
    assert gemma.env == ("CUDA_VISIBLE_DEVICES=1",)
    assert gemma.unlisted is True
    assert gemma.ttl == 300
    assert gemma.argv[-1] == "/models/gemma.gguf"
    assert mistral.aliases == ("m7",)
    # template keys that only hold an anchor are not reported as unknown settings
    assert config.warnings == ()


def test_error_inside_a_merged_value_points_at_the_anchor_text() -> None:
    found = problems(TEMPLATE.replace("ttl: 300", "ttl: soon"))
    # gemma and mistral both merge the bad ttl (qwen overrides it): line 5 is the anchor's
    assert {(p.line, p.path) for p in found} == {(5, "models.gemma.ttl"), (5, "models.mistral.ttl")}
    assert all(p.message == "expected a whole number, found 'soon'" for p in found)


def test_error_in_a_key_overriding_a_merged_one_points_at_its_own_line() -> None:
    found = problems(TEMPLATE.replace("ttl: 60", "ttl: later"))
    assert [(p.line, p.column, p.path) for p in found] == [(13, 5, "models.qwen.ttl")]


def test_unknown_key_in_an_anchor_is_warned_at_the_anchor_line() -> None:
    config = load(TEMPLATE.replace("  ttl: 300\n", "  ttl: 300\n  unloadAfter: 5\n"))
    lines = {w.split(": ", 1)[0] for w in config.warnings}
    assert lines == {"t.yaml:6"}
    assert len(config.warnings) == 3  # one per model merging the template


def test_tags_stay_forbidden_and_aliases_cannot_blow_up() -> None:
    assert "tags" in problems("startPort: !!int 5\n")[0].message
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghi":
        prev = chr(ord(level) - 1)
        laughs += f"{level}: &{level} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}"
        laughs += f", *{prev}, *{prev}, *{prev}, *{prev}]\n"
    problem = problems(laughs)[0]
    assert "aliases expand this document" in problem.message


# --- warnings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            "models:\n  m:\n    cmd: s --port ${PORT}\n    ttll: 3\n",
            "t.yaml:4: models.m.ttll:",
            "unknown setting 'ttll' ignored (did you mean 'ttl'?)",
        ),
        (
            "listen: :8080\n",
            "t.yaml:1: listen:",
            "unknown setting 'listen' ignored: the address is a command-line option: "
            "swapd --listen HOST:PORT",
        ),
        (
            "host: 0.0.0.0\n",
            "t.yaml:1: host:",
            "unknown setting 'host' ignored: the address is a command-line option: "
            "swapd --listen HOST:PORT",
        ),
        (
            "models:\n  m:\n    cmd: s --port 9000\n    proxy: http://127.0.0.1:9000\n"
            "    port: 9000\n",
            "t.yaml:5: models.m.port:",
            "unknown setting 'port' ignored: swapd gives each model a port through ${PORT} in "
            "cmd; for a fixed port write it in cmd and set 'proxy' to it",
        ),
        (
            "models:\n  m:\n    cmd: s --port ${PORT}\n    unloadAfter: 600\n",
            "t.yaml:4: models.m.unloadAfter:",
            "unknown setting 'unloadAfter' ignored: did you mean 'ttl' (idle seconds before "
            "unloading)?",
        ),
        (
            "health_check_timeout: 300\n",
            "t.yaml:1: health_check_timeout:",
            "unknown setting 'health_check_timeout' ignored: did you mean 'healthCheckTimeout'?",
        ),
        (
            "models:\n  m:\n    cmd: s --port ${PORT}\n    tools: true\n",
            "t.yaml:4: models.m.tools:",
            "unknown setting 'tools' ignored: did you mean 'capabilities: {tools: true}'?",
        ),
        (
            "models:\n  m:\n    cmd: s --port ${PORT}\n    recommended_use: chat\n",
            "t.yaml:4: models.m.recommended_use:",
            "'recommended_use' is not a setting; ignored (notes shown in /v1/models go under "
            "'metadata')",
        ),
        (
            "models:\n  m:\n    cmd: s --port ${PORT}\n    tags: [fast, small]\n",
            "t.yaml:4: models.m.tags:",
            "'tags' is not a setting; ignored (notes shown in /v1/models go under 'metadata')",
        ),
        (
            "models:\n  qwen:\n    cmd: s --port ${PORT}\ngroups:\n  g:\n    members:\n"
            "      - qwen\n      - qwne\n",
            "t.yaml:8: groups.g.members[1]:",
            "'qwne' is not a model ID; ignored (did you mean 'qwen'?)",
        ),
    ],
)
def test_each_warning_names_the_place_and_a_hint(text: str, where: str, message: str) -> None:
    config = load(text)
    assert config.warnings == (f"{where} {message}",)
    # --strict: the same text is an error at the same place
    (problem,) = problems(text, strict=True)
    assert problem.message == message
    assert str(problem).startswith(where.rsplit(":", 2)[0])


def test_commented_out_group_member_is_ignored_and_the_group_still_works() -> None:
    config = load(
        """
        models:
          a: {cmd: "s --port ${PORT}"}
          # b: {cmd: "s --port ${PORT}"}
          c: {cmd: "s --port ${PORT}"}
        groups:
          pair:
            swap: false
            members: [a, b]
        """
    )
    assert config.groups["pair"].members == ("a",)
    assert config.groups["(default)"].members == ("c",)
    assert config.warnings == (
        "t.yaml:9: groups.pair.members[1]: 'b' is not a model ID; ignored (see models:)",
    )


def test_type_errors_duplicates_and_macros_stay_errors() -> None:
    found = problems(
        """
        models:
          a: {cmd: "s --port ${PORT} ${nope}", aliases: [x], ttl: soon}
          b: {cmd: "s --port ${PORT}", aliases: [x]}
          c: {cmd: "s --port 9000"}
        """
    )
    messages = sorted(p.message for p in found)
    assert "expected a whole number, found 'soon'" in messages
    assert "duplicate alias x found in model: b (also in a)" in messages
    assert any("${PORT}" in m for m in messages)


# --- --strict on the command line -----------------------------------------------------------


def test_check_config_strict_exits_1_on_warnings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  m:\n    cmd: s --port ${PORT}\n    tags: [x]\n")
    lenient = swapd("check-config", str(path))
    assert lenient.returncode == 0
    assert f"warning: {path}:4: models.m.tags: 'tags' is not a setting" in lenient.stderr
    strict = swapd("check-config", "--strict", str(path))
    assert strict.returncode == 1
    assert strict.stdout == ""
    assert f"{path}:4:5: models.m.tags: 'tags' is not a setting" in strict.stderr
    before = swapd("--strict", "check-config", str(path))  # the global spelling works too
    assert before.returncode == 1


def test_daemon_strict_refuses_to_start_on_warnings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("listen: :8080\nmodels:\n  m:\n    cmd: s --port ${PORT}\n")
    result = swapd("--strict", "--config", str(path), "--listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert f"{path}:1:1: listen: unknown setting 'listen' ignored" in result.stderr


# --- reloads ------------------------------------------------------------------------------


async def test_a_reload_logs_warnings_and_strict_refuses_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = f"startPort: {free_port_base()}\nmodels:\n  m:\n    cmd: s --port ${{PORT}}\n"
    lenient, strict = tmp_path / "lenient.yaml", tmp_path / "strict.yaml"
    for path in (lenient, strict):
        path.write_text(base)
    with trio.fail_after(30):
        async with (
            open_swapd(load_config(lenient)) as one,
            open_swapd(load_config(strict, strict=True)) as two,
            httpx.AsyncClient() as client,
        ):
            for path in (lenient, strict):
                path.write_text(base + "    tags: [x]\n")
            ok = await client.post(one.url + "/api/config/reload")
            refused = await client.post(two.url + "/api/config/reload")
    assert ok.status_code == 200
    assert f"config: {lenient}:5: models.m.tags: 'tags' is not a setting" in caplog.text
    assert refused.status_code == 400
    assert f"{strict}:5:5: models.m.tags: 'tags' is not a setting" in refused.text
