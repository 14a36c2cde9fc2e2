"""The systemd user units ``swapd install-service`` writes: ``swapd.service`` (and, with
``--socket``, ``swapd.socket``).

The service is ``Type=notify`` (``ops.notify`` sends ``READY=1`` once the listener is
bound), reloads with SIGHUP, is restarted on failure and when the watchdog stops hearing
from the trio loop. Choices that are not obvious, and why:

- ``KillMode=mixed``: ``systemctl stop`` sends SIGTERM to swapd alone, so requests drain
  and swapd stops each model itself (group SIGTERM, grace, SIGKILL); whatever is still in
  the unit's cgroup after that (a grandchild that left its process group) gets SIGKILL from
  systemd. ``control-group`` would SIGTERM every model at the same instant as swapd and
  cut the requests swapd is draining.
- ``OOMPolicy=continue``: the kernel OOM-killing one model server must not stop the whole
  service (systemd's default); swapd reports the crash and starts the model again on demand.
- Hardening stops at options that need no mount namespace (a user manager cannot always
  create one: ``ProtectSystem``, ``PrivateTmp`` fail with status 226/NAMESPACE where
  unprivileged user namespaces are off) and leave device access alone: no
  ``PrivateDevices``, ``DevicePolicy``, ``DeviceAllow`` or ``ProtectClock`` (which adds a
  device allow-list), so ``/dev/nvidia*``, ``/dev/dri`` and ``/dev/kfd`` stay usable; no
  ``MemoryDenyWriteExecute`` (CUDA, ROCm and Python JITs map executable memory).
- ``StateDirectory=swapd``: systemd creates the state directory (``~/.local/state/swapd``
  for a user unit) and passes it as ``$STATE_DIRECTORY``, where swapd keeps its activity
  database (``observe.store``) unless ``store.path`` says otherwise.
- ``PATH`` is the one of the shell that ran ``install-service``: the user manager's own is
  minimal, and model ``cmd``\\ s name programs found on the user's PATH.

Rendering is pure (``render_service``, ``render_socket``); ``install`` writes the files.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import attrs

from swapd import __version__
from swapd.web.server import TLSFiles

__all__ = [
    "DEFAULT_LISTEN",
    "ServiceSpec",
    "install",
    "listen_stream",
    "render_service",
    "render_socket",
    "swapd_command",
    "unit_directory",
]

DEFAULT_LISTEN = "127.0.0.1:8080"
SERVICE_NAME = "swapd.service"
SOCKET_NAME = "swapd.socket"
WATCHDOG_SEC = 30  # the trio loop pings every 15 s; a loop stalled this long is restarted
TIMEOUT_STOP_SEC = 45  # drain (5 s) + model stop grace (10 s) + sweeps, with room


@attrs.frozen(kw_only=True)
class ServiceSpec:
    """What the unit runs: ``command`` (swapd's argv prefix) with an absolute ``config``."""

    command: tuple[str, ...]
    config: str
    binds: tuple[str, ...] = ()  # --listen values; with ``socket``, the socket unit's
    tls: TLSFiles | None = None
    watch_config: bool = False
    socket: bool = False
    path: str | None = None  # PATH for the service (and its models)


def swapd_command(executable: str = sys.executable) -> tuple[str, ...]:
    """How to start this installation of swapd: its console script next to ``executable``
    (a venv's or pipx's ``bin/swapd``), else ``executable -m swapd``. Symlinks are kept:
    a venv's python resolves to the system one, which cannot import this swapd."""
    script = Path(os.path.abspath(executable)).parent / "swapd"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (os.path.abspath(executable), "-m", "swapd")


def unit_directory(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/systemd/user``, else ``~/.config/systemd/user``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or str(Path.home()), ".config")
    return Path(base) / "systemd" / "user"


def _check_line(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"{value!r} cannot be written in a unit file (newline)")
    return value


def _specifiers(value: str) -> str:
    return _check_line(value).replace("%", "%%")


def _exec_word(arg: str, *, command: bool = False) -> str:
    """One word of an ``Exec*=`` line: specifiers escaped, ``$`` too in arguments (systemd
    expands variables there, not in the command's path), quoted if needed."""
    arg = _specifiers(arg) if command else _specifiers(arg).replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quoted_assignment(name: str, value: str) -> str:
    """``"NAME=value"`` for ``Environment=``."""
    text = _specifiers(f"{name}={value}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def listen_stream(bind: str) -> str:
    """The socket unit's ``ListenStream=`` value for a ``--listen`` bind string."""
    return _specifiers(bind.removeprefix("unix:"))


def _exec_start(spec: ServiceSpec) -> str:
    if re.search(r"[\"'\\\x00-\x1f\x7f]", spec.command[0]):
        # systemd refuses such a command path ("contains special characters").
        raise ValueError(f"systemd cannot run {spec.command[0]!r}: quotes or backslashes in it")
    argv = [*spec.command, "--config", spec.config]
    if not spec.socket:  # with the socket unit, the addresses arrive as LISTEN_FDS
        for bind in spec.binds:
            argv += ["--listen", bind]
    if spec.tls is not None:
        argv += ["--tls-cert-file", spec.tls.certfile, "--tls-key-file", spec.tls.keyfile]
    if spec.watch_config:
        argv.append("--watch-config")
    return " ".join(_exec_word(arg, command=i == 0) for i, arg in enumerate(argv))


def render_service(spec: ServiceSpec) -> str:
    """The text of ``swapd.service``."""
    socket_deps = f"Requires={SOCKET_NAME}\nAfter={SOCKET_NAME}\n" if spec.socket else ""
    enable = SOCKET_NAME if spec.socket else SERVICE_NAME
    environment = [_quoted_assignment("PYTHONUNBUFFERED", "1")]
    if spec.path:
        environment.insert(0, _quoted_assignment("PATH", spec.path))
    return f"""\
# swapd as a systemd user service; written by `swapd install-service` (swapd {__version__}).
#   systemctl --user daemon-reload && systemctl --user enable --now {enable}
#   journalctl --user -u swapd -f            # logs
#   systemctl --user reload swapd            # re-read the config (SIGHUP)
#   loginctl enable-linger "$USER"           # keep it running while you are logged out
# Change settings with `systemctl --user edit swapd` rather than here: install-service
# rewrites this file.
[Unit]
Description=swapd: local AI models behind one OpenAI-compatible endpoint
{socket_deps}StartLimitIntervalSec=300
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart={_exec_start(spec)}
ExecReload=/bin/kill -HUP $MAINPID
WorkingDirectory={_specifiers(os.path.dirname(spec.config))}
# The activity history (activity.db) lives here: $STATE_DIRECTORY.
StateDirectory=swapd
Environment={" ".join(environment)}
Restart=on-failure
RestartSec=2
WatchdogSec={WATCHDOG_SEC}
TimeoutStartSec=90
TimeoutStopSec={TIMEOUT_STOP_SEC}
# SIGTERM to swapd only: it drains requests and stops every model itself; systemd then
# SIGKILLs anything left in the cgroup (a process that left its model's process group).
KillMode=mixed
# One model server killed by the kernel's OOM killer must not take the service down.
OOMPolicy=continue
# Hardening that needs no mount namespace and leaves /dev alone, so GPUs
# (/dev/nvidia*, /dev/dri, /dev/kfd) stay usable: no PrivateDevices, DeviceAllow,
# ProtectClock or MemoryDenyWriteExecute (CUDA/ROCm JITs need executable memory).
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
SyslogIdentifier=swapd

[Install]
WantedBy=default.target
"""


def render_socket(spec: ServiceSpec) -> str:
    """The text of ``swapd.socket``: systemd binds the addresses and starts swapd with them
    (``LISTEN_FDS``) on the first connection; connections wait in the queue meanwhile."""
    streams = "".join(
        f"ListenStream={listen_stream(bind)}\n" for bind in spec.binds or (DEFAULT_LISTEN,)
    )
    return f"""\
# swapd's listening socket(s); written by `swapd install-service --socket`.
#   systemctl --user daemon-reload && systemctl --user enable --now {SOCKET_NAME}
# A unix socket can live in the runtime directory: ListenStream=%t/swapd.sock
[Unit]
Description=swapd listening socket

[Socket]
{streams}FileDescriptorName=swapd
NoDelay=true

[Install]
WantedBy=sockets.target
"""


def install(spec: ServiceSpec, directory: Path) -> list[Path]:
    """Write the unit file(s) into ``directory`` (created if missing); return their paths.

    Each file is written to a temporary name and renamed, so a running systemd never reads
    half a unit."""
    directory.mkdir(parents=True, exist_ok=True)
    units = {SERVICE_NAME: render_service(spec)}
    if spec.socket:
        units[SOCKET_NAME] = render_socket(spec)
    written = []
    for name, text in units.items():
        path = directory / name
        partial = directory / f".{name}.tmp"
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
        written.append(path)
    return written
