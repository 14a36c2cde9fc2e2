"""The ``keys`` section: the three forms of a secret, defaults, and every problem reported
with its file and line (docs/keys.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from swapd.config import ConfigError, load_config, parse_config
from swapd.config.model import KeyRole


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def test_secret_forms_end_as_one_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "k.key").write_text("  sk-file \n")
    monkeypatch.setenv("KEY_FROM_ENV", "sk-env")
    path = tmp_path / "swapd.yaml"
    path.write_text(
        "keys:\n"
        "  - {name: inline, secret: sk-inline}\n"
        "  - {name: env, secret: '${env.KEY_FROM_ENV}', role: observer}\n"
        "  - {name: file, secretFile: k.key, models: [a, 'b*'], role: admin}\n"
        f"  - {{name: hashed, sha256: {digest('sk-hash').upper()}, maxConcurrent: 2}}\n"
        "models: {}\n"
    )
    config = load_config(str(path))
    assert [k.digest for k in config.keys] == [
        digest("sk-inline"),
        digest("sk-env"),
        digest("sk-file"),  # relative to the config file, whitespace stripped
        digest("sk-hash"),
    ]
    assert [k.role for k in config.keys] == [
        KeyRole.INFERENCE,
        KeyRole.OBSERVER,
        KeyRole.ADMIN,
        KeyRole.INFERENCE,
    ]
    assert config.keys[0].models == ("*",)
    assert config.keys[2].models == ("a", "b*")
    assert config.keys[3].max_concurrent == 2


def test_problems_name_the_file_and_line(tmp_path: Path) -> None:
    text = (
        "keys:\n"
        "  - name: a\n"
        "    secret: sk-a\n"
        "    role: wizard\n"
        "  - name: b\n"
        "    sha256: nothex\n"
        "  - name: c\n"
        f"    secretFile: {tmp_path / 'missing.key'}\n"
        "  - name: a\n"
        "    secret: sk-other\n"
        "  - name: e\n"
        "  - name: f\n"
        "    secret: sk-f\n"
        "    sha256: " + digest("x") + "\n"
        "  - name: g\n"
        "    secret: sk-g\n"
        "    requestsPerMinute: -1\n"
        "models: {}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, file="/etc/swapd.yaml")
    found = {(p.line, p.path): p.message for p in caught.value.problems}
    assert all(p.file == "/etc/swapd.yaml" for p in caught.value.problems)
    assert "wizard" in found[4, "keys[0].role"]
    assert "64 hexadecimal" in found[6, "keys[1].sha256"]
    assert "cannot read the key file" in found[8, "keys[2].secretFile"]
    assert "used twice" in found[9, "keys[3].name"]
    assert "exactly one" in found[11, "keys[4]"]
    assert "exactly one" in found[12, "keys[5]"]
    assert any(path == "keys[6].requestsPerMinute" for _, path in found)
