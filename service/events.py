"""Domain events as WebSocket ``event`` frames, in process and from other services.

A :class:`DomainEvent` is a name and a JSON payload (``"order.shipped"``,
``{"order_id": 7}``). It reaches WebSocket clients as the frame::

    {"type": "event", "payload": {"event": "order.shipped", "data": {"order_id": 7}},
     "timestamp": 1764000000, "channel": "orders"}

(``channel`` only when the event went to a channel's subscribers).

Two ways in:

* **In process** — :func:`publish_domain_event` sends through the node's
  manager, i.e. through the backplane: every intended connection in the
  cluster receives it exactly once, wherever it is connected.
* **From any other service** — with ``--events-subject`` set, every node
  subscribes to that NATS subject (or Redis channel) on the broker of its
  backend and turns each JSON message ``{"name": ..., "payload": ...,
  "channel": ...?}`` published there into an ``event`` frame
  (:class:`EventBridge`). A message that is not such an object is dropped
  with one log line.

**Exactly once across the cluster.** Every node subscribes to the events
subject with a plain subscription (no queue group), so every node receives
every event, and each node hands it only to its *own* sockets (the local
delivery path the backplane uses for envelopes from other nodes). A
connection lives on exactly one node, so it gets each event exactly once,
with no second broker hop and no node elected to forward; the same works on
Redis, which has no queue groups. (A queue group would let one node receive
the event, which would then have to re-publish it to the whole cluster:
one more hop, and NATS only.) Like all pub/sub, nothing is stored: a node
cut off from the broker misses the events published meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge

from backends import BackplaneError, Envelope, Route, Transport

from .channels import validate_channel_name
from .errors import MessageInvalid, RtforgeError
from .messages import WebSocketMessage, json_decode, json_encode
from .node import node_of

if TYPE_CHECKING:
    from litestar import Litestar

    from .manager import WebSocketManager
    from .settings import Settings

TransportFactory = Callable[[], Transport]

__all__ = [
    "MAX_EVENT_NAME_LENGTH",
    "DomainEvent",
    "EventBridge",
    "events_lifespan",
    "publish_domain_event",
]

log = logging.getLogger("rtforge.events")

MAX_EVENT_NAME_LENGTH = 255
_START_TIMEOUT = 5.0
_RETRY_MIN, _RETRY_MAX = 0.5, 5.0


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """Something that happened in the application: a name and a JSON payload."""

    name: str
    payload: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise MessageInvalid("event name must be a non-empty string")
        if len(self.name) > MAX_EVENT_NAME_LENGTH:
            raise MessageInvalid(f"event name is longer than {MAX_EVENT_NAME_LENGTH} characters")

    def to_message(self) -> WebSocketMessage:
        """The ``event`` frame clients receive (without channel)."""
        return WebSocketMessage.event(self.name, self.payload)

    def to_wire(self, channel: str | None = None) -> bytes:
        """The JSON a service publishes on the events subject."""
        body: dict[str, Any] = {"name": self.name, "payload": self.payload}
        if channel is not None:
            body["channel"] = validate_channel_name(channel)
        try:
            return json_encode(body)
        except (TypeError, msgspec.EncodeError) as exc:
            raise MessageInvalid(f"payload is not JSON-serialisable: {exc}") from None

    @classmethod
    def from_wire(cls, data: bytes | str) -> tuple[DomainEvent, str | None]:
        """Parse a message from the events subject: the event and its channel
        (``None``: everyone). Raises :class:`MessageInvalid` with the reason."""
        try:
            body = json_decode(data)
        except msgspec.DecodeError as exc:
            raise MessageInvalid(f"not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise MessageInvalid("not a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise MessageInvalid('"name" must be a non-empty string')
        channel = body.get("channel")
        if channel is not None:
            try:
                validate_channel_name(channel)
            except RtforgeError as exc:
                raise MessageInvalid(f'"channel": {exc}') from None
        return cls(name, body.get("payload")), channel


# -- metrics ----------------------------------------------------------------


@dataclass(slots=True)
class _EventMetrics:
    events: Counter
    bridge_up: Gauge


_metrics_of: weakref.WeakKeyDictionary[CollectorRegistry, _EventMetrics] = (
    weakref.WeakKeyDictionary()
)


def _metrics(manager: WebSocketManager) -> _EventMetrics:
    registry = manager.metrics.registry
    found = _metrics_of.get(registry)
    if found is None:
        found = _EventMetrics(
            Counter(
                "rtforge_domain_events", "Domain events handled, by source and outcome",
                ["source", "outcome"], registry=registry,
            ),
            Gauge(
                "rtforge_events_bridge_up",
                "1 while the node is subscribed to the --events-subject", registry=registry,
            ),
        )
        _metrics_of[registry] = found
    return found


# -- in process -------------------------------------------------------------


async def publish_domain_event(
    manager: WebSocketManager, event: DomainEvent, channel: str | None = None
) -> int:
    """Send ``event`` as an ``event`` frame to every connection in the
    cluster, or to the subscribers of ``channel``; returns the number of
    recipients. Raises :class:`~backends.BackplaneUnavailable` while the
    broker is unreachable (nothing was sent)."""
    message = event.to_message()
    if channel is None:
        recipients = await manager.broadcast(message)
    else:
        recipients = await manager.send_to_channel(channel, message)
    _metrics(manager).events.labels("in_process", "published").inc()
    return recipients


# -- from other services ----------------------------------------------------


class EventBridge:
    """Subscribes to the events subject on the backend's broker and delivers
    each event to this node's own matching sockets (see the module docstring
    for why that is exactly once cluster-wide)."""

    def __init__(
        self, manager: WebSocketManager, transports: TransportFactory, subject: str
    ) -> None:
        self.manager = manager
        self.subject = subject
        self.subscribed = False
        self._transports = transports
        self.transport = self._new_transport()
        self._retry: asyncio.Task[None] | None = None
        self._metrics = _metrics(manager)

    @classmethod
    def from_settings(cls, manager: WebSocketManager, settings: Settings) -> EventBridge:
        """A bridge on the broker of ``settings.backend`` (nats or redis),
        with a broker connection of its own."""
        node = f"{settings.node_id}-events"
        factory: TransportFactory
        if settings.backend == "nats":
            from backends.nats import NatsTransport  # noqa: PLC0415 - optional import

            def factory() -> Transport:
                return NatsTransport(settings.nats_url, settings.cluster_name, node)

        elif settings.backend == "redis":
            from backends.redis import RedisTransport  # noqa: PLC0415 - optional import

            def factory() -> Transport:
                return RedisTransport(settings.redis_url, settings.cluster_name, node)

        else:
            raise RtforgeError("--events-subject needs --backend nats or redis")
        return cls(manager, factory, settings.events_subject)

    def _new_transport(self) -> Transport:
        transport = self._transports()
        transport.on_message = self._on_message
        transport.on_down = self._on_down
        transport.on_up = self._on_up
        return transport

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Subscribe now if the broker answers (so that a node that reports
        healthy already receives events); otherwise keep trying in the
        background. Never raises for an unreachable broker."""
        try:
            await asyncio.wait_for(self._connect(), _START_TIMEOUT)
        except (BackplaneError, TimeoutError) as exc:
            log.error(
                "events bridge: cannot subscribe to %s %r yet (%s); retrying",
                self.transport.name, self.subject, exc,
            )
            await self._close_transport()
            self.transport = self._new_transport()
            self._retry = asyncio.get_running_loop().create_task(
                self._retry_loop(), name="rtforge-events-bridge"
            )

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
            self._retry = None
        await self._close_transport()
        self._set_up(False)

    async def _connect(self) -> None:
        await self.transport.connect()
        await self.transport.subscribe(self.subject)
        self._set_up(True)
        log.info("events bridge: subscribed to %s %r", self.transport.name, self.subject)

    async def _retry_loop(self) -> None:
        delay = _RETRY_MIN
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.wait_for(self._connect(), _START_TIMEOUT)
            except (BackplaneError, TimeoutError) as exc:
                log.debug("events bridge: still cannot subscribe: %s", exc)
                await self._close_transport()
                self.transport = self._new_transport()
                delay = min(delay * 2, _RETRY_MAX)
                continue
            return

    async def _close_transport(self) -> None:
        with contextlib.suppress(Exception):
            await self.transport.close()

    def _set_up(self, up: bool) -> None:
        self.subscribed = up
        self._metrics.bridge_up.set(1 if up else 0)

    def _on_down(self) -> None:
        self._set_up(False)

    def _on_up(self) -> None:
        self._set_up(True)

    # -- messages ----------------------------------------------------------
    def _on_message(self, subject: str, data: bytes) -> None:
        self.handle(data, subject)

    def handle(self, data: bytes | str, subject: str | None = None) -> bool:
        """Deliver one message from the events subject to this node's
        sockets; returns False (after one log line) when it was dropped."""
        try:
            event, channel = DomainEvent.from_wire(data)
            message = event.to_message()
            route = Route.BROADCAST if channel is None else Route.CHANNEL
            frame = message.with_channel(channel).encode()
        except RtforgeError as exc:
            self._metrics.events.labels("external", "dropped").inc()
            log.warning(
                "events bridge: dropped a message on %r (%d bytes): %s",
                subject or self.subject, len(data), exc,
            )
            return False
        self.manager.deliver(
            Envelope(route, frame, channel=channel, origin=self.manager.node_id)
        )
        self._metrics.events.labels("external", "delivered").inc()
        return True


def events_lifespan(app: Litestar) -> contextlib.AbstractAsyncContextManager[None]:
    """Litestar lifespan hook: run the :class:`EventBridge` of the app's node
    while the app runs, when ``--events-subject`` is set."""
    return _events_lifespan(app)


@contextlib.asynccontextmanager
async def _events_lifespan(app: Litestar) -> AsyncIterator[None]:
    node = node_of(app.state)
    if not node.settings.events_subject:
        yield
        return
    bridge = EventBridge.from_settings(node.manager, node.settings)
    await bridge.start()
    try:
        yield
    finally:
        await bridge.stop()
