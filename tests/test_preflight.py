"""Preflight: a valid config whose program or model file is missing on this machine is
reported as a warning (issue #24), and plain ``swapd`` without a config says what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from swapd.config import parse_config
from swapd.config.preflight import preflight

ROOT = Path(__file__).parent.parent


def config(models: dict[str, str], extra: str = "") -> str:
    lines = ["models:"]
    for name, cmd in models.items():
        lines += [f"  {name}:", f"    cmd: {cmd}", "    proxy: http://127.0.0.1:${PORT}"]
    return "\n".join(lines) + "\n" + extra


def test_missing_programs_and_model_files_are_warned_about(tmp_path: Path) -> None:
    weights = tmp_path / "here.gguf"
    weights.write_bytes(b"GGUF")
    text = config(
        {
            "absent": "no-such-server-7f3a --port ${PORT} -m /nowhere/model.gguf",
            "present": f"{sys.executable} -m {weights} --port ${{PORT}}",  # a real file
            "equals": f"{sys.executable} --model=./no/such/file.safetensors --port ${{PORT}}",
            "repo-id": f"{sys.executable} --model Qwen/Qwen2.5-7B --port ${{PORT}}",  # vLLM
            "by-path": "/nowhere/bin/server --port ${PORT}",
            "on-path": "sh -c 'exec sleep 1' --port ${PORT}",
        }
    )
    warnings = preflight(parse_config(text), environ={"PATH": "/usr/bin:/bin"})
    assert warnings == [
        "model 'absent': program 'no-such-server-7f3a' is not on PATH",
        "model 'absent': model file /nowhere/model.gguf does not exist",
        "model 'by-path': program /nowhere/bin/server does not exist or is not executable",
        "model 'equals': model file ./no/such/file.safetensors does not exist",
    ]


def test_a_model_env_path_is_where_its_program_is_looked_for(tmp_path: Path) -> None:
    server = tmp_path / "my-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    found = config({"m": "my-server --port ${PORT}"})
    found = found + f"    env: [PATH={tmp_path}]\n"
    assert preflight(parse_config(found), environ={"PATH": "/usr/bin"}) == []
    lost = config({"m": "my-server --port ${PORT}"}) + "    env: [PATH=/usr/bin]\n"
    assert preflight(parse_config(lost), environ={"PATH": str(tmp_path)}) == [
        "model 'm': program 'my-server' is not on the PATH in its env"
    ]


def run_swapd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swapd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


def test_check_config_says_ok_and_warns(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config({"m": "no-such-server-7f3a -m /nowhere/m.gguf --port ${PORT}"}))
    result = run_swapd("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "(ok)" in result.stdout
    assert result.stderr.splitlines() == [
        "warning: model 'm': program 'no-such-server-7f3a' is not on PATH",
        "warning: model 'm': model file /nowhere/m.gguf does not exist",
    ]


def test_plain_swapd_without_a_config_says_how_to_pass_one(tmp_path: Path) -> None:
    result = run_swapd(cwd=tmp_path)
    assert result.returncode == 1
    assert f"no config.yaml in {tmp_path}" in result.stderr
    assert "--config PATH" in result.stderr
    assert "swapd --config examples/quickstart.yaml" in result.stderr
    import swapd

    # an editable install (a source checkout) names the real folder; an installed wheel,
    # as under nox, points at swapd's source in words
    editable = (Path(swapd.__file__).resolve().parents[1] / "examples").is_dir()
    if editable:
        assert str(ROOT / "examples") in result.stderr
    else:
        assert "the examples/ folder of swapd's source" in result.stderr
    # an explicit path that does not exist keeps the loader's own message
    result = run_swapd("--config", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error loading config: nope.yaml: cannot read the file")


def test_check_config_takes_the_file_the_way_the_daemon_does(tmp_path: Path) -> None:
    """``check-config`` validates what ``swapd`` with the same options would load: the
    daemon's ``--config`` before or after the command, or ``config.yaml`` here."""
    good = config({"m": f"{sys.executable} --port ${{PORT}}"})
    (tmp_path / "other.yaml").write_text(good)
    for args in (
        ("--config", "other.yaml", "check-config"),
        ("check-config", "--config", "other.yaml"),
        ("-config", "other.yaml", "check-config", "--json"),
    ):
        result = run_swapd(*args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "other.yaml" in result.stdout, args
    # nothing given and no config.yaml: the same advice as plain swapd, not a usage error
    result = run_swapd("check-config", cwd=tmp_path)
    assert result.returncode == 1
    assert f"no config.yaml in {tmp_path}" in result.stderr
    (tmp_path / "config.yaml").write_text(good)
    result = run_swapd("check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config: config.yaml (ok)")
    # two different files is a mistake worth naming
    result = run_swapd("check-config", "config.yaml", "--config", "other.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "two config files given: other.yaml and config.yaml" in result.stderr


def test_check_config_merges_a_config_dir_like_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("startPort: 7100\n")
    parts = tmp_path / "models.d"
    parts.mkdir()
    (parts / "m.yaml").write_text(config({"m": f"{sys.executable} --port ${{PORT}}"}))
    result = run_swapd(
        "--config", "base.yaml", "--config-dir", "models.d", "check-config", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "port:   7100" in result.stdout
