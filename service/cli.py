"""The ``rtforge`` command: ``serve``, ``websocket:info``, ``websocket:stats``.

Every node setting is a flag and an ``RTFORGE_*`` variable (see
:mod:`service.settings`). Any bad flag or setting ends the command with one
clear line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import httpx

from .errors import SettingsError
from .settings import OPTIONS, Settings
from .telemetry import TelemetryConfig

__all__ = ["main"]

VERSION = "0.1.0"
EXIT_USAGE = 2
EXIT_FAILURE = 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_settings(parser: argparse.ArgumentParser) -> None:
    for option in OPTIONS:
        default = "generated" if option.default is None else option.default
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.name.split("_")[-1].upper(),
            help=f"{option.help} [env {option.env}, default {default}]",
        )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rtforge", description="rtforge real-time WebSocket server")
    parser.add_argument("--version", action="version", version=f"rtforge {VERSION}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    serve = commands.add_parser("serve", help="run one node")
    _add_settings(serve)
    info = commands.add_parser(
        "websocket:info", help="print version, endpoints and effective settings"
    )
    _add_settings(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    stats = commands.add_parser(
        "websocket:stats", help="print live statistics of a running node or cluster"
    )
    stats.add_argument("--url", default=None, help="node base URL (default from --host/--port)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    _add_settings(stats)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_sources({o.name: getattr(args, o.name) for o in OPTIONS})


def _fail(message: str) -> NoReturn:
    print(f"rtforge: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_FAILURE)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"rtforge: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if args.command == "serve":
        _serve(settings)
    elif args.command == "websocket:info":
        _info(settings, as_json=args.json)
    else:
        _stats(settings, args.url, as_json=args.json, timeout=args.timeout)


def _telemetry() -> TelemetryConfig:
    """Tracing settings from the standard ``OTEL_*`` variables (read here, once)."""
    try:
        return TelemetryConfig.from_env()
    except SettingsError as exc:
        print(f"rtforge: error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _serve(settings: Settings) -> None:
    import uvicorn  # noqa: PLC0415 - keep info/stats fast

    from .app import create_app  # noqa: PLC0415
    from .drain import DrainingServer  # noqa: PLC0415
    from .fastws import RtforgeWebSocketProtocol  # noqa: PLC0415
    from .logs import configure_logging  # noqa: PLC0415
    from .ws_routes import WebSocketFrontApp  # noqa: PLC0415

    telemetry = _telemetry()
    configure_logging(settings.log_level, settings.log_format, node_id=settings.node_id)
    from .auth import RedactTokenFilter  # noqa: PLC0415

    # uvicorn logs every WebSocket path with its query string: hide ?token=
    logging.getLogger("uvicorn.error").addFilter(RedactTokenFilter())
    app = WebSocketFrontApp(create_app(settings, telemetry=telemetry))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=RtforgeWebSocketProtocol,  # uvicorn's sans-I/O protocol + direct writes
        ws_max_size=settings.max_message_size,
        ws_ping_interval=None,  # rtforge runs its own heartbeat
        ws_per_message_deflate=False,  # compressing per recipient would undo encode-once
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout),
    )
    manager = app.node.manager
    server = DrainingServer(config, manager.start_drain, settings.drain_delay)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        raise SystemExit(EXIT_FAILURE)


def _endpoints(settings: Settings) -> dict[str, str]:
    base = f"{settings.host}:{settings.port}"
    return {
        "websocket": f"ws://{base}/ws",
        "websocket_channel": f"ws://{base}/ws/{{channel}}",
        "api": f"http://{base}/api",
        "health": f"http://{base}/healthz",
        "ready": f"http://{base}/readyz",
        "metrics": f"http://{base}/metrics",
    }


def _info(settings: Settings, *, as_json: bool) -> None:
    info: dict[str, Any] = {
        "version": VERSION,
        "endpoints": _endpoints(settings),
        "settings": settings.effective(),
        "telemetry": _telemetry().effective(),
        "warnings": _warnings(settings),
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    print(f"rtforge {VERSION}")
    print("\nEndpoints:")
    for name, url in info["endpoints"].items():
        print(f"  {name:<18} {url}")
    print("\nEffective settings:")
    for name, value in info["settings"].items():
        print(f"  {name:<18} {value}")
    print("\nTelemetry (OTEL_* variables):")
    for name, value in info["telemetry"].items():
        print(f"  {name:<18} {value}")
    for warning in info["warnings"]:
        print(f"\nWARNING: {warning}")


def _warnings(settings: Settings) -> list[str]:
    from .security import is_loopback  # noqa: PLC0415 - keep --help fast

    warnings = []
    loopback = is_loopback(settings.host)
    if not (settings.jwt_secret or settings.jwt_public_key):
        warnings.append(
            "AUTHENTICATION IS OFF: no --jwt-secret or --jwt-public-key is set, so this node "
            "runs OPEN: any client can connect, subscribe to any non-private channel "
            "(notifications:user-123 included), publish and ask for presence"
            + ("" if loopback else f", and it listens beyond loopback on {settings.host}")
        )
    elif settings.allow_anonymous:
        warnings.append(
            "--allow-anonymous: clients without a token are admitted (public channels only)"
        )
    if not settings.allowed_origins:
        warnings.append(
            "every Origin is accepted: any web page a user opens can connect to this node "
            "in their name (set --allowed-origins to the origins of your pages)"
        )
    if not settings.api_key:
        if loopback:
            warnings.append(
                "the HTTP API has no --api-key: any local process may publish and read "
                "connection metadata (it would be refused with 403 on a non-loopback bind)"
            )
        else:
            warnings.append(
                f"the HTTP API is DISABLED (403 api_key_required): the node listens on "
                f"{settings.host} and no --api-key is set"
            )
    if settings.rate_limit <= 0:
        warnings.append("--rate-limit 0: clients may send frames as fast as they like")
    return warnings


def _stats(settings: Settings, url: str | None, *, as_json: bool, timeout: float) -> None:
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    if not base.startswith(("http://", "https://")):
        _fail(f"--url must start with http:// or https:// (got {base!r})")
    try:
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        response = httpx.get(f"{base}/api/stats", timeout=timeout, headers=headers)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {base}: {exc.__class__.__name__}: {exc}")
    if response.status_code != 200:
        _fail(f"{base}/api/stats answered {response.status_code}")
    try:
        stats = response.json()
    except ValueError:
        _fail(f"{base}/api/stats did not answer JSON")
    if as_json:
        print(json.dumps(stats, indent=2))
        return
    local = stats.get("local", {})
    print(f"rtforge node {stats.get('node_id')} ({stats.get('backend')}) at {base}")
    print(f"  cluster nodes        {len(stats.get('nodes', []))}")
    here = local.get("connections")
    print(f"  connections          {stats.get('connections')} (this node: {here})")
    print(f"  channels             {stats.get('channels')}")
    print(f"  subscriptions        {stats.get('subscriptions')}")
    print(f"  queued frames        {local.get('queued_frames')}")
    print(f"  ready                {stats.get('ready')}")
    print(f"  uptime               {stats.get('uptime_seconds')} s")


if __name__ == "__main__":
    main()
