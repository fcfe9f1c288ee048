"""Prometheus metrics of one node, in a registry of its own.

Counters are incremented once per event or once per fan-out (by the number
of recipients), never once per delivered frame in the fan-out loop. No label
carries unbounded values: no channel names, no connection ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
