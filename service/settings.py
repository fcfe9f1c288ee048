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

from . import security_options as sec
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


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError("must be a number >= 0")
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


_EVENTS_SUBJECT = re.compile(r"^[!-~]{1,255}$")


def _events_subject(raw: str) -> str:
    value = raw.strip()
    if value and not _EVENTS_SUBJECT.match(value):
        raise ValueError("must be 1-255 printable ASCII characters without spaces (or empty: off)")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("must be on or off (also: true/false, yes/no, 1/0)")


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
    Option("drain_timeout", _positive_float, 10.0,
           "seconds a draining node may take to flush and close its sockets"),
    Option("drain_delay", _non_negative_float, 0.0,
           "seconds a node stays unready after SIGTERM before closing sockets"),
    Option("log_level", _choice(*LOG_LEVELS), "info", "debug, info, warning or error"),
    Option("log_format", _choice(*LOG_FORMATS), "text", "text or json"),
    Option("events_subject", _events_subject, "",
           "NATS subject or Redis channel on the backend's broker whose JSON domain events "
           "become WebSocket event frames (empty: off)"),
    Option("demo", _bool, True, "serve the demo web app at / and feed its dashboard"),
    # -- security (docs/security.md) --
    Option("jwt_secret", sec.jwt_secret, "",
           "HS256 secret (32+ bytes) that WebSocket tokens are signed with; set a key to "
           "require a JWT on every connection", secret=True),
    Option("jwt_public_key", sec.jwt_public_key, "",
           "PEM public key or certificate (file path or inline) for RS256/ES256/EdDSA tokens"),
    Option("jwt_algorithms", sec.jwt_algorithms, "",
           "accepted JWT algorithms, comma-separated (default: what the keys imply)"),
    Option("jwt_audience", sec.non_empty_text, "", "required JWT aud (empty: aud not checked)"),
    Option("jwt_issuer", sec.non_empty_text, "", "required JWT iss (empty: iss not checked)"),
    Option("jwt_leeway", sec.non_negative_float, 5.0,
           "seconds of clock skew allowed for exp, nbf and iat"),
    Option("jwt_require_exp", _bool, True, "refuse tokens without an exp claim"),
    Option("allow_anonymous", _bool, False,
           "with a JWT key set, also admit connections without a token (public channels only)"),
    Option("channel_policy", sec.channel_policy, "",
           "channel authorization policy: inline JSON or a .json/.toml file "
           "(default: built in, see docs/security.md)"),
    Option("api_key", sec.non_empty_text, "",
           "key the HTTP API requires as Authorization: Bearer (unset: API only on loopback)",
           secret=True),
    Option("allowed_origins", sec.origins, "",
           "comma-separated Origins allowed to open WebSockets (unset: every origin)"),
    Option("rate_limit", sec.non_negative_float, 100.0,
           "client frames per second per connection, token bucket (0: no limit)"),
    Option("rate_burst", _positive_int, 1000,
           "frames a connection may send at once; this many refusals in a row close it (1008)"),
    Option("max_connections", sec.non_negative_int, 0,
           "connections this node accepts (0: no limit); more get HTTP 503"),
    Option("max_connections_per_user", sec.non_negative_int, 0,
           "connections per token subject, cluster-wide (0: no limit); more get HTTP 429"),
    Option("max_channel_name_length", sec.channel_name_length, 255,
           "longest channel name a client may use (1-255)"),
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
    drain_timeout: float = 10.0
    drain_delay: float = 0.0
    log_level: str = "info"
    log_format: str = "text"
    events_subject: str = ""
    demo: bool = True
    jwt_secret: str = ""
    jwt_public_key: str = ""
    jwt_algorithms: str = ""
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway: float = 5.0
    jwt_require_exp: bool = True
    allow_anonymous: bool = False
    channel_policy: str = ""
    api_key: str = ""
    allowed_origins: str = ""
    rate_limit: float = 100.0
    rate_burst: int = 1000
    max_connections: int = 0
    max_connections_per_user: int = 0
    max_channel_name_length: int = 255

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
        if self.events_subject and self.backend == "memory":
            raise SettingsError(
                "--events-subject needs --backend nats or redis: the bridge listens on "
                "the cluster's broker"
            )
        problem = sec.jwt_problem(self)
        if problem:
            raise SettingsError(problem)

    def effective(self) -> dict[str, Any]:
        """All settings with secrets in URLs masked, for display."""
        shown: dict[str, Any] = {}
        secret = {o.name for o in OPTIONS if o.secret}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in secret and "://" not in str(value):
                shown[f.name] = "***" if value else ""  # a bare secret (key, token)
            else:
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
