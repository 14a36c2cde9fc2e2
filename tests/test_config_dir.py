"""``--config-dir`` (llama-swap v230): the merge rules, problems at the right file and
line, the command line, and a reload that re-reads the directory (over real HTTP)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from swapd.config import ConfigError
from swapd.config.load import load_config_dir
from swapd.testing import open_swapd, upstream_cmd
from swapd.testing.server import free_port_base

ROOT = Path(__file__).parent.parent


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_sources_merge_by_the_rules(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text("healthCheckTimeout: 60\napiKeys: [k1]\nlogLevel:\n")
    directory = write(
        tmp_path / "conf.d",
        {
            "10-models.yaml": "models:\n  a:\n    cmd: s --port ${PORT}\n",
            "20-more.yml": "healthCheckTimeout: 60\napiKeys: [k2]\nlogLevel: debug\n"
            "models:\n  b:\n    cmd: s --port ${PORT}\n",
            "30-comments.yaml": "# only a comment\n",
            "notes.txt": "not: yaml: at all",
            "40-empty.yaml": "",
        },
    )
    (directory / "nested").mkdir()
    (directory / "nested" / "x.yaml").write_text("models: {zz: {cmd: nope}}\n")
    config = load_config_dir(directory, config_file=base, environ={})
    assert sorted(config.models) == ["a", "b"]
    assert config.api_keys == ("k1", "k2")  # lists concatenate in source order
    assert config.health_check_timeout == 60  # equal scalars agree
    assert config.log_level.value == "debug"  # an empty value loses to a value
    assert (config.config_dir, config.config_file) == (str(directory), str(base))


def test_conflicts_and_duplicates_name_their_file_and_line(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "d",
        {
            "a.yaml": "startPort: 9000\nmodels:\n  m:\n    cmd: s --port ${PORT}\n",
            "b.yaml": "models:\n  m:\n    cmd: other\nstartPort: 9100\n",
            "c.yaml": "- a list\n",
        },
    )
    with pytest.raises(ConfigError) as info:
        load_config_dir(directory, environ={})
    found = [(Path(p.file).name, p.line, p.message) for p in info.value.problems]
    b = str(directory / "b.yaml")
    assert found == [
        ("b.yaml", 2, f'duplicate models "m" found in {b} (already defined in another config source)'),
        ("b.yaml", 4, f'conflict at "startPort": {b} sets a different value than a previous source'),
        ("c.yaml", 1, f"config {directory / 'c.yaml'}: top-level YAML must be a mapping"),
    ]  # fmt: skip


def test_later_problems_point_into_the_right_file(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "d",
        {
            "a.yaml": "models:\n  good:\n    cmd: s --port ${PORT}\n",
            "b.yaml": "# models of the second GPU\nmodels:\n  bad:\n    cmd: s --port ${PORT}\n"
            "    ttl: soon\n    tags: [x]\n",
        },
    )
    with pytest.raises(ConfigError) as info:
        load_config_dir(directory, environ={}, strict=True)
    assert [str(p) for p in info.value.problems] == [
        f"{directory / 'b.yaml'}:5:5: models.bad.ttl: expected a whole number, found 'soon'",
        f"{directory / 'b.yaml'}:6:5: models.bad.tags: 'tags' is not a setting; ignored "
        "(notes shown in /v1/models go under 'metadata')",
    ]


def test_the_config_file_may_not_also_be_in_the_directory(tmp_path: Path) -> None:
    directory = write(tmp_path / "d", {"main.yaml": "models: {}\n"})
    with pytest.raises(ConfigError) as info:
        load_config_dir(directory, config_file=directory / "main.yaml", environ={})
    assert "is also present in -config-dir" in str(info.value)


def test_check_config_reads_a_directory(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "d",
        {"a.yaml": "models:\n  one:\n    cmd: s --port ${PORT}\n", "b.yaml": "startPort: 7000\n"},
    )
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "check-config", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "    argv:   s --port 7000" in result.stdout


async def test_a_reload_rereads_the_directory(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "d",
        {
            "00-base.yaml": f"startPort: {free_port_base()}\nhealthCheckTimeout: 15\n",
            "10-a.yaml": f"models:\n  a:\n    cmd: {upstream_cmd('--model', 'a', '--debug-fields')}\n",
        },
    )
    config = load_config_dir(directory)
    with trio.fail_after(40):
        async with (
            open_swapd(config) as swapd,
            httpx.AsyncClient(base_url=swapd.url, timeout=30) as client,
        ):
            write(
                directory,
                {
                    "20-b.yaml": f"models:\n  b:\n    cmd: {upstream_cmd('--model', 'b', '--debug-fields')}\n"
                },
            )
            reloaded = await client.post("/api/config/reload")
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["added"] == ["b"]
            chat = {"model": "b", "messages": [{"role": "user", "content": "hi"}]}
            reply = await client.post("/v1/chat/completions", json=chat)
            assert reply.json()["x_upstream_model"] == "b"
            shown = (await client.get("/api/config")).json()["yaml"]
            assert "# --- " in shown and "20-b.yaml" in shown


def test_the_daemon_takes_a_config_dir_and_strict(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "d",
        {"a.yaml": "models:\n  one:\n    cmd: s --port ${PORT}\n", "b.yaml": "listen: :8080\n"},
    )
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "--strict", "--config-dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert f"{directory / 'b.yaml'}:1:1: listen: unknown setting 'listen' ignored" in result.stderr
