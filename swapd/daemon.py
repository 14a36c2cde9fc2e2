"""The composition root: builds the bus, supervisor, forwarder and app, and runs them.

Only this module opens the root nursery and handles signals. ``serve`` is what tests
start (``await nursery.start(serve, config, ...)`` on port 0); ``main`` is what the CLI
runs.

SIGHUP (and ``--watch-config``, and ``POST /api/config/reload``) reloads the config file
through ``reload.Reloader``; ``_LiveConfig`` is what a reload switches over.

Shutdown order: stop accepting, answer requests still waiting for a model with 503 +
``Retry-After``, let requests in flight finish (bounded), then stop every model in
parallel (bounded), then the lifeline closes. A second SIGINT/SIGTERM kills every model
process group at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from functools import partial

import attrs
import httpx
import trio

from swapd.config.diff import ConfigDiff
from swapd.config.model import Config
from swapd.core.events import ModelPreloaded, ModelStateChanged
from swapd.errors import SwapdError
from swapd.observe.bus import EventBus
from swapd.observe.logs import HubHandler
from swapd.observe.progress import LoadProgressObserver
from swapd.observe.telemetry import Telemetry
from swapd.ops.notify import Notifier
from swapd.reload import Reloader, watch_config_file
from swapd.supervise.instance import ProcessLauncher
from swapd.supervise.kvcache import KvCacheKeeper, index_maker
from swapd.supervise.lifeline import new_instance_marker, open_lifeline, sweep_orphans
from swapd.supervise.supervisor import Supervisor
from swapd.supervise.warm import WarmKeeper
from swapd.web.app import Services, create_app
from swapd.web.forward import Forwarder
from swapd.web.server import TLSFiles, tcp_bind
from swapd.web.server import serve as serve_http

__all__ = ["Daemon", "main", "serve"]

log = logging.getLogger("swapd")
_LOGGERS = ("swapd", "hypercorn.error")


@attrs.define(eq=False)
class Daemon:
    """What ``serve`` hands to its starter: where it listens and how to stop it."""

    urls: list[str]
    services: Services
    shutdown: trio.Event
    reloader: Reloader
    notifier: Notifier = attrs.field(factory=Notifier)  # sd_notify (disabled: no-op)

    @property
    def url(self) -> str:
        return self.urls[0]

    def stop(self) -> None:
        self.shutdown.set()


async def serve(
    config: Config,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    binds: Sequence[str] = (),
    tls: TLSFiles | None = None,
    notifier: Notifier | None = None,
    stop_grace: float = 10.0,
    handle_signals: bool = False,
    watch_config: bool = False,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run swapd until ``Daemon.stop()`` (or a signal, with ``handle_signals``).

    ``config.source`` names the file a reload reads (none for a config built in memory).
    It listens on ``binds`` (``web.server`` bind strings: TCP, ``unix:PATH``, ``fd://N``)
    if given, else on ``host:port``; HTTPS with ``tls``. ``notifier`` reports readiness,
    reloads, shutdown and watchdog pings to systemd (see ``ops.notify``).
    """
    binds = list(binds) or [tcp_bind(host, port)]
    notifier = notifier or Notifier()
    for orphan in sweep_orphans():
        log.warning("killed process group %d left over by a crashed swapd", orphan.pgid)
    bus: EventBus[object] = EventBus()
    telemetry = Telemetry(config, bus, environ=os.environ)
    handler = HubHandler(telemetry.logs, trio_token=trio.lowlevel.current_trio_token())
    _set_log_level(config)
    for name in _LOGGERS:
        logging.getLogger(name).addHandler(handler)
    wiring = _Wiring(
        binds=binds,
        tls=tls,
        notifier=notifier,
        stop_grace=stop_grace,
        watch_config=watch_config,
        bus=bus,
        telemetry=telemetry,
        forwarder=Forwarder(),
    )
    try:
        async with trio.open_nursery() as guard:
            # Signals are watched outside the nursery that is cancelled at shutdown, so
            # a second Ctrl-C still arrives while the models are being stopped.
            if handle_signals:
                guard.start_soon(_watch_signals, wiring)
            await guard.start(notifier.run, bus, wiring.shutdown)  # pings until stopped
            # The activity store's writer: open before the first request, closed (queued
            # rows written) after the last one.
            await guard.start(telemetry.activity.run)
            guard.start_soon(telemetry.performance.run)  # hardware once, then samples
            await _run(config, wiring, task_status)
            await telemetry.activity.aclose()
            guard.cancel_scope.cancel(reason="swapd stopped")
    finally:
        await wiring.forwarder.aclose()
        telemetry.logs.close()
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(handler)


