"""Listeners: TLS, a Unix socket, and sockets inherited through systemd socket activation.

TLS and socket activation run swapd as a real process (the command line is what they
configure); the Unix socket also runs in-process, with a model request through it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from swapd.cli import parse_bind
from swapd.config import parse_config
from swapd.daemon import Daemon, serve
from swapd.ops.activation import ActivationError, inherited_sockets
from swapd.testing.process import run_swapd
from swapd.testing.server import free_port_base, upstream_cmd

ROOT = Path(__file__).parent.parent


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: AF_UNIX paths are limited to 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="swapd-listen-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"startPort: {free_port_base()}\nmodels:\n"
        f"  m:\n    cmd: {upstream_cmd('--model', 'm', '--respond', 'hello')}\n"
        "    proxy: http://127.0.0.1:${PORT}\n"
    )
    return config


@contextlib.contextmanager
def swapd_process(
    *args: str, launch: tuple[str, ...] = ("-m", "swapd"), **popen: object
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, *launch, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,  # type: ignore[call-overload]
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def wait_up(proc: subprocess.Popen[bytes], probe: Callable[[], httpx.Response]) -> httpx.Response:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"swapd exited: {proc.communicate()[0].decode()}")
        try:
            return probe()
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("swapd did not come up")


def wait_unix(proc: subprocess.Popen[bytes], path: Path) -> None:
    """Wait until ``path`` accepts connections (httpx's sync transport leaks the socket of
    a failed unix connect, so it is not the probe here)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"swapd exited: {proc.communicate()[0].decode()}")
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                time.sleep(0.05)
            else:
                return
    raise AssertionError("swapd did not come up")


def read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length body, read off a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return data


def chat(client: httpx.Client) -> str:
    reply = client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["choices"][0]["message"]["content"])


# --- TLS ---------------------------------------------------------------------------------


