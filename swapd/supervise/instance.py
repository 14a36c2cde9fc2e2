"""One launched copy of a model, behind a small seam the runner drives.

``Instance`` is what a runner needs from "the model's server": wait until healthy, wait
for exit, stop, sleep, wake, its recent output. ``Launcher.open`` produces one as an async
context manager whose exit guarantees the server is gone.

``ProcessLauncher`` is the real thing: a process group (``procgroup.py``) registered with
the lifeline, polled over HTTP for health (``health.py``), slept and woken with the
configured HTTP calls (``sleepwake.py``). ``swapd.testing`` provides a scripted,
in-process launcher for deterministic swap-order tests under a mock clock.
"""

from __future__ import annotations

import collections
import os
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, nullcontext
from typing import Protocol

import httpx
import trio

from swapd.config.model import Config, ModelConfig
from swapd.errors import StartFailed
from swapd.supervise import health, sleepwake
from swapd.supervise.lifeline import Lifeline
from swapd.supervise.procgroup import ExitStatus, ProcessGroup, SpawnError, open_process_group

__all__ = [
    "Instance",
    "Launcher",
    "OutputSink",
    "ProcessInstance",
    "ProcessLauncher",
    "inherited_environment",
]

#: Called with (model_id, stream, line) for every line a model's server prints.
OutputSink = Callable[[str, str, str], None]

LOG_TAIL_LINES = 20


class Instance(Protocol):
    """A running server for one model."""

    @property
    def pid(self) -> int | None: ...

    async def wait_healthy(self) -> None:
        """Return once the server answers its health check; raise StartFailed if it dies.

        No deadline of its own: the caller wraps it (``healthCheckTimeout``)."""

    async def wait_exited(self) -> ExitStatus:
        """Wait until the server exits, for any reason."""

    async def stop(self) -> ExitStatus:
        """Stop the server (cmdStop or SIGTERM, bounded, then SIGKILL). Idempotent."""

    def kill(self) -> None:
        """SIGKILL the whole server now, without waiting."""

    async def sleep(self) -> None:
        """Run the sleep calls; raise on the first failure."""

    async def wake(self) -> None:
        """Run the wake calls; raise on the first failure."""

    def log_tail(self) -> list[str]:
        """The last lines the server printed."""


class Launcher(Protocol):
    def open(self, model_id: str, spec: ModelConfig) -> AbstractAsyncContextManager[Instance]:
        """Launch ``spec``; raise StartFailed if it cannot even be spawned."""

    def reconfigure(self, config: Config) -> None:
        """Use ``config``'s global settings for launches from now on (a reload)."""


class ProcessInstance:
    """A model server running as a process group on this machine."""

    def __init__(
        self,
        model_id: str,
        spec: ModelConfig,
        config: Config,
        group: ProcessGroup,
        client: httpx.AsyncClient,
        tail: collections.deque[str],
        stop_grace: float,
        probe_log: health.ProbeLog | None = None,
    ) -> None:
        self._probe_log = probe_log
        self._group = group
        self._model_id = model_id
        self._spec = spec
        self._config = config
        self._client = client
        self._tail = tail
        self._stop_grace = stop_grace

    @property
    def pid(self) -> int | None:
        return self._group.pid

    def log_tail(self) -> list[str]:
        return list(self._tail)

    def _failure(self, message: str, status: ExitStatus | None) -> StartFailed:
        return StartFailed(
            self._model_id,
            message,
            phase="health",
            exit=status.describe() if status else None,
            log_tail=self.log_tail()[-5:],
        )

    async def wait_healthy(self) -> None:
        url = health.health_url(self._spec)
        async with trio.open_nursery() as nursery:
            exited: list[ExitStatus] = []

            async def watch_exit() -> None:
                exited.append(await self._group.wait())
                nursery.cancel_scope.cancel(reason="the process exited while starting")

            nursery.start_soon(watch_exit)
            if url is not None:
                with self._probe_log.probing() if self._probe_log else nullcontext():
                    await health.wait_healthy(self._client, url)
            nursery.cancel_scope.cancel(reason="healthy")
        if exited:
            raise self._failure("the process exited while starting", exited[0])

    async def wait_exited(self) -> ExitStatus:
        return await self._group.wait()

    async def stop(self) -> ExitStatus:
        stop_argv: Sequence[str] | None = None
        if self._spec.stop_argv:
            pid = str(self._group.pid)
            stop_argv = [arg.replace("${PID}", pid) for arg in self._spec.stop_argv]
        # The config's unloadTimeout (model, else global) when set; else the daemon's grace.
        grace = self._spec.unload_timeout or self._stop_grace
        return await self._group.stop(grace=grace, stop_argv=stop_argv)

    def kill(self) -> None:
        self._group.kill()

    async def sleep(self) -> None:
        await sleepwake.run_steps(
            self._client,
            self._spec.proxy,
            self._spec.sleep_endpoints,
            default_timeout=self._config.sleep_request_timeout,
        )

    async def wake(self) -> None:
        await sleepwake.run_steps(
            self._client,
            self._spec.proxy,
            self._spec.wake_endpoints,
            default_timeout=self._config.wake_request_timeout,
        )


