"""The ``coldbrew`` command."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coldbrew import __version__
from coldbrew.auth import cli as auth_cli
from coldbrew.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from coldbrew.gateway.app import create_app

    overrides: dict[str, Any] = {}
    for flag in ("host", "port", "data_dir", "account_id", "log_level", "backend", "ray_address"):
        value = getattr(args, flag)
        if value is not None:
            overrides[flag] = value
    if args.demo:
        overrides["demo"] = True
    overrides.update(auth_cli.serve_overrides(args))
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"coldbrew: {_setting_error(exc)}", file=sys.stderr)
        return 2
    refusal, warnings = auth_cli.startup_check(settings)
    for warning in warnings:
        print(f"coldbrew: {warning}", file=sys.stderr)
    if refusal is not None:
        print(f"coldbrew: {refusal}", file=sys.stderr)
        return 2
    busy = _port_in_use(settings.host, settings.port)
    if busy is not None:
        print(
            f"coldbrew: cannot listen on {settings.host}:{settings.port}: {busy}; "
            "stop what uses it or pick another port with --port (COLDBREW_PORT)",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from coldbrew import heap

    heap.limit_arenas()  # before any thread starts (coldbrew.heap)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        # In-flight invocations may run up to 60 s; let them finish on SIGTERM/SIGINT.
        timeout_graceful_shutdown=65,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1


def _setting_error(exc: ValidationError) -> str:
    """One readable line per bad setting, naming the flag's environment variable."""
    parts = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "setting"
        value = error.get("input")
        shown = "" if value is None or isinstance(value, dict) else f"={str(value)[:64]!r}"
        # pydantic prefixes a validator's own message with "Value error, "; the message is enough.
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"invalid setting COLDBREW_{name.upper()}{shown}: {message}")
    return "; ".join(parts)


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, checked before anything starts (None if it can)."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: SO_REUSEADDR, so a socket in TIME_WAIT does not count as in use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coldbrew", description="Self-hosted serverless inference with the SageMaker API."
    )
    parser.add_argument("--version", action="version", version=f"coldbrew {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the gateway (control and invocations API on one port)")
    serve.add_argument("--host", help="address to listen on (COLDBREW_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (COLDBREW_PORT, default 8080)")
    serve.add_argument("--data-dir", type=Path, help="state and artifact cache (COLDBREW_DATA_DIR)")
    serve.add_argument("--account-id", help="12-digit account id used in ARNs (COLDBREW_ACCOUNT_ID)")
    serve.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], help="COLDBREW_LOG_LEVEL, default info"
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="also deploy the demo endpoint 'coldbrew-demo' (a scikit-learn regressor)",
    )
    serve.add_argument(
        "--backend",
        choices=["local", "ray"],
        help="where environments run: this machine, or a Ray cluster (COLDBREW_BACKEND, default local)",
    )
    serve.add_argument(
        "--ray-address",
        help="Ray cluster for --backend ray: auto, HOST:PORT or ray://HOST:PORT (COLDBREW_RAY_ADDRESS)",
    )
    auth_cli.add_serve_flags(serve)  # --auth, --insecure, --allowed-host, --tls-cert, --tls-key
    serve.set_defaults(func=_serve)

    from coldbrew import endpoints_cli
    from coldbrew.logs import cli as logs_cli
    from coldbrew.metering import cli as metering_cli
    from coldbrew.simulate import cli as simulate_cli
    from coldbrew.stacks import cli as stacks_cli
    from coldbrew.tune import cli as tune_cli

    endpoints_cli.add_commands(commands)  # endpoints, describe, delete, invoke
    metering_cli.add_commands(commands)  # metrics, cost
    simulate_cli.add_commands(commands)  # simulate
    logs_cli.add_commands(commands)  # logs
    stacks_cli.add_commands(commands)  # deploy-stack, delete-stack, describe-stack, stacks
    tune_cli.add_commands(commands)  # tune
    auth_cli.add_commands(commands)  # keys
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except KeyboardInterrupt:
        # Ctrl+C before the server took over its signals (or in another command): no traceback.
        sys.exit(130)
