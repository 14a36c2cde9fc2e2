"""Socket activation: listen on the sockets systemd (or any ``sd_listen_fds`` peer) passed.

The protocol: the manager binds the sockets, starts swapd with them open as fds 3, 4, …
and sets ``LISTEN_FDS`` (how many), ``LISTEN_PID`` (who they are for: a process that is
not ``LISTEN_PID`` ignores them, so a child that inherited the variables does not steal
them) and optionally ``LISTEN_FDNAMES`` (``name:name:…``, from ``FileDescriptorName=``).

``inherited_sockets()`` reads them, checks each fd is a stream socket, marks the fds
close-on-exec and removes the variables (as ``sd_listen_fds(unset_environment=1)``). The
web server takes ``fd://N`` binds and serves on the sockets as they are (already bound;
hypercorn only calls ``listen()`` again, which keeps the queue of waiting connections).
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import MutableMapping

import attrs

__all__ = ["LISTEN_FDS_START", "ActivationError", "InheritedSocket", "inherited_sockets"]

LISTEN_FDS_START = 3
ENVIRONMENT = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class ActivationError(Exception):
    """The inherited sockets are not usable (malformed variables, not a stream socket)."""


@attrs.frozen
class InheritedSocket:
    fd: int
    name: str

    @property
    def bind(self) -> str:
        """The web server's bind string for this socket."""
        return f"fd://{self.fd}"


def inherited_sockets(
    environ: MutableMapping[str, str] | None = None, *, pid: int | None = None, unset: bool = True
) -> list[InheritedSocket]:
    """The sockets passed to this process (``pid``, default ours); [] if none were.

    ``environ`` defaults to ``os.environ``. Raises :class:`ActivationError` if the variables
    are meant for us but are malformed or name an fd that is not a stream socket.
    """
    env = os.environ if environ is None else environ
    count_text, pid_text = env.get("LISTEN_FDS", ""), env.get("LISTEN_PID", "")
    names_text = env.get("LISTEN_FDNAMES", "")
    if unset:
        for name in ENVIRONMENT:
            env.pop(name, None)
    if not count_text or not pid_text:
        return []
    if pid_text != str(os.getpid() if pid is None else pid):
        return []  # meant for another process (we inherited the variables)
    if not count_text.isdigit():
        raise ActivationError(f"LISTEN_FDS={count_text!r} is not a number")
    count = int(count_text)
    names = names_text.split(":") if names_text else []
    found = []
    for index in range(count):
        fd = LISTEN_FDS_START + index
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            raise ActivationError(f"inherited fd {fd} is not open: {exc}") from None
        if not stat.S_ISSOCK(mode):
            raise ActivationError(f"inherited fd {fd} is not a socket")
        with socket.socket(fileno=os.dup(fd)) as probe:
            if probe.type != socket.SOCK_STREAM:
                raise ActivationError(f"inherited fd {fd} is not a stream socket")
        os.set_inheritable(fd, False)
        name = names[index] if index < len(names) else "unknown"
        found.append(InheritedSocket(fd, name))
    return found
