"""The command line, run as a real process the way users run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swapd import __version__
from swapd.cli import main, parse_listen

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def swapd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swapd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_check_config_accepts_every_example(example: Path) -> None:
    result = swapd("check-config", str(example))
    assert result.returncode == 0, result.stderr
    assert "(ok)" in result.stdout
    assert "groups:" in result.stdout
    # only preflight's warnings: the examples' programs and model files need not be here
    problems = [
        line for line in result.stderr.splitlines() if not line.startswith("warning: model '")
    ]
    assert problems == []


def test_check_config_prints_ports_argv_and_the_implicit_group() -> None:
    result = swapd("check-config", "examples/quickstart.yaml")
    out = result.stdout
    assert "demo-fast" in out
    assert "port:   5800" in out
    assert "argv:   swapd-demo-upstream --port 5800 --model demo-fast --respond" in out
    assert "(default) (implicit): swap=true exclusive=true persistent=false" in out
    assert "members: demo-fast, demo-slow" in out


def test_check_config_json_is_the_resolved_config() -> None:
    result = swapd("check-config", "--json", "examples/quickstart.yaml")
    data = json.loads(result.stdout)
    assert data["models"]["demo-slow"]["port"] == 5801
    assert data["models"]["demo-slow"]["argv"][:3] == ["swapd-demo-upstream", "--port", "5801"]
    assert data["groups"]["(default)"]["members"] == ["demo-fast", "demo-slow"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models:\n  m:\n    ttl: 5\n", ":2:3: models.m: missing required setting 'cmd'"),
        ("startPort: abc\n", ":1:1: startPort: expected a whole number, found 'abc'"),
        ("models:\n  a: 1\n  a: 2\n", ":3:4: Duplicate key 'a' found"),
    ],
)
def test_check_config_rejects_with_file_line_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = swapd("check-config", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{path}{expected}" in result.stderr


def test_check_config_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("startPort: 0\nlogLevel: loud\nmodels:\n  m: {}\n")
    result = swapd("check-config", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("3 problems in the configuration:")


def test_check_config_warnings_go_to_stderr(tmp_path: Path) -> None:
    path = tmp_path / "warn.yaml"
    path.write_text("healthCheckTimeout: 3\n")
    result = swapd("check-config", str(path))
    assert result.returncode == 0
    assert "healthCheckTimeout: 3 is below the minimum 15; using 15" in result.stderr


def test_schema_command_prints_the_committed_schema() -> None:
    result = swapd("schema")
    assert result.returncode == 0
    assert result.stdout == (ROOT / "config-schema.json").read_text(encoding="utf-8")


def test_version_in_both_spellings() -> None:
    for flag in ("--version", "-version"):
        result = swapd(flag)
        assert (result.returncode, result.stdout) == (0, f"swapd {__version__}\n")


def test_daemon_with_a_broken_config_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models: [x]\n")
    result = swapd("-config", str(path), "-listen", "127.0.0.1:0")
    assert result.returncode == 1
    assert result.stderr.startswith("Error loading config: ")


def test_tls_needs_both_files() -> None:
    result = swapd("--config", "examples/quickstart.yaml", "--tls-cert-file", "c.pem")
    assert result.returncode == 2
    assert "Both --tls-cert-file and --tls-key-file" in result.stderr


def test_usage_errors_exit_2() -> None:
    assert main(["--listen", "nonsense"]) == 2
    assert main(["check-config", "--no-such-option"]) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":8080", ("0.0.0.0", 8080)),
        ("[::1]:9000", ("::1", 9000)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", "host:", "host:port", "h:70000"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_listen(text)


def test_a_taken_listen_port_is_a_clear_error() -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = swapd("--config", "examples/quickstart.yaml", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert (
        f"Error: cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