async def _run(config: Config, wiring: _Wiring, task_status: trio.TaskStatus[Daemon]) -> None:
    """Everything that runs until shutdown: lifeline, supervisor, HTTP server."""
    bus, telemetry, shutdown = wiring.bus, wiring.telemetry, wiring.shutdown
    async with (
        contextlib.AsyncExitStack() as stack,
        open_lifeline() as lifeline,
        httpx.AsyncClient(trust_env=False) as probe_client,
        trio.open_nursery() as nursery,
    ):
        launcher = ProcessLauncher(
            config,
            client=probe_client,
            on_output=telemetry.logs.write_model_line,
            lifeline=lifeline,
            marker=new_instance_marker(),
            stop_grace=wiring.stop_grace,
        )
        kv_cache = KvCacheKeeper(
            config, probe_client, bus.publish, index_for=index_maker(telemetry.activity)
        )
        await _prepare_kv_cache(config, kv_cache)
        supervisor = wiring.supervisor = Supervisor(config, launcher, bus=bus, kv_cache=kv_cache)
        # Learned memory peaks from earlier runs; new ones are kept in the store too.
        await supervisor.footprints.attach(telemetry.activity)
        stack.enter_context(bus.watch(_log_event, (ModelStateChanged,)))
        stack.enter_context(bus.watch(telemetry.on_event, Telemetry.WATCHED))
        await nursery.start(supervisor.run)
        services = Services(
            config=config,
            supervisor=supervisor,
            forwarder=wiring.forwarder,
            bus=bus,
            telemetry=telemetry,
        )
        # Load progress follows the bus and the model logs; started before any request.
        progress = LoadProgressObserver(
            lambda: services.config, telemetry.logs, bus, telemetry.activity
        )
        services.progress = progress  # /v1/models and /running read it
        supervisor.load_eta = progress.remaining  # Retry-After of a 429 while it loads
        await nursery.start(progress.run)
        services.warm = WarmKeeper(lambda: services.config, supervisor, bus)  # warm.* keys
        await nursery.start(services.warm.run)
        live = _LiveConfig(services, launcher, nursery)
        source = _reload_source(config)
        reloader = wiring.reloader = Reloader(source, live, bus.publish)
        services.reloader = reloader
        if wiring.watch_config and source is not None:
            nursery.start_soon(watch_config_file, reloader)
        app = create_app(services)
        nursery.start_soon(_refuse_new_at_shutdown, shutdown, supervisor)
        async with trio.open_nursery() as web:
            urls = await web.start(partial(serve_http, app, wiring.binds, shutdown, tls=wiring.tls))
            log.info("swapd listening on %s", ", ".join(urls))
            if web_urls := [url for url in urls if url.startswith(("http://", "https://"))]:
                log.info("web UI: %s/ui/", web_urls[0].replace("//0.0.0.0:", "//127.0.0.1:"))
            wiring.notifier.ready()  # the config is loaded and every listener is bound
            live.preload(config)
            task_status.started(Daemon(urls, services, shutdown, reloader, wiring.notifier))
        # hypercorn has drained (bounded by its graceful timeout); now the models go.
        nursery.cancel_scope.cancel(reason="swapd is shutting down")


@attrs.define(eq=False, kw_only=True)
class _Wiring:
    """What ``serve`` sets up for ``_run``: its options and the parts that outlive a run;
    ``supervisor`` and ``reloader`` are filled in as the daemon comes up (the signal
    handler acts on them)."""

    binds: list[str]
    tls: TLSFiles | None
    notifier: Notifier
    stop_grace: float
    watch_config: bool
    bus: EventBus[object]
    telemetry: Telemetry
    forwarder: Forwarder
    shutdown: trio.Event = attrs.field(factory=trio.Event)
    supervisor: Supervisor | None = None
    reloader: Reloader | None = None


