"""The node's WebSocket manager: local sockets, fan-out and the backplane.

:class:`WebSocketManager` is the seed's ``WebSocketManager`` made async. It
registers and cleans up connections, publishes messages through the
backplane (encoded once per publish) and, as the backplane's listener,
delivers envelopes to local sockets: one decode of the frame, then one queue
append per recipient. It also runs the heartbeat: one task for all sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backends import Backplane, BackplaneUnavailable, Envelope, MemoryBackplane, Route

from .channels import ChannelManager, LocalIndex, validate_channel_name
from .close_codes import CloseCode
from .connection import Connection, ConnectionId, ConnectionMetadata, Corker, DirectSocket, SendFn
from .errors import ConnectionNotFound, RtforgeError
from .frames import OutFrame
from .messages import WebSocketMessage
from .metrics import Metrics
from .settings import Settings

if TYPE_CHECKING:
    from .tracing import Tracing

__all__ = [
    "BroadcastOptions",
    "MessageContext",
    "MessageHandler",
    "WebSocketManager",
    "default_message_handler",
]

log = logging.getLogger("rtforge.manager")


@dataclass(slots=True)
class BroadcastOptions:
    """Narrow a broadcast: ``only_to`` these ids, ``exclude`` those, or
    send ``to_channel`` instead of to everyone."""

    only_to: list[str] | None = None
    exclude: list[str] | None = None
    channel: str | None = None

    @classmethod
    def new(cls) -> BroadcastOptions:
        return cls()

    def with_only_to(self, ids: Iterable[str]) -> BroadcastOptions:
        self.only_to = list(ids)
        return self

    def with_exclude(self, ids: Iterable[str]) -> BroadcastOptions:
        self.exclude = list(ids)
        return self

    def to_channel(self, channel: str) -> BroadcastOptions:
        self.channel = channel
        return self


@dataclass(slots=True)
class MessageContext:
    """What a message handler gets besides the message."""

    manager: WebSocketManager
    connection_id: ConnectionId
    metadata: ConnectionMetadata


MessageHandler = Callable[[WebSocketMessage, MessageContext], Awaitable[WebSocketMessage | None]]


async def default_message_handler(
    message: WebSocketMessage, context: MessageContext
) -> WebSocketMessage | None:
    """The original's behaviour: acknowledge every client message."""
    return WebSocketMessage.system("Message received")


