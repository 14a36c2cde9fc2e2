"""``swapd install-service``: the units it prints and writes, checked by systemd itself.

``systemd-analyze verify`` loads the unit as systemd would (unknown keys, bad values,
an ExecStart that is not executable). Without systemd-analyze those tests skip, unless
``SWAPD_REQUIRE_SYSTEMD=1`` (CI sets it) makes a missing systemd a failure.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from swapd import __version__
from swapd.ops.service import ServiceSpec, render_service, render_socket, swapd_command
from swapd.web.server import TLSFiles

ROOT = Path(__file__).parent.parent
CONFIG = "models:\n  m:\n    cmd: demo --port ${PORT}\n    proxy: http://127.0.0.1:${PORT}\n"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("SWAPD_REQUIRE_SYSTEMD") == "1":
            pytest.fail("SWAPD_REQUIRE_SYSTEMD=1 but systemd-analyze is not installed")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def verify(tmp_path: Path, *units: Path) -> None:
    """``systemd-analyze --user verify``: exit 0 and not one warning."""
    runtime = tmp_path / "runtime"  # the user manager wants a runtime directory
    runtime.mkdir(mode=0o700, exist_ok=True)
    result = subprocess.run(
        [systemd_analyze(), "--user", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"},
    )
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def install_service(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command with HOME in ``tmp_path``, from ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(tmp_path / "home")
    return subprocess.run(
        [sys.executable, "-m", "swapd", "install-service", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=env,
    )


def setting(unit: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{key}=")]


def test_print_shows_the_unit_for_this_swapd_and_an_absolute_config(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(CONFIG)
    result = install_service(tmp_path, "--print", "--config", "models.yaml")
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    (exec_start,) = setting(unit, "ExecStart")
    argv = shlex.split(exec_start)
    assert argv[-2:] == ["--config", str(tmp_path / "models.yaml")]
    # The command is this installation of swapd: run it.
    command = argv[:-2]
    assert command[0] == str(Path(sys.executable).parent / "swapd") or command == [
        sys.executable,
        "-m",
        "swapd",
    ]
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout == f"swapd {__version__}\n"
    assert setting(unit, "WorkingDirectory") == [str(tmp_path)]
    assert f'"PATH={os.environ["PATH"]}"' in setting(unit, "Environment")[0]
    assert not (tmp_path / "home").exists()  # --print writes nothing


def test_install_writes_the_unit_under_home(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(CONFIG)
    printed = install_service(tmp_path, "--print", "--config", "models.yaml").stdout
    result = install_service(tmp_path, "--config", "models.yaml", "--listen", ":9000")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "home/.config/systemd/user/swapd.service"
    assert result.stdout.splitlines() == [
        f"wrote {path}",
        "next: systemctl --user daemon-reload && systemctl --user enable --now swapd.service",
        "logs: journalctl --user -u swapd -f",
    ]
    unit = path.read_text()
    assert unit == printed.replace(
        f"--config {tmp_path}/models.yaml", f"--config {tmp_path}/models.yaml --listen 0.0.0.0:9000"
    )
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    verify(tmp_path, path)


def test_install_with_socket_activation_writes_both_units(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(CONFIG)
    cert = trustme.CA().issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    result = install_service(
        tmp_path,
        "--socket",
        "--config",
        "models.yaml",
        "--listen",
        "127.0.0.1:8181",
        "--listen",
        "unix:swapd.sock",
        "--watch-config",
        "--tls-cert-file",
        "cert.pem",
        "--tls-key-file",
        "key.pem",
    )
    assert result.returncode == 0, result.stderr
    directory = tmp_path / "home/.config/systemd/user"
    service = (directory / "swapd.service").read_text()
    socket_unit = (directory / "swapd.socket").read_text()
    assert "enable --now swapd.socket" in result.stdout
    assert setting(socket_unit, "ListenStream") == ["127.0.0.1:8181", f"{tmp_path}/swapd.sock"]
    (exec_start,) = setting(service, "ExecStart")
    assert "--listen" not in exec_start  # the addresses arrive as LISTEN_FDS
    assert exec_start.endswith(
        f"--config {tmp_path}/models.yaml --tls-cert-file {tmp_path}/cert.pem "
        f"--tls-key-file {tmp_path}/key.pem --watch-config"
    )
    assert setting(service, "Requires") == ["swapd.socket"]
    verify(tmp_path, directory / "swapd.service", directory / "swapd.socket")


def test_an_invalid_config_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("models: [x]\n")
    result = install_service(tmp_path, "--config", "bad.yaml")
    assert result.returncode == 1
    assert result.stderr.startswith("Error loading config: ")
    assert not (tmp_path / "home").exists()


def test_the_unit_keeps_gpus_usable_and_lets_swapd_drain() -> None:
    unit = render_service(ServiceSpec(command=("/usr/bin/swapd",), config="/etc/swapd.yaml"))
    for key, value in {
        "Type": "notify",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "KillMode": "mixed",
        "OOMPolicy": "continue",
        "NoNewPrivileges": "yes",
        "StateDirectory": "swapd",  # $STATE_DIRECTORY: where the activity store lives
    }.items():
        assert setting(unit, key) == [value], key
    for key in (
        "PrivateDevices",
        "DevicePolicy",
        "DeviceAllow",
        "ProtectClock",
        "MemoryDenyWriteExecute",
        "ProtectSystem",
        "PrivateTmp",
    ):
        assert setting(unit, key) == [], key


def fake_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\necho fake\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_swapd_command_prefers_the_console_script_beside_python(tmp_path: Path) -> None:
    python = fake_executable(tmp_path / "venv/bin/python")
    assert swapd_command(str(python)) == (str(python), "-m", "swapd")
    script = fake_executable(tmp_path / "venv/bin/swapd")
    assert swapd_command(str(python)) == (str(script),)


def test_awkward_paths_are_quoted_the_way_systemd_reads_them(tmp_path: Path) -> None:
    """Spaces, ``%`` (specifiers) and ``$`` (variables) in paths survive, and quotes in the
    arguments; systemd refuses quotes in the command's own path, and so do we."""
    odd = tmp_path / "my models 100% $HOME"
    quoted = tmp_path / 'the "best" models'
    script = fake_executable(odd / "bin/swapd")
    spec = ServiceSpec(
        command=(str(script),),
        config=str(quoted / "config.yaml"),
        binds=("unix:" + str(odd / "swapd.sock"),),
        tls=TLSFiles(str(odd / "cert.pem"), str(quoted / "key.pem")),
        socket=True,
        path=f"{quoted}/bin:/usr/bin",
    )
    service, socket_unit = tmp_path / "swapd.service", tmp_path / "swapd.socket"
    service.write_text(render_service(spec))
    socket_unit.write_text(render_socket(spec))
    (exec_start,) = setting(service.read_text(), "ExecStart")
    # systemd reads "$$" as "$" in arguments (not in the command path) and "%%" as "%".
    words = shlex.split(exec_start.replace("%%", "%"))
    assert words[0] == str(script)
    assert [w.replace("$$", "$") for w in words[1:]] == [
        "--config",
        str(quoted / "config.yaml"),
        "--tls-cert-file",
        str(odd / "cert.pem"),
        "--tls-key-file",
        str(quoted / "key.pem"),
    ]
    assert setting(socket_unit.read_text(), "ListenStream") == [
        f"{odd}/swapd.sock".replace("%", "%%")
    ]
    verify(tmp_path, service, socket_unit)  # systemd finds the executable at that path

    with pytest.raises(ValueError, match="quotes or backslashes"):
        render_service(ServiceSpec(command=(str(quoted / "swapd"),), config="/c.yaml"))
