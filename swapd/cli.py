"""The ``swapd`` command line. The only module that reads ``sys.argv``.

::

    swapd [--config PATH] [--config-dir DIR] [--listen ADDR]...  run the daemon
          [--watch-config] [--tls-cert-file PEM --tls-key-file PEM] [--strict]
    swapd check-config [PATH|DIR] [--json] [--strict]            validate, print the resolved config
                                                                 (default: --config or config.yaml)
    swapd schema [--reference]                                   print the config JSON schema
                                                                 (or the Markdown reference)
    swapd install-service [--print] [--socket] [--config PATH] [--listen ADDR]...
                                                                 write the systemd user unit
    swapd --version

``ADDR`` is ``HOST:PORT``, ``:PORT`` (all interfaces), ``[v6]:PORT`` or ``unix:PATH``.
Sockets passed by systemd socket activation (``LISTEN_FDS``) are served on too, and then
no default address is added.

llama-swap's single-dash spellings (``-config``, ``-listen``, ``-watch-config``,
``-version``, ``-tls-cert-file``, ``-tls-key-file``) are accepted too.

``--strict`` turns config warnings (unknown keys, group members that are not models, keys
accepted but not active yet) into errors, for CI of config repositories.

Exit status: 0 success; 1 the config is invalid or the daemon failed; 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import attrs

from swapd import __version__
from swapd.config import Config, ConfigError, load_config
from swapd.config.load import load_config_dir
from swapd.config.model import DEFAULT_GROUP, ModelConfig, Timeouts
from swapd.config.preflight import missing_config_hint, preflight
from swapd.core.capabilities import capability_fields
from swapd.ops.activation import ActivationError, inherited_sockets

if TYPE_CHECKING:
    from swapd.web.server import TLSFiles

__all__ = ["EXIT_CONFIG", "EXIT_OK", "EXIT_USAGE", "main", "parse_bind", "parse_listen"]

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_CONFIG = "config.yaml"


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[v6]:PORT`` → (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid listen address {text!r}: expected HOST:PORT or :PORT")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ':PORT' means all interfaces, as in llama-swap
    return host, int(port_text)


def parse_bind(text: str) -> str:
    """A ``--listen`` value → the web server's bind string.

    >>> parse_bind(":8080"), parse_bind("[::1]:9000"), parse_bind("unix:/run/swapd.sock")
    ('0.0.0.0:8080', '[::1]:9000', 'unix:/run/swapd.sock')

    A relative ``unix:`` path is made absolute (a service has a different directory)."""
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise ValueError(f"invalid listen address {text!r}: expected unix:PATH")
        return f"unix:{os.path.abspath(path)}"
    host, port = parse_listen(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_arg(text: str) -> str:
    try:
        return parse_bind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_STRICT_HELP = "treat config warnings (unknown keys, ...) as errors"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swapd",
        description="Serve many local AI models through one OpenAI/Anthropic-compatible endpoint.",
    )
    parser.add_argument("--version", "-version", action="store_true", help="print the version")
    parser.add_argument(
        "--config", "-config", default=None, metavar="PATH", help="config file (config.yaml)"
    )
    parser.add_argument(
        "--config-dir",
        "-config-dir",
        default=None,
        metavar="DIR",
        help="merge the *.yaml/*.yml files of DIR (after --config, if given)",
    )
    _add_listen_options(parser, default=[])
    parser.add_argument(
        "--watch-config", "-watch-config", action="store_true", help="reload on file change"
    )
    parser.add_argument("--strict", action="store_true", help=_STRICT_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check-config", help="validate a config file and print it resolved (ports, argv, groups)"
    )
    check.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        default=None,
        help="a config file or a --config-dir directory (default: --config, else config.yaml)",
    )
    # Newcomers type the daemon's spelling after the command too: accept it.
    check.add_argument(
        "--config", "-config", metavar="PATH", default=argparse.SUPPRESS, help="same as PATH"
    )
    check.add_argument("--json", action="store_true", help="print the resolved config as JSON")
    check.add_argument(
        "--strict", action="store_true", default=argparse.SUPPRESS, help=_STRICT_HELP
    )
    schema = commands.add_parser("schema", help="print the config file's JSON schema")
    schema.add_argument(
        "--reference", action="store_true", help="print the Markdown configuration reference"
    )
    install = commands.add_parser(
        "install-service",
        help="write the systemd user unit (~/.config/systemd/user/swapd.service)",
        description="Write a systemd user unit that runs this swapd with --config PATH "
        "(made absolute). Then: systemctl --user daemon-reload && "
        "systemctl --user enable --now swapd.service",
    )
    # SUPPRESS: given after the command they replace the values given before it.
    install.add_argument(
        "--config",
        "-config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the config file the service runs (validated, made absolute)",
    )
    _add_listen_options(install, default=argparse.SUPPRESS)
    install.add_argument(
        "--watch-config", action="store_true", default=argparse.SUPPRESS, help="reload on change"
    )
    install.add_argument(
        "--print", action="store_true", help="print the unit(s) instead of writing them"
    )
    install.add_argument(
        "--socket",
        action="store_true",
        help="also write swapd.socket: systemd binds --listen and starts swapd on first use",
    )
    return parser


def _add_listen_options(parser: argparse.ArgumentParser, *, default: Any) -> None:
    parser.add_argument(
        "--listen",
        "-listen",
        type=_listen_arg,
        action="append",
        default=default,
        metavar="ADDR",
        help=f"address to serve on, repeatable: HOST:PORT, ':PORT' (all interfaces), "
        f"[v6]:PORT or unix:PATH (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--tls-cert-file",
        "-tls-cert-file",
        metavar="PATH",
        default=argparse.SUPPRESS if default is argparse.SUPPRESS else "",
        help="serve HTTPS with this PEM certificate (chain); needs --tls-key-file",
    )
    parser.add_argument(
        "--tls-key-file",
        "-tls-key-file",
        metavar="PATH",
        default=argparse.SUPPRESS if default is argparse.SUPPRESS else "",
        help="the PEM private key of --tls-cert-file",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return int(exc.code or 0)
    if args.version:
        print(f"swapd {__version__}")
        return EXIT_OK
    if args.command == "schema":
        from swapd.config.schema import render_reference, render_schema

        sys.stdout.write(render_reference() if args.reference else render_schema())
        return EXIT_OK
    if args.command == "check-config":
        return _check_config(args, as_json=args.json, strict=args.strict)
    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        print(
            "Error: Both --tls-cert-file and --tls-key-file must be provided for TLS.",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.command == "install-service":
        return _install_service(args)
    return _run_daemon(args)


def _tls_files(args: argparse.Namespace) -> TLSFiles | None:
    """The TLS files, absolute, after checking they load (a clear error now rather than a
    failed listener later); raises ``ValueError``."""
    if not args.tls_cert_file:
        return None
    from swapd.web.server import TLSFiles  # not at the top: it imports the web stack

    tls = TLSFiles(os.path.abspath(args.tls_cert_file), os.path.abspath(args.tls_key_file))
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
            tls.certfile, tls.keyfile
        )
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"cannot use TLS certificate {tls.certfile} with key {tls.keyfile}: {exc}"
        ) from None
    return tls


def _run_daemon(args: argparse.Namespace) -> int:
    hint = None
    if not args.config_dir:
        hint = missing_config_hint(args.config or DEFAULT_CONFIG, default=DEFAULT_CONFIG)
    if hint:
        print(f"Error: {hint}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.config_dir:
            config = load_config_dir(args.config_dir, config_file=args.config, strict=args.strict)
        else:
            config = load_config(args.config or DEFAULT_CONFIG, strict=args.strict)
    except ConfigError as exc:
        print(f"Error loading config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in [*config.warnings, *preflight(config)]:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        tls = _tls_files(args)
        inherited = inherited_sockets()  # systemd socket activation
    except (ValueError, ActivationError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    import swapd.daemon

    binds = [sock.bind for sock in inherited] + args.listen
    if not binds:
        binds = [parse_bind(DEFAULT_LISTEN)]
    return swapd.daemon.main(config, binds=binds, tls=tls, watch_config=args.watch_config)


def _install_service(args: argparse.Namespace) -> int:
    from swapd.ops.service import (
        ServiceSpec,
        install,
        render_service,
        render_socket,
        swapd_command,
        unit_directory,
    )

    config_path = os.path.abspath(args.config or DEFAULT_CONFIG)
    try:
        load_config(config_path)
        tls = _tls_files(args)
    except ConfigError as exc:
        print(f"Error loading config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    spec = ServiceSpec(
        command=swapd_command(),
        config=config_path,
        binds=tuple(args.listen),
        tls=tls,
        watch_config=args.watch_config,
        socket=args.socket,
        path=os.environ.get("PATH"),
    )
    try:
        if args.print:
            sys.stdout.write(render_service(spec))
            if spec.socket:
                sys.stdout.write("\n# --- swapd.socket ---\n" + render_socket(spec))
            return EXIT_OK
        written = install(spec, unit_directory())
    except (ValueError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    unit = "swapd.socket" if spec.socket else "swapd.service"
    for path in written:
        print(f"wrote {path}")
    print(f"next: systemctl --user daemon-reload && systemctl --user enable --now {unit}")
    print("logs: journalctl --user -u swapd -f")
    return EXIT_OK


def _check_config(args: argparse.Namespace, *, as_json: bool, strict: bool = False) -> int:
    """Validate what ``swapd`` with the same options would load: PATH if given, else
    ``--config``/``--config-dir`` (before or after the command), else ``config.yaml``."""
    path = args.path or args.config
    if path and args.path and args.config and args.path != args.config:
        print(f"Error: two config files given: {args.config} and {args.path}", file=sys.stderr)
        return EXIT_USAGE
    if not path and not args.config_dir:
        hint = missing_config_hint(DEFAULT_CONFIG, default=DEFAULT_CONFIG)
        if hint:
            print(f"Error: {hint}", file=sys.stderr)
            return EXIT_CONFIG
        path = DEFAULT_CONFIG
    try:
        if args.config_dir:
            config = load_config_dir(args.config_dir, config_file=path, strict=strict)
        elif os.path.isdir(path):  # a --config-dir directory given as PATH
            config = load_config_dir(path, strict=strict)
        else:
            config = load_config(path, strict=strict)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in [*config.warnings, *preflight(config)]:
        print(f"warning: {warning}", file=sys.stderr)
    if as_json:
        json.dump(resolved_view(config), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _print_resolved(config, sys.stdout)
    return EXIT_OK


def resolved_view(config: Config) -> dict[str, Any]:
    """The resolved config as plain data (what ``check-config --json`` prints)."""
    return attrs.asdict(config, recurse=True)


def _print_resolved(config: Config, out: TextIO) -> None:
    write = out.write
    write(f"config: {config.source} (ok)\n")
    write(f"models: {len(config.models)}\n")
    for model_id in sorted(config.models):
        model = config.models[model_id]
        write(f"  {model_id}\n")
        write(f"    group:  {config.group_of(model_id)}\n")
        if model.port is not None:
            write(f"    port:   {model.port}\n")
        write(f"    argv:   {shlex.join(model.argv)}\n")
        if model.stop_argv:
            write(f"    stop:   {shlex.join(model.stop_argv)}\n")
        write(f"    proxy:  {model.proxy}\n")
        write(f"    health: {model.check_endpoint}\n")
        if model.ttl > 0:
            write(f"    ttl:    {model.ttl}s\n")
        if model.aliases:
            write(f"    aliases: {', '.join(model.aliases)}\n")
        if model.sleep_enabled:
            write("    sleep:  enabled\n")
        _print_model_v250(model, write)
    write("groups:\n")
    for group_id, group in config.groups.items():
        flags = [f"swap={str(group.swap).lower()}", f"exclusive={str(group.exclusive).lower()}"]
        flags.append(f"persistent={str(group.persistent).lower()}")
        implicit = " (implicit)" if group_id == DEFAULT_GROUP else ""
        write(f"  {group_id}{implicit}: {' '.join(flags)}\n")
        write(f"    members: {', '.join(group.members) or '-'}\n")
    if config.peers:
        write("peers:\n")
        for peer_id, peer in sorted(config.peers.items()):
            write(f"  {peer_id}: {peer.proxy} ({', '.join(peer.models)})\n")
    if config.hooks.on_startup.preload:
        write(f"preload: {', '.join(config.hooks.on_startup.preload)}\n")
    _print_root_v250(config, write)


def _print_model_v250(model: ModelConfig, write: Callable[[str], object]) -> None:
    """The llama-swap v250 settings of one model, where they differ from the defaults."""
    if model.unload_timeout:
        write(f"    unloadTimeout: {model.unload_timeout}s\n")
    if model.timeouts != Timeouts():
        write(f"    timeouts: {_timeouts_text(model.timeouts)}\n")
    caps = capability_fields(model.capabilities)
    if caps:
        write(f"    capabilities: {json.dumps(caps, sort_keys=True)}\n")
    for name, params in sorted(model.filters.set_params_by_id.items()):
        write(f"    setParamsByID {name}: {json.dumps(params, sort_keys=True)}\n")
    if model.compat.ignore_websockets:
        write("    compat: ignoreWebsockets\n")


def _print_root_v250(config: Config, write: Callable[[str], object]) -> None:
    if config.global_ttl:
        write(f"globalTTL: {config.global_ttl}s\n")
    if config.unload_timeout:
        write(f"unloadTimeout: {config.unload_timeout}s\n")
    write(f"upstream.ignorePaths: {', '.join(config.upstream.ignore_paths)}\n")
    for peer_id, peer in sorted(config.peers.items()):
        write(f"  peer {peer_id} timeouts: {_timeouts_text(peer.timeouts)}\n")
    if config.profiles:
        write("profiles:\n")
        for profile_id, profile in sorted(config.profiles.items()):
            pins = ", ".join(f"{k} -> {v or '(disabled)'}" for k, v in sorted(profile.pins.items()))
            write(f"  {profile_id}: {pins}\n")
    if config.selectors:
        write("selectors:\n")
        for selector_id, selector in sorted(config.selectors.items()):
            targets = ", ".join(selector.targets)
            write(f"  {selector_id}: {selector.strategy.value} over {targets}\n")


def _timeouts_text(timeouts: Timeouts) -> str:
    parts = attrs.asdict(timeouts)
    return " ".join(f"{k}={v}" for k, v in parts.items())