@attrs.define(eq=False)
class _LiveConfig:
    """The running config, as a reload sees it: switching it updates every user."""

    services: Services
    launcher: ProcessLauncher
    nursery: trio.Nursery

    @property
    def config(self) -> Config:
        return self.services.config

    async def apply(self, config: Config, diff: ConfigDiff) -> None:
        await self.services.supervisor.reconfigure(config, diff)
        self.services.use_config(config)
        self.services.telemetry.reconfigure(config)
        _set_log_level(config)
        self.preload(config)

    def preload(self, config: Config) -> None:
        for model_id in config.hooks.on_startup.preload:
            self.nursery.start_soon(_preload, self.services.supervisor, model_id)


async def _refuse_new_at_shutdown(shutdown: trio.Event, supervisor: Supervisor) -> None:
    # While hypercorn drains, a request still waiting for a model gets a clean 503
    # instead of being cut when the drain ends.
    await shutdown.wait()
    supervisor.refuse_new()


def _reload_source(config: Config) -> str | None:
    """The file a reload reads: the one the config came from, if it came from one."""
    return config.source if os.path.isfile(config.source) else None


def _set_log_level(config: Config) -> None:
    level = config.log_level.value.upper().replace("WARN", "WARNING")
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(level)


async def _prepare_kv_cache(config: Config, kv_cache: KvCacheKeeper) -> None:
    """Create the saved-slot directory and delete orphans, when a model opts in."""
    if any(spec.kv_cache.enabled for spec in config.models.values()):
        try:
            await kv_cache.prepare()
        except OSError as exc:  # a cache is an optimisation: swapd runs without it
            log.warning("KV-cache directory %s unusable: %s", config.kv_cache.dir, exc)


def _log_event(event: object) -> None:
    if isinstance(event, ModelStateChanged):
        detail = f": {event.error}" if event.error else ""
        level = logging.WARNING if event.error else logging.INFO
        log.log(
            level, "<%s> %s -> %s (%s)%s", event.model, event.old, event.new, event.reason, detail
        )


async def _preload(supervisor: Supervisor, model_id: str) -> None:
    """Start ``model_id`` in the background and report how it went (unlike llama-swap,
    a failed start is reported as a failure)."""
    try:
        await supervisor.load(model_id)
    except SwapdError as exc:
        log.error("preload of %s failed: %s", model_id, exc)
        supervisor.bus.publish(ModelPreloaded(model=model_id, success=False, error=str(exc)))
    else:
        log.info("preloaded %s", model_id)
        supervisor.bus.publish(ModelPreloaded(model=model_id, success=True))


async def _watch_signals(wiring: _Wiring) -> None:
    shutdown = wiring.shutdown
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as reloads:  # a reload never delays a SIGTERM
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if wiring.reloader is not None and not shutdown.is_set():
                        log.info("received SIGHUP, reloading the configuration")
                        reloads.start_soon(wiring.reloader.reload, "SIGHUP")
                    continue
                _on_stop_signal(signum, wiring)


def _on_stop_signal(signum: int, wiring: _Wiring) -> None:
    shutdown = wiring.shutdown
    name = signal.Signals(signum).name
    if not shutdown.is_set():
        log.info("received %s, shutting down", name)
        shutdown.set()
    else:
        log.warning("received %s again, killing every model now", name)
        if wiring.supervisor is not None:
            wiring.supervisor.kill_all()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main(
    config: Config,
    *,
    binds: Sequence[str],
    tls: TLSFiles | None = None,
    watch_config: bool = False,
) -> int:
    """Run the daemon in the foreground on ``binds``; returns the exit status.

    swapd's own log lines go through the log hub (installed by ``serve``), which writes
    them to stdout as ``logToStdout`` says and keeps them for ``/logs``. Under systemd
    (``$NOTIFY_SOCKET``) it reports readiness and pings the watchdog."""
    # Per-request library logs would sit on the hot path and drown swapd's own events.
    for noisy in ("httpx", "httpcore", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    failures: list[str] = []
    with Notifier.from_environ() as notifier:
        try:
            trio.run(
                partial(
                    serve,
                    config,
                    binds=binds,
                    tls=tls,
                    notifier=notifier,
                    handle_signals=True,
                    watch_config=watch_config,
                )
            )
        except* OSError as group:  # a listener could not bind (port taken, no permission)
            failures.extend(str(e) for e in _leaves(group))
    if failures:
        where = ", ".join(binds)
        print(f"Error: cannot listen on {where}: {'; '.join(failures)}", file=sys.stderr)  # noqa: T201
        return 1
    return 0
