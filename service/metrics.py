"""Prometheus metrics of one node, in a registry of its own.

Counters are incremented once per event or once per fan-out (by the number
of recipients), never once per delivered frame in the fan-out loop. No label
carries unbounded values: no channel names, no connection ids.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .auth import REASONS as AUTH_REASONS
from .limits import LIMITS
from .policy import ACTIONS
from .telemetry import package_version

__all__ = ["CONTENT_TYPE_LATEST", "FRAME_KINDS_SENT", "Metrics"]

#: values of the ``kind`` label of ``rtforge_frames_sent_total``
FRAME_KINDS_SENT = ("delivery", "reply", "pong", "ping", "system")
#: values of ``kind`` of ``rtforge_frames_received_total``
FRAME_KINDS_RECEIVED = ("command", "ping", "pong", "text", "json", "event", "system", "binary")
#: values of ``route`` of ``rtforge_publishes_total`` and ``rtforge_envelopes_delivered_total``
ROUTES = ("channel", "broadcast", "direct")
#: values of ``reason`` of ``rtforge_connections_closed_total`` (others may appear)
CLOSE_REASONS = (
    "client", "server", "slow_consumer", "heartbeat_timeout", "message_too_big", "error",
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.connections = Gauge(
            "rtforge_connections", "WebSocket connections open on this node", registry=r
        )
        self.subscriptions = Gauge(
            "rtforge_subscriptions", "Channel subscriptions of this node's connections",
            registry=r,
        )
        self.connections_opened = Counter(
            "rtforge_connections_opened", "WebSocket connections accepted", registry=r
        )
        self.connections_closed = Counter(
            "rtforge_connections_closed", "WebSocket connections closed, by reason",
            ["reason"], registry=r,
        )
        self.frames_in = Counter(
            "rtforge_frames_received", "Frames received from clients, by kind",
            ["kind"], registry=r,
        )
        self.commands = Counter(
            "rtforge_commands", "Client commands handled, by command and outcome",
            ["command", "outcome"], registry=r,
        )
        self.publishes = Counter(
            "rtforge_publishes", "Messages published from this node, by route",
            ["route"], registry=r,
        )
        self.deliveries = Counter(
            "rtforge_deliveries", "Frames queued for local sockets by fan-out", registry=r
        )
        self.slow_consumer_drops = Counter(
            "rtforge_slow_consumer_disconnects",
            "Connections closed because their send queue overflowed", registry=r,
        )
        self.heartbeat_timeouts = Counter(
            "rtforge_heartbeat_timeouts", "Connections closed for client silence", registry=r
        )
        self.oversized_frames = Counter(
            "rtforge_oversized_frames", "Client frames refused for exceeding the size limit",
            registry=r,
        )
        self.backplane_publish_seconds = Histogram(
            "rtforge_backplane_publish_seconds", "Time to hand one envelope to the backplane",
            registry=r,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 1.0),
        )
        self.backplane_errors = Counter(
            "rtforge_backplane_errors", "Backplane operations that failed", registry=r
        )
        self.backplane_up = Gauge(
            "rtforge_backplane_up", "1 while the backplane broker is reachable", registry=r
        )
        self.envelopes_received = Counter(
            "rtforge_envelopes_delivered", "Envelopes handed to this node for local delivery",
            ["route"], registry=r,
        )
        self.channels = Gauge(
            "rtforge_channels", "Channels with at least one subscriber on this node", registry=r
        )
        self.frames_sent = Counter(
            "rtforge_frames_sent",
            "Frames queued for clients, by kind (delivery, reply, pong, ping, system)",
            ["kind"], registry=r,
        )
        # Known label values start at 0, so that rates and dashboards see them at once.
        for kind in FRAME_KINDS_SENT:
            self.frames_sent.labels(kind)
        for kind in FRAME_KINDS_RECEIVED:
            self.frames_in.labels(kind)
        for route in ROUTES:
            self.publishes.labels(route)
            self.envelopes_received.labels(route)
        for reason in CLOSE_REASONS:
            self.connections_closed.labels(reason)
        self.frames_dropped = Counter(
            "rtforge_frames_dropped",
            "Fan-out frames not queued: the connection was closing or its send queue overflowed",
            registry=r,
        )
        self.node_info = Info(
            "rtforge_node", "This node: version, backend, node id, tracing on or off", registry=r
        )
        ProcessCollector(registry=r)
        # -- security (service/security.py); every label takes a fixed set of values
        self.limit_hits = Counter(
            "rtforge_limit_hits", "Frames, commands or handshakes refused by a limit, by limit "
            "(frame_size, subscriptions, rate, connections, connections_per_user, channel_name)",
            ["limit"], registry=r,
        )
        self.auth_failures = Counter(
            "rtforge_auth_failures", "WebSocket handshakes refused for their token, and "
            "connections closed when it expired, by reason", ["reason"], registry=r,
        )
        self.origin_refusals = Counter(
            "rtforge_origin_refusals", "WebSocket handshakes refused for their Origin", registry=r
        )
        self.policy_denials = Counter(
            "rtforge_policy_denials", "Client commands refused by the channel policy, by action",
            ["action"], registry=r,
        )
        self.api_auth_failures = Counter(
            "rtforge_api_auth_failures", "HTTP API requests refused for a missing or wrong key",
            registry=r,
        )
        for counter, values in ((self.limit_hits, LIMITS), (self.auth_failures, AUTH_REASONS),
                                (self.policy_denials, ACTIONS)):
            for value in values:
                counter.labels(value)

    def set_node_info(self, *, node_id: str, backend: str, tracing: bool) -> None:
        """Fill ``rtforge_node_info`` (node ids are bounded: one per process)."""
        self.node_info.info(
            {"node_id": node_id, "backend": backend, "version": package_version(),
             "tracing": "on" if tracing else "off"}
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