class WebSocketManager:
    """Registry of this node's connections and entry point for sending."""

    def __init__(
        self,
        settings: Settings | None = None,
        backplane: Backplane | None = None,
        metrics: Metrics | None = None,
        message_handler: MessageHandler | None = None,
        *,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.node_id = self.settings.node_id
        self.backplane = (
            backplane
            if backplane is not None
            else MemoryBackplane(node_id=self.node_id, lease_ttl=self.settings.lease_ttl)
        )
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.connections.set_function(lambda: len(self.local.connections))
        self.metrics.subscriptions.set_function(
            lambda: sum(len(members) for members in self.local.channels.values())
        )
        self.metrics.channels.set_function(lambda: len(self.local.channels))
        sent = self.metrics.frames_sent
        self._sent_delivery = sent.labels("delivery")
        self._sent_ping = sent.labels("ping")
        self._sent_system = sent.labels("system")
        #: spans of this node; None while tracing is off (the hot path checks once)
        self.tracing = tracing
        self.metrics.set_node_info(
            node_id=self.node_id, backend=self.backplane.name, tracing=tracing is not None
        )
        self.message_handler: MessageHandler = message_handler or default_message_handler
        self.local = LocalIndex()
        self._corker = Corker()
        self._channels = ChannelManager(self.backplane, self.local)
        self._heartbeat: asyncio.Task[None] | None = None
        self._started = False
        self.draining = False
        self.started_at = time.time()

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Connect the backplane and start the heartbeat."""
        if self._started:
            return
        await self.backplane.start(self)
        self.metrics.backplane_up.set(1 if self.backplane.ready else 0)
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(), name="rtforge-heartbeat"
        )
        self._started = True
        log.info(
            "node started id=%s backend=%s tracing=%s", self.node_id, self.backplane.name,
            "on" if self.tracing is not None else "off",
            extra={"event": "node_started", "backend": self.backplane.name},
        )

    async def stop(self, code: CloseCode = CloseCode.GOING_AWAY, timeout: float = 5.0) -> None:
        """Close every socket with ``code`` (flushing queued frames), then
        leave the cluster."""
        self.draining = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        conns = list(self.local.connections.values())
        for conn in conns:
            conn.close(code)
        if conns:
            await asyncio.wait(
                [asyncio.ensure_future(c.wait_closed(timeout)) for c in conns], timeout=timeout
            )
        for conn in conns:
            await self.unregister(conn)
        if self._started:
            await self.backplane.stop()
            self._started = False

    def start_drain(self) -> None:
        """Turn unready and refuse new sockets; existing ones are closed by
        the server's shutdown (see :mod:`service.drain`)."""
        self.draining = True

    @property
    def ready(self) -> bool:
        return self._started and self.backplane.ready and not self.draining

    def channel_manager(self) -> ChannelManager:
        return self._channels

    # -- connections -------------------------------------------------------
    async def register(
        self,
        send: SendFn,
        metadata: ConnectionMetadata,
        welcome: str = "WebSocket connected",
        direct: DirectSocket | None = None,
    ) -> Connection:
        """Register a freshly accepted socket and send the welcome frame
        (the first frame every client sees). ``direct`` is the socket's
        direct-write extension, when the server offers one."""
        tracing = self.tracing
        if tracing is None:
            return await self._register(send, metadata, welcome, direct)
        with tracing.connection_open(metadata) as span:
            conn = await self._register(send, metadata, welcome, direct)
            tracing.connection_opened(span, conn)
            return conn

    async def _register(
        self, send: SendFn, metadata: ConnectionMetadata, welcome: str, direct: DirectSocket | None
    ) -> Connection:
        conn = Connection(
            ConnectionId.new(), metadata, send, self.settings.send_queue_size,
            self._on_overflow, direct=direct, cork=self._corker,
        )
        self.local.connections[conn.id] = conn
        conn.push(
            WebSocketMessage.system(welcome)
            .with_metadata({"connection_id": conn.id, "node_id": self.node_id})
            .frame()
        )
        self._sent_system.inc()
        self.metrics.connections_opened.inc()
        await self.backplane.add_connection(conn.id, metadata.to_dict())
        log.info(
            "connection opened id=%s remote=%s", conn.id, metadata.remote_addr,
            extra={"event": "connection_opened", "connection_id": conn.id,
                   "remote_addr": metadata.remote_addr},
        )
        return conn

    async def unregister(self, conn: Connection, reason: str = "client") -> None:
        """Forget ``conn`` everywhere. Idempotent."""
        if self.local.connections.pop(conn.id, None) is None:
            return
        tracing = self.tracing
        if tracing is None:
            await self._forget(conn, reason)
            return
        with tracing.connection_close(conn, reason):
            await self._forget(conn, reason)

    async def _forget(self, conn: Connection, reason: str) -> None:
        if reason == "client":
            conn.abort()  # the socket is gone: nothing left to flush
        for channel in list(conn.channels):
            members = self.local.channels.get(channel)
            if members is not None:
                members.discard(conn)
                if not members:
                    del self.local.channels[channel]
        conn.channels.clear()
        self.metrics.connections_closed.labels(reason).inc()
        try:
            await self.backplane.remove_connection(conn.id)
        except Exception:
            log.exception("backplane failed to remove connection %s", conn.id)
        log.info(
            "connection closed id=%s reason=%s", conn.id, reason,
            extra={"event": "connection_closed", "connection_id": conn.id, "reason": reason,
                   "close_code": int(conn.close_code) if conn.close_code is not None else None},
        )

    def _on_overflow(self, conn: Connection) -> None:
        self.metrics.slow_consumer_drops.inc()
        log.warning(
            "slow consumer closed id=%s", conn.id,
            extra={"event": "slow_consumer", "connection_id": conn.id},
        )
        # Not now: fan-out may be iterating over the sets unregister edits.
        asyncio.get_running_loop().call_soon(self._schedule_unregister, conn, "slow_consumer")

    def _schedule_unregister(self, conn: Connection, reason: str) -> None:
        asyncio.get_running_loop().create_task(self.unregister(conn, reason))

    def get_connection(self, connection_id: str) -> Connection | None:
        """The local connection with this id, if this node holds it."""
        return self.local.connections.get(connection_id)

    async def connection_count(self) -> int:
        return await self.backplane.connection_count()

    def local_connection_count(self) -> int:
        return len(self.local.connections)

    async def get_connection_ids(self) -> list[ConnectionId]:
        return [ConnectionId(c) for c in await self.backplane.connection_ids()]

    async def get_connection_metadata(self, connection_id: str) -> ConnectionMetadata | None:
        conn = self.local.connections.get(connection_id)
        if conn is not None:
            return conn.metadata
        info = await self.backplane.connection_info(connection_id)
        if info is None:
            return None
        return ConnectionMetadata(
            connected_at=float(info.get("connected_at") or 0.0),
            remote_addr=info.get("remote_addr"),
            user_agent=info.get("user_agent"),
            custom=dict(info.get("custom") or {}),
        )

    async def connection_info(self, connection_id: str) -> dict[str, Any] | None:
        """Metadata plus the holding node and subscribed channels (for the API)."""
        info = await self.backplane.connection_info(connection_id)
        if info is None:
            return None
        info["id"] = connection_id
        info["channels"] = await self.backplane.channels_of(connection_id)
        return info

    async def close_connection(
        self, connection_id: str, code: CloseCode = CloseCode.NORMAL, reason: str | None = None
    ) -> bool:
        """Close a local connection (queued frames are sent first)."""
        conn = self.local.connections.get(connection_id)
        if conn is None:
            return False
        conn.close(code, reason)
        await self.unregister(conn, "server")
        return True

    async def close_all(self, code: CloseCode = CloseCode.NORMAL) -> int:
        conns = list(self.local.connections.values())
        for conn in conns:
            conn.close(code)
            await self.unregister(conn, "server")
        return len(conns)

    # -- sending -----------------------------------------------------------
    async def broadcast(
        self, message: WebSocketMessage, options: BroadcastOptions | None = None
    ) -> int:
        """Send to every connection in the cluster, narrowed by ``options``;
        returns the number of recipients."""
        only_to = exclude = None
        channel = None
        if options is not None:
            if options.only_to is not None:
                only_to = frozenset(options.only_to)
            if options.exclude:
                exclude = frozenset(options.exclude)
            channel = options.channel
        if channel is not None:
            validate_channel_name(channel)
            frame = message.with_channel(channel).encode()
            envelope = Envelope(
                Route.CHANNEL, frame, channel=channel, only_to=only_to, exclude=exclude,
                origin=self.node_id,
            )
        else:
            envelope = Envelope(
                Route.BROADCAST, message.encode(), only_to=only_to, exclude=exclude,
                origin=self.node_id,
            )
        return await self._publish(envelope)

    async def send_to_channel(self, channel: str, message: WebSocketMessage) -> int:
        """Send to every subscriber of ``channel``; returns their number."""
        return await self.broadcast(message, BroadcastOptions(channel=channel))

    async def send_to_connection(self, connection_id: str, message: WebSocketMessage) -> None:
        """Send to one connection wherever it is; raises
        :class:`ConnectionNotFound` when no live node holds it."""
        conn = self.local.connections.get(connection_id)
        if conn is not None:
            if not conn.push(message.frame()):
                raise ConnectionNotFound(f"connection {connection_id} is closing")
            self.metrics.deliveries.inc()
            self._sent_delivery.inc()
            return
        envelope = Envelope(
            Route.DIRECT, message.encode(), connection_id=connection_id, origin=self.node_id
        )
        if await self._publish(envelope) == 0:
            raise ConnectionNotFound(f"no connection {connection_id}")

    async def _publish(self, envelope: Envelope) -> int:
        tracing = self.tracing
        if tracing is not None:
            return await tracing.publish(envelope, self._publish_untraced)
        return await self._publish_untraced(envelope)

    async def _publish_untraced(self, envelope: Envelope) -> int:
        started = time.perf_counter()
        try:
            recipients = await self.backplane.publish(envelope)
        except BackplaneUnavailable:
            self.metrics.backplane_errors.inc()
            raise
        self.metrics.backplane_publish_seconds.observe(time.perf_counter() - started)
        self.metrics.publishes.labels(envelope.route.name.lower()).inc()
        return recipients

    def ping_all(self) -> int:
        """Queue a ``ping`` frame to every local connection."""
        frame = WebSocketMessage.ping().frame()
        count = 0
        for conn in self.local.connections.values():
            if conn.push(frame):
                count += 1
        self._sent_ping.inc(count)
        return count

    # -- backplane listener ------------------------------------------------
    def deliver(self, envelope: Envelope) -> None:
        """Hand ``envelope`` to the local sockets it is meant for."""
        tracing = self.tracing
        if tracing is not None:
            tracing.deliver(envelope, self._fan_out)  # one span per envelope, not per socket
            return
        self._fan_out(envelope)

    def _fan_out(self, envelope: Envelope) -> tuple[int, int]:
        """Queue the frame for each local recipient; returns (frames queued,
        frames dropped because a connection was closing or overflowed)."""
        route = envelope.route
        targets: Collection[Connection] | None
        if route is Route.CHANNEL:
            targets = self.local.channels.get(envelope.channel)  # type: ignore[arg-type]
        elif route is Route.BROADCAST:
            targets = self.local.connections.values()
        else:
            conn = self.local.connections.get(envelope.connection_id)  # type: ignore[arg-type]
            targets = (conn,) if conn is not None else None
        self.metrics.envelopes_received.labels(route.name.lower()).inc()
        if not targets:
            return 0, 0
        frame = OutFrame(envelope.frame)
        only_to, exclude = envelope.only_to, envelope.exclude
        delivered = 0
        if only_to is None and not exclude:
            for conn in targets:
                delivered += conn.push(frame)
            matched = len(targets)
        else:
            matched = 0
            for conn in targets:
                if (only_to is None or conn.id in only_to) and not (exclude and conn.id in exclude):
                    matched += 1
                    delivered += conn.push(frame)
        self.metrics.deliveries.inc(delivered)
        self._sent_delivery.inc(delivered)
        if matched != delivered:
            self.metrics.frames_dropped.inc(matched - delivered)
        return delivered, matched - delivered

    def channel_deleted(self, channel: str) -> None:
        members = self.local.drop_channel(channel)
        if not members:
            return
        frame = (
            WebSocketMessage.system(f"Channel deleted: {channel}")
            .with_channel(channel)
            .with_metadata({"event": "channel_deleted"})
            .frame()
        )
        for conn in members:
            conn.push(frame)
        self._sent_system.inc(len(members))

    def readiness_changed(self, ready: bool) -> None:
        self.metrics.backplane_up.set(1 if ready else 0)
        log.warning(
            "backplane %s", "connected" if ready else "unreachable",
            extra={"event": "backplane_up" if ready else "backplane_down"},
        )

    # -- heartbeat ---------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        timeout = self.settings.heartbeat_timeout
        tick = max(min(interval, timeout / 4), 0.02)
        next_ping = time.monotonic() + interval
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now >= next_ping:
                self.ping_all()
                next_ping = now + interval
            deadline = now - timeout
            silent = [c for c in self.local.connections.values() if c.last_seen < deadline]
            for conn in silent:
                self.metrics.heartbeat_timeouts.inc()
                conn.close(CloseCode.HEARTBEAT_TIMEOUT)
                try:
                    await self.unregister(conn, "heartbeat_timeout")
                except RtforgeError:
                    log.exception("cleanup after heartbeat timeout failed")
