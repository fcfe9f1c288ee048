"""Backplanes: the state and routing shared between rtforge nodes.

This package never imports :mod:`service`. Pick a backplane by name with
:func:`create_backplane`; the NATS and Redis modules are imported lazily so
that a memory-only node needs neither client library at import time.
"""

from __future__ import annotations

from .base import (
    Backplane,
    BackplaneError,
    BackplaneListener,
    BackplaneUnavailable,
    ChannelInfo,
    ChannelRecord,
    Envelope,
    Route,
)
from .cluster import ClusterBackplane
from .envelope import EnvelopeError, decode_envelope, encode_envelope
from .memory import MemoryBackplane
from .transport import Transport

__all__ = [
    "BACKEND_NAMES",
    "Backplane",
    "BackplaneError",
    "BackplaneListener",
    "BackplaneUnavailable",
    "ChannelInfo",
    "ChannelRecord",
    "ClusterBackplane",
    "Envelope",
    "EnvelopeError",
    "MemoryBackplane",
    "Route",
    "Transport",
    "create_backplane",
    "decode_envelope",
    "encode_envelope",
]

BACKEND_NAMES = ("memory", "nats", "redis")


def create_backplane(
    name: str,
    *,
    node_id: str,
    lease_ttl: float = 15.0,
    nats_url: str = "nats://127.0.0.1:4222",
    redis_url: str = "redis://127.0.0.1:6379/0",
    cluster_name: str = "rtforge",
) -> Backplane:
    """The backplane called ``name`` (one of :data:`BACKEND_NAMES`)."""
    if name == "memory":
        return MemoryBackplane(node_id=node_id, lease_ttl=lease_ttl)
    if name == "nats":
        from .nats import NatsTransport  # noqa: PLC0415 - optional import

        transport: Transport = NatsTransport(nats_url, cluster_name, node_id)
        return ClusterBackplane(transport, node_id=node_id, lease_ttl=lease_ttl)
    if name == "redis":
        from .redis import RedisTransport  # noqa: PLC0415 - optional import

        transport = RedisTransport(redis_url, cluster_name, node_id)
        return ClusterBackplane(transport, node_id=node_id, lease_ttl=lease_ttl)
    raise ValueError(f"unknown backend {name!r} (choose from {', '.join(BACKEND_NAMES)})")
