"""Node settings: one typed, validated object built once at start.

Each setting is declared once in :data:`OPTIONS`; the command line flags and
the ``RTFORGE_*`` environment variables are generated from that table.
Precedence: flag, then environment variable, then default. Nothing else in
rtforge reads the environment.
"""

from __future__ import annotations

import math
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import SettingsError

__all__ = ["OPTIONS", "Option", "Settings", "mask_url"]

BACKENDS = ("memory", "nats", "redis")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("must be a positive number")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw.strip())
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"must be a URL like {schemes[0]}://host:port")
        parts.port  # noqa: B018 - raises ValueError on a bad port
        return raw.strip()

    return parse


_NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _node_id(raw: str) -> str:
    if not _NODE_ID.match(raw):
        raise ValueError("must be 1-64 characters of letters, digits, '-' or '_'")
    return raw


def _host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("must be a host name or address")
    return value


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its field name, flag, parser, default and help."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "RTFORGE_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", _host, "127.0.0.1", "address to listen on"),
    Option("port", _port, 3000, "port to listen on"),
    Option("backend", _choice(*BACKENDS), "memory", "backplane: memory, nats or redis"),
    Option("nats_url", _url("nats", "tls", "ws", "wss"), "nats://127.0.0.1:4222",
           "NATS server URL (backend nats)", secret=True),
    Option("redis_url", _url("redis", "rediss", "unix"), "redis://127.0.0.1:6379/0",
           "Redis URL (backend redis)", secret=True),
    Option("node_id", _node_id, None, "this node's name in the cluster (default: generated)"),
    Option("cluster_name", _node_id, "rtforge",
           "name space on the broker; nodes with the same name form one cluster"),
    Option("heartbeat_interval", _positive_float, 30.0, "seconds between server ping frames"),
    Option("heartbeat_timeout", _positive_float, 60.0,
           "seconds of client silence after which it is closed"),
    Option("max_message_size", _positive_int, 65536, "largest client frame accepted, in bytes"),
    Option("lease_ttl", _positive_float, 15.0,
           "seconds a dead node's connections may still be counted"),
    Option("send_queue_size", _positive_int, 1024,
           "frames queued for one client before it is closed as a slow consumer"),
    Option("max_subscriptions", _positive_int, 1000, "channels one connection may subscribe to"),
    Option("log_level", _choice(*LOG_LEVELS), "info", "debug, info, warning or error"),
    Option("log_format", _choice(*LOG_FORMATS), "text", "text or json"),
)


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    backend: str = "memory"
    nats_url: str = "nats://127.0.0.1:4222"
    redis_url: str = "redis://127.0.0.1:6379/0"
    node_id: str = ""
    cluster_name: str = "rtforge"
    heartbeat_interval: float = 30.0
    heartbeat_timeout: float = 60.0
    max_message_size: int = 65536
    lease_ttl: float = 15.0
    send_queue_size: int = 1024
    max_subscriptions: int = 1000
    log_level: str = "info"
    log_format: str = "text"

    def __post_init__(self) -> None:
        if not self.node_id:
            object.__setattr__(self, "node_id", _generated_node_id())

    @classmethod
    def from_sources(
        cls,
        flags: Mapping[str, str | None] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from raw flag values (by field name; ``None`` means
        not given) and an environment mapping (default: ``os.environ``).
        Raises :class:`SettingsError` naming the offending flag or variable."""
        flags = flags or {}
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for option in OPTIONS:
            raw, source = flags.get(option.name), option.flag
            if raw is None:
                raw, source = env.get(option.env), option.env
            if raw is None:
                if option.default is not None:
                    values[option.name] = option.default
                continue
            try:
                values[option.name] = option.parse(raw)
            except ValueError as exc:
                shown = "***" if option.secret else raw
                reason = str(exc) if "must" in str(exc) else "is not valid"
                raise SettingsError(f"{source}={shown!r}: {reason}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise SettingsError(
                f"--heartbeat-timeout ({self.heartbeat_timeout:g}) must be greater than "
                f"--heartbeat-interval ({self.heartbeat_interval:g})"
            )

    def effective(self) -> dict[str, Any]:
        """All settings with secrets in URLs masked, for display."""
        shown: dict[str, Any] = {}
        secret = {o.name for o in OPTIONS if o.secret}
        for f in fields(self):
            value = getattr(self, f.name)
            shown[f.name] = mask_url(value) if f.name in secret else value
        return shown


def mask_url(url: str) -> str:
    """``url`` with any password (or token in the user part) replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None and not (parts.username and parts.scheme.startswith("nats")):
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if parts.password is not None else f"***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _generated_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "node"
    return f"{host}-{uuid.uuid4().hex[:8]}"