def test_tls_serves_https_that_verifies_against_the_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    port = free_port_base()
    args = ["--config", str(write_config(tmp_path)), "--listen", f"127.0.0.1:{port}"]
    args += ["-tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)]  # both spellings
    with swapd_process(*args) as proc:
        base = f"https://127.0.0.1:{port}"
        with httpx.Client(base_url=base, verify=client_context) as client:
            health = wait_up(proc, lambda: client.get("/health"))
            assert (health.status_code, health.http_version) == (200, "HTTP/1.1")
            assert chat(client) == "hello"
        with httpx.Client(base_url=base, verify=client_context, http2=True) as client:
            assert client.get("/v1/models").http_version == "HTTP/2"  # ALPN offers h2
        with httpx.Client(base_url=base) as client, pytest.raises(httpx.ConnectError):
            client.get("/health")  # the system trust store does not know our CA
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/health")  # plain HTTP is not served
    assert proc.returncode == 0


def test_unusable_tls_files_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate\n")
    args = ["--tls-cert-file", str(tmp_path / "cert.pem"), "--tls-key-file", "missing.pem"]
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "--config", str(write_config(tmp_path)), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: cannot use TLS certificate {tmp_path / 'cert.pem'}")
    assert "Traceback" not in result.stderr


def test_a_taken_port_is_a_clear_error_that_the_harness_passes_on(tmp_path: Path) -> None:
    """CI once saw only "swapd exited with 1": the harness now shows why. Its own ports
    come from below the ephemeral range, where outgoing connections never take them."""
    config = write_config(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = f"cannot listen on 127.0.0.1:{port}: .*in use"
        with pytest.raises(AssertionError, match=refused), run_swapd(config, port=port):
            pass
    first, _ = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    with run_swapd(config) as swapd:
        assert swapd.port < first


def test_help_lists_the_listen_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swapd", "--help"], capture_output=True, text=True, check=True
    )
    for text in ("--tls-cert-file", "--tls-key-file", "unix:PATH", "install-service"):
        assert text in result.stdout


# --- Unix socket -------------------------------------------------------------------------


async def test_unix_socket_listener_serves_models_and_is_removed_at_exit(
    tmp_path: Path, short_dir: Path
) -> None:
    path = short_dir / "swapd.sock"
    config = parse_config(write_config(tmp_path).read_text(), file="<test>")
    transport = httpx.AsyncHTTPTransport(uds=str(path))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            daemon: Daemon = await nursery.start(
                partial(serve, config, binds=[f"unix:{path}"], stop_grace=2)
            )
            assert daemon.urls == [f"http://unix:{path}"]
            assert path.is_socket()
            async with httpx.AsyncClient(transport=transport, base_url="http://swapd") as client:
                assert (await client.get("/health")).status_code == 200
                reply = await client.post(
                    "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    timeout=30,
                )
                assert reply.json()["choices"][0]["message"]["content"] == "hello"
            daemon.stop()
    assert not path.exists()


def test_unix_socket_of_a_running_swapd_is_not_taken_over(tmp_path: Path, short_dir: Path) -> None:
    path = short_dir / "swapd.sock"
    config = str(write_config(tmp_path))
    # A relative unix: path is made absolute against the working directory.
    with swapd_process("--config", config, "--listen", "unix:swapd.sock", cwd=short_dir) as first:
        wait_unix(first, path)
        second = subprocess.run(
            [sys.executable, "-m", "swapd", "--config", config, "--listen", f"unix:{path}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert f"Error: cannot listen on unix:{path}: [Errno 98] a server is already" in (
            second.stderr
        )
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            assert client.get("http://swapd/health").status_code == 200  # still the first


def test_a_stale_socket_file_is_replaced(tmp_path: Path, short_dir: Path) -> None:
    path = short_dir / "swapd.sock"
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(path))  # bound, never listening, then closed: what a crash leaves
    with swapd_process("--config", str(write_config(tmp_path)), "--listen", f"unix:{path}") as proc:
        wait_unix(proc, path)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            assert client.get("http://swapd/health").status_code == 200


# --- socket activation -------------------------------------------------------------------

# What systemd does between fork and exec: the sockets become fds 3, 4, … and LISTEN_PID
# names the process that is about to exec swapd.
ACTIVATE = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)))
os.execv(sys.executable, [sys.executable, "-m", "swapd", *sys.argv[2:]])
"""


def test_socket_activation_serves_on_the_inherited_sockets(tmp_path: Path, short_dir: Path) -> None:
    path = short_dir / "activated.sock"
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix,
    ):
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        unix.bind(str(path))
        unix.listen()
        port = tcp.getsockname()[1]
        # A client that connects before swapd runs waits in the queue, as with systemd.
        early = socket.create_connection(("127.0.0.1", port), timeout=30)
        early.sendall(b"GET /health HTTP/1.1\r\nHost: swapd\r\n\r\n")
        fds = f"{tcp.fileno()},{unix.fileno()}"
        env = {**os.environ, "LISTEN_FDNAMES": "web:local"}
        with swapd_process(
            "--config",
            str(write_config(tmp_path)),
            launch=("-c", ACTIVATE, fds),
            pass_fds=(tcp.fileno(), unix.fileno()),
            env=env,
        ) as proc:
            with early:  # closed before the stop: an idle keep-alive would delay the drain
                assert read_response(early).startswith(b"HTTP/1.1 200")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
                assert chat(client) == "hello"
            with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
                assert client.get("http://swapd/v1/models").status_code == 200
            model_env = httpx.get(f"http://127.0.0.1:{port}/upstream/m/env", timeout=10).json()
            assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & model_env.keys()
            proc.terminate()
            output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    # Exactly the inherited sockets: no default address was added.
    assert f"listening on http://127.0.0.1:{port}, http://unix:{path}\n" in output.decode()


def test_activation_variables_for_another_process_are_ignored_and_removed() -> None:
    env = {"LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "x"}
    assert inherited_sockets(env) == []
    assert env == {}
    assert inherited_sockets({}) == []
    with pytest.raises(ActivationError, match="LISTEN_FDS='two' is not a number"):
        inherited_sockets({"LISTEN_FDS": "two", "LISTEN_PID": str(os.getpid())})


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("127.0.0.1:8080", "127.0.0.1:8080"),
        (":8080", "0.0.0.0:8080"),
        ("[::1]:9000", "[::1]:9000"),
        ("unix:/run/user/1000/swapd.sock", "unix:/run/user/1000/swapd.sock"),
        ("unix:swapd.sock", f"unix:{os.getcwd()}/swapd.sock"),
    ],
)
def test_listen_addresses_become_binds(text: str, bind: str) -> None:
    assert parse_bind(text) == bind


@pytest.mark.parametrize("text", ["unix:", "8080", "host:port"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid listen address"):
        parse_bind(text)