class ProcessLauncher:
    """Launches models as real processes.

    ``client`` is used for health, sleep and wake calls only (never for user traffic).
    ``marker`` (``NAME=value``) is put in every child's environment so a later swapd can
    find leftovers of a crashed one.
    """

    def __init__(
        self,
        config: Config,
        *,
        client: httpx.AsyncClient,
        on_output: OutputSink,
        lifeline: Lifeline | None = None,
        marker: str | None = None,
        stop_grace: float = 10.0,
        environ: dict[str, str] | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._on_output = on_output
        self._lifeline = lifeline
        self._marker = marker
        self._stop_grace = stop_grace
        self._environ = dict(os.environ if environ is None else environ)

    def reconfigure(self, config: Config) -> None:
        self._config = config

    @asynccontextmanager
    async def open(self, model_id: str, spec: ModelConfig) -> AsyncIterator[Instance]:
        await _refuse_taken_port(model_id, spec)
        env = inherited_environment(self._environ, self._config)
        for entry in spec.env:
            name, _, value = entry.partition("=")
            env[name] = value
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        sink = self._on_output

        def on_output(stream: str, line: str) -> None:
            tail.append(line)
            sink(model_id, stream, line)

        probe_log = health.ProbeLog(spec, on_output)  # folds the log lines of our probes

        async with AsyncExitStack() as stack:
            try:
                group = await stack.enter_async_context(
                    open_process_group(
                        spec.argv,
                        env=env,
                        on_output=probe_log.line,
                        lifeline=self._lifeline,
                        marker=self._marker,
                        stop_grace=self._stop_grace,
                    )
                )
            except SpawnError as exc:
                raise StartFailed(model_id, str(exc), phase="spawn") from exc
            yield ProcessInstance(
                model_id,
                spec,
                self._config,
                group,
                self._client,
                tail,
                self._stop_grace,
                probe_log,
            )


def inherited_environment(environ: Mapping[str, str], config: Config) -> dict[str, str]:
    """swapd's environment as a model inherits it: without the variables that hold the
    config's secrets (the client ``apiKeys`` and the peers' ``apiKey``, typically put
    there through ``${env.NAME}``): a model server has no business with swapd's keys. A
    variable counts when its value is a secret or a part of one of at least 8 characters.
    A model that needs one gets it explicitly, through its ``env`` list."""
    peers = (p.api_key for p in config.peers.values())
    secrets = [s for s in (*config.api_keys, *(k.secret for k in config.keys), *peers) if s]
    if not secrets:
        return dict(environ)
    return {
        name: value
        for name, value in environ.items()
        if not any(value == s or (len(value) >= 8 and value in s) for s in secrets)
    }


async def _refuse_taken_port(model_id: str, spec: ModelConfig) -> None:
    """Fail before spawning if something already answers on the model's address.

    Otherwise a foreign server on that port would pass our health check and receive the
    model's traffic (a llama-swap sharp edge).
    """
    parts = urllib.parse.urlsplit(spec.proxy)
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if host not in ("localhost", "127.0.0.1", "::1", "[::1]") and not (
        host and host.startswith("127.")
    ):
        return  # a remote address: not ours to check
    with trio.move_on_after(0.5):
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            return  # nothing listens there: free
        await stream.aclose()
        raise StartFailed(
            model_id,
            f"port {port} on {host} is already in use by another process",
            phase="port",
        )
