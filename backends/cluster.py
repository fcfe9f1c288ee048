"""The cluster backplane: membership replicated over a broker, with leases.

Every node owns its own state (its connections and their subscriptions) and
announces it on the cluster's control subject; every node keeps a view of
every other live node's state, so counts, listings and presence are local
reads. This is the model of Phoenix.Tracker, with the broker (NATS or Redis,
see :mod:`backends.transport`) as the only shared component.

Control messages (msgpack maps, ``k`` is the kind; every message carries the
sender ``n``, its incarnation ``i`` and its sequence number ``s``):

``d``     delta: ops ``[op, connection id, arg]`` applied in order
          (``+c`` add connection with info, ``-c`` remove connection,
          ``+s``/``-s`` subscribe/unsubscribe to channel)
``snap``  full state of the sender, in parts (``p`` of ``P``) when large,
          plus every channel record the sender knows (part 0)
``hb``    heartbeat: the sender is alive; its ``s`` reveals missed deltas
``hello`` a node (re)joined: everybody sends a snapshot
``sync``  ``to`` a node: please send a snapshot (a gap was detected)
``bye``   the sender stops cleanly: forget its state now
``rec``   channel record upsert or delete (last writer wins by ``v``)

A receiver applies a delta only when its ``s`` follows the last one seen from
that incarnation; otherwise it asks for a snapshot. A peer not heard from
for ``lease_ttl`` seconds is dropped with all its state.

Routing: a channel publish goes to the channel's subject, to which exactly
the nodes with local subscribers are subscribed; a broadcast to the
cluster's ``all`` subject; a targeted send to the holding node's own
subject. The publishing node delivers to its own sockets directly and never
receives its own envelopes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .base import (
    Backplane,
    BackplaneListener,
    BackplaneUnavailable,
    ChannelInfo,
    ChannelRecord,
    Envelope,
    Route,
    count_recipients,
)
from .envelope import EnvelopeError, decode_envelope, encode_envelope
from .state import NodeState
from .transport import Transport

__all__ = ["ClusterBackplane", "NodeState"]

log = logging.getLogger("rtforge.backends.cluster")

#: largest snapshot part, well under every broker's payload limit
_SNAPSHOT_PART_BYTES = 256 * 1024
#: how long a deleted channel's tombstone is kept to win against late upserts
_TOMBSTONE_SECONDS = 300.0
_RECONNECT_MIN, _RECONNECT_MAX = 0.25, 5.0


def _replicable(value: Any) -> Any:
    """``value`` with whatever msgpack cannot carry (integers beyond 64 bits,
    unknown types) turned into text; the JSON-like rest is kept as is."""
    if value is None or isinstance(value, bool | float | str | bytes):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, Mapping):
        return {str(k): _replicable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_replicable(v) for v in value]
    return str(value)


def _is_row(row: Any) -> bool:
    """A snapshot row: ``[connection id, info or None, [channels]]``."""
    return (
        isinstance(row, list)
        and len(row) == 3
        and isinstance(row[0], str)
        and (row[1] is None or isinstance(row[1], dict))
        and isinstance(row[2], list)
        and all(isinstance(channel, str) for channel in row[2])
    )


@dataclass(slots=True)
class _Peer:
    incarnation: str
    seq: int
    state: NodeState
    last_heard: float
    #: snapshot being assembled: seq -> parts received
    parts: dict[int, list[list[Any]]] = field(default_factory=dict)
    parts_expected: int = 0


@dataclass(slots=True)
class _RecordEntry:
    record: ChannelRecord | None  # None: deleted (tombstone)
    version: tuple[float, str]


class ClusterBackplane(Backplane):
    """A :class:`~backends.base.Backplane` over any :class:`Transport`."""

    def __init__(self, transport: Transport, node_id: str, lease_ttl: float = 15.0) -> None:
        super().__init__(node_id, lease_ttl)
        self.name = transport.name
        self.transport = transport
        self.own = NodeState()
        self._peers: dict[str, _Peer] = {}
        self._records: dict[str, _RecordEntry] = {}
        self._listener: BackplaneListener | None = None
        self._incarnation = uuid.uuid4().hex[:12]
        self._seq = 0
        self._ops: list[list[Any]] = []
        self._flush_scheduled = False
        self._snapshot_handle: asyncio.TimerHandle | None = None
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        #: short-lived tasks (unsubscribes after a delete), referenced until done
        self._background: set[asyncio.Task[None]] = set()
        self._sync_requested: dict[str, float] = {}
        self._started = False
        self._stopping = False
        self._ctl = transport.subject("ctl")
        self._all = transport.subject("all")
        self._mine = transport.subject("node", node_id)
        transport.on_message = self._on_message
        transport.on_down = self._on_down
        transport.on_up = self._on_up

    # -- lifecycle -----------------------------------------------------------
    async def start(self, listener: BackplaneListener) -> None:
        """Connect and join. When the broker cannot be reached the node
        still starts (not ready) and keeps trying in the background."""
        self._listener = listener
        self._started = True
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._send_loop(), name="rtforge-cluster-send"))
        self._tasks.append(loop.create_task(self._lease_loop(), name="rtforge-cluster-lease"))
        try:
            await self._connect_and_join()
        except BackplaneUnavailable as exc:
            log.error("%s; the node runs unready and keeps retrying", exc)
            self._tasks.append(loop.create_task(self._connect_loop(), name="rtforge-connect"))

    async def _connect_and_join(self) -> None:
        await self.transport.connect()
        for subject in (self._ctl, self._all, self._mine, *self._channel_subjects()):
            await self.transport.subscribe(subject)
        self._join()
        if self._listener is not None:
            self._listener.readiness_changed(True)

    async def _connect_loop(self) -> None:
        delay = _RECONNECT_MIN
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                await self._connect_and_join()
            except BackplaneUnavailable as exc:
                log.debug("still cannot connect: %s", exc)
                with contextlib.suppress(Exception):
                    await self.transport.close()
                delay = min(delay * 2, _RECONNECT_MAX)
                continue
            log.warning("connected to the %s broker", self.transport.name)
            return

    def _channel_subjects(self) -> list[str]:
        return [self.transport.channel_subject(c) for c in self.own.members]

    def _join(self) -> None:
        """Announce this node and ask everybody for their state."""
        self._control({"k": "hello"})
        self._queue_snapshot()

    async def stop(self) -> None:
        self._stopping = True
        if self.transport.connected:
            self._flush_ops()
            self._control({"k": "bye"})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._outbox_drained(), 2.0)
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._snapshot_handle is not None:
            self._snapshot_handle.cancel()
        await self.transport.close()
        self.own = NodeState()
        self._peers.clear()
        self._listener = None

    async def _outbox_drained(self) -> None:
        await self._outbox.join()

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping and self.transport.connected

    def _on_down(self) -> None:
        if self._listener is not None:
            self._listener.readiness_changed(False)

    def _on_up(self) -> None:
        # Peers may have expired us meanwhile, and we missed their deltas.
        self._join()
        if self._listener is not None:
            self._listener.readiness_changed(True)

    # -- outgoing control traffic ----------------------------------------------
    def _control(self, message: dict[str, Any]) -> None:
        message["n"] = self.node_id
        message["i"] = self._incarnation
        message["s"] = self._seq
        self._outbox.put_nowait(msgpack.packb(message, use_bin_type=True))

    def _queue_op(self, op: list[Any]) -> None:
        self._ops.append(op)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_ops)

    def _flush_ops(self) -> None:
        self._flush_scheduled = False
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        self._seq += 1
        self._control({"k": "d", "o": ops})

    def _queue_snapshot(self, delay: float = 0.0) -> None:
        """Send our state soon; several requests within ``delay`` send one."""
        if self._snapshot_handle is not None:
            return
        loop = asyncio.get_running_loop()
        self._snapshot_handle = loop.call_later(delay, self._send_snapshot)

    def _send_snapshot(self) -> None:
        self._snapshot_handle = None
        self._flush_ops()
        parts: list[list[list[Any]]] = [[]]
        size = 0
        for row in self.own.snapshot_rows():
            row_size = len(msgpack.packb(row, use_bin_type=True))
            if size + row_size > _SNAPSHOT_PART_BYTES and parts[-1]:
                parts.append([])
                size = 0
            parts[-1].append(row)
            size += row_size
        records = [
            [name, e.record.to_dict() if e.record else None, list(e.version)]
            for name, e in self._records.items()
        ]
        for index, rows in enumerate(parts):
            message: dict[str, Any] = {"k": "snap", "p": index, "P": len(parts), "c": rows}
            if index == 0:
                message["r"] = records
            self._control(message)

    async def _send_loop(self) -> None:
        while True:
            data = await self._outbox.get()
            try:
                if self.transport.connected:
                    await self.transport.publish(self._ctl, data)
            except BackplaneUnavailable as exc:
                # Dropped: peers notice the gap and a snapshot follows on reconnect.
                log.debug("control message dropped: %s", exc)
            finally:
                self._outbox.task_done()

    async def _lease_loop(self) -> None:
        heartbeat_every = self.lease_ttl / 3
        tick = max(min(heartbeat_every, 1.0), 0.05)
        next_heartbeat = 0.0
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now >= next_heartbeat and self.transport.connected:
                self._flush_ops()
                self._control({"k": "hb"})
                next_heartbeat = now + heartbeat_every
            expired = [n for n, p in self._peers.items() if now - p.last_heard > self.lease_ttl]
            for node in expired:
                log.warning("node %s missed its lease; dropping its state", node)
                del self._peers[node]
            self._expire_tombstones()

    def _expire_tombstones(self) -> None:
        horizon = time.time() - _TOMBSTONE_SECONDS
        stale = [n for n, e in self._records.items() if e.record is None and e.version[0] < horizon]
        for name in stale:
            del self._records[name]

    # -- incoming traffic ------------------------------------------------------
    def _on_message(self, subject: str, data: bytes) -> None:
        if subject == self._ctl:
            try:
                self._on_control(msgpack.unpackb(data, raw=False))
            except Exception as exc:
                log.warning("dropped an unreadable control message: %r", exc)
            return
        try:
            envelope = decode_envelope(data)
        except EnvelopeError as exc:
            log.warning("dropped an unreadable envelope on %s: %s", subject, exc)
            return
        if envelope.origin == self.node_id or self._listener is None:
            return
        try:
            self._listener.deliver(envelope)
        except UnicodeDecodeError as exc:
            # The frame must be UTF-8 JSON; the listener decodes it once.
            log.warning("dropped an envelope on %s: frame is not UTF-8: %s", subject, exc)
        except Exception:
            # A listener bug must not take the transport's reader down with it.
            log.exception("delivering an envelope from %s failed", subject)

    def _on_control(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise ValueError("control message is not a map")
        node, kind = message.get("n"), message.get("k")
        if node == self.node_id or not isinstance(node, str):
            if message.get("i") != self._incarnation and node == self.node_id:
                log.error("another node uses this node id (%s): node ids must be unique", node)
            return
        incarnation, seq = str(message.get("i")), int(message.get("s", 0))
        if kind == "hello":
            self._queue_snapshot(random.uniform(0.0, 0.05))
            return
        if kind == "bye":
            self._peers.pop(node, None)
            return
        if kind == "sync":
            if message.get("to") == self.node_id:
                self._queue_snapshot(0.02)
            return
        if kind == "rec":
            self._apply_record(message)
            return
        if kind == "snap":
            self._on_snapshot_part(node, incarnation, seq, message)
            return
        peer = self._peers.get(node)
        now = time.monotonic()
        if peer is None or peer.incarnation != incarnation:
            self._request_sync(node)
            return
        peer.last_heard = now
        if kind == "hb":
            if seq > peer.seq:
                self._request_sync(node)
        elif kind == "d":
            if seq == peer.seq + 1:
                for op in message.get("o", ()):
                    peer.state.apply(op)
                peer.seq = seq
            elif seq > peer.seq + 1:
                self._request_sync(node)

    def _request_sync(self, node: str) -> None:
        now = time.monotonic()
        if now - self._sync_requested.get(node, -1e9) < 0.5:
            return
        self._sync_requested[node] = now
        self._control({"k": "sync", "to": node})

    def _on_snapshot_part(
        self, node: str, incarnation: str, seq: int, message: dict[str, Any]
    ) -> None:
        # Check the whole part before touching any state: a malformed snapshot
        # must not register a phantom peer.
        index, total = int(message.get("p", 0)), int(message.get("P", 1))
        rows = message.get("c", [])
        if not (isinstance(rows, list) and all(_is_row(row) for row in rows)):
            raise ValueError("malformed snapshot rows")
        for name, record, version in message.get("r", ()):
            self._merge_record(name, record, (float(version[0]), str(version[1])))
        peer = self._peers.get(node)
        now = time.monotonic()
        if peer is None or peer.incarnation != incarnation:
            peer = _Peer(incarnation, -1, NodeState(), now)
            self._peers[node] = peer
        peer.last_heard = now
        if seq < peer.seq:
            return
        if index == 0:
            peer.parts = {seq: []}
            peer.parts_expected = 0
        assembled = peer.parts.get(seq)
        if assembled is None or peer.parts_expected != index:
            return  # a part went missing: the next heartbeat's gap check resyncs
        assembled.extend(rows)
        peer.parts_expected = index + 1
        if peer.parts_expected == total:
            peer.state = NodeState.from_rows(assembled)
            peer.seq = seq
            peer.parts.clear()

    # -- channel records -------------------------------------------------------
    def _apply_record(self, message: dict[str, Any]) -> None:
        version = message.get("v") or (0.0, "")
        name = message.get("c")
        if not isinstance(name, str):
            return
        deleted = self._merge_record(name, message.get("r"), (float(version[0]), str(version[1])))
        if deleted:
            self._drop_local_channel(name)

    def _merge_record(self, name: str, data: Any, version: tuple[float, str]) -> bool:
        """Merge a record (``None``: deleted); True when this deleted it."""
        current = self._records.get(name)
        if current is not None and current.version >= version:
            return False
        record = ChannelRecord.from_dict(data) if isinstance(data, Mapping) else None
        self._records[name] = _RecordEntry(record, version)
        return record is None

    def _drop_local_channel(self, channel: str) -> None:
        for peer in self._peers.values():
            peer.state.drop_channel(channel)
        members = self.own.drop_channel(channel)
        for connection_id in members:
            self._queue_op(["-s", connection_id, channel])
        if members:
            task = asyncio.get_running_loop().create_task(self._drop_interest(channel))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if self._listener is not None:
            self._listener.channel_deleted(channel)

    def _require_broker(self) -> None:
        if not self.transport.connected:
            raise BackplaneUnavailable(f"the {self.transport.name} broker is unreachable")

    async def create_channel(self, record: ChannelRecord) -> bool:
        self._require_broker()
        current = self._records.get(record.name)
        existed = current is not None and current.record is not None
        if existed and current is not None and current.record is not None:
            record.created_at = current.record.created_at
        version = (time.time(), self.node_id)
        self._records[record.name] = _RecordEntry(record, version)
        self._control({"k": "rec", "c": record.name, "r": record.to_dict(), "v": list(version)})
        return not existed

    async def delete_channel(self, channel: str) -> bool:
        self._require_broker()
        current = self._records.get(channel)
        existed = (current is not None and current.record is not None) or bool(
            self._all_members(channel)
        )
        version = (time.time(), self.node_id)
        self._records[channel] = _RecordEntry(None, version)
        self._flush_ops()
        self._control({"k": "rec", "c": channel, "r": None, "v": list(version)})
        self._drop_local_channel(channel)
        return existed

    async def get_channel(self, channel: str) -> ChannelInfo | None:
        return self._info(channel, self.subscriber_count_now(channel))

    def _info(self, channel: str, count: int) -> ChannelInfo | None:
        entry = self._records.get(channel)
        if entry is not None and entry.record is not None:
            return ChannelInfo(entry.record, count, explicit=True)
        if count == 0:
            return None
        return ChannelInfo(ChannelRecord(channel, created_at=0.0), count, explicit=False)

    async def list_channels(self) -> list[ChannelInfo]:
        counts: dict[str, int] = {}
        for state in self._states():
            for channel, members in state.members.items():
                counts[channel] = counts.get(channel, 0) + len(members)
        names = {n for n, e in self._records.items() if e.record is not None} | counts.keys()
        return [
            info for name in sorted(names) if (info := self._info(name, counts.get(name, 0)))
        ]

    # -- views -------------------------------------------------------------------
    def _states(self) -> Iterator[NodeState]:
        yield self.own
        for peer in self._peers.values():
            yield peer.state

    def _all_members(self, channel: str) -> set[str]:
        members: set[str] = set()
        for state in self._states():
            found = state.members.get(channel)
            if found:
                members |= found
        return members

    def subscriber_count_now(self, channel: str) -> int:
        return sum(len(s.members.get(channel, ())) for s in self._states())

    def _owner(self, connection_id: str) -> str | None:
        if connection_id in self.own.connections:
            return self.node_id
        for node, peer in self._peers.items():
            if connection_id in peer.state.connections:
                return node
        return None

    async def node_ids(self) -> list[str]:
        return sorted([self.node_id, *self._peers])

    # -- connections and membership ----------------------------------------------
    async def add_connection(self, connection_id: str, info: Mapping[str, Any]) -> None:
        data = dict(info)
        try:
            msgpack.packb(data, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as exc:
            # Info that cannot travel would fail every delta and every
            # snapshot of this node from now on: replicate it as text instead.
            log.warning("connection %s: info sent as text (%r)", connection_id, exc)
            data = _replicable(data)
        self.own.add_connection(connection_id, data)
        self._queue_op(["+c", connection_id, data])

    async def remove_connection(self, connection_id: str) -> list[str]:
        channels = sorted(self.own.channels_of.get(connection_id, ()))
        known = connection_id in self.own.connections or bool(channels)
        emptied = self.own.remove_connection(connection_id)
        if known:
            self._queue_op(["-c", connection_id, None])
        for channel in emptied:
            await self._drop_interest(channel)
        return channels

    async def connection_count(self) -> int:
        return sum(len(s.connections) for s in self._states())

    async def connection_ids(self) -> list[str]:
        return [c for s in self._states() for c in s.connections]

    async def subject_connection_count(self, subject: str) -> int:
        return sum(s.subjects.get(subject, 0) for s in self._states())

    async def connection_info(self, connection_id: str) -> dict[str, Any] | None:
        owner = self._owner(connection_id)
        if owner is None:
            return None
        state = self.own if owner == self.node_id else self._peers[owner].state
        return {**state.connections[connection_id], "node_id": owner}

    async def subscribe(self, channel: str, connection_id: str) -> bool:
        first_here = channel not in self.own.members
        if first_here:
            # Interest first: once this returns, any publish reaches us.
            await self.transport.subscribe(self.transport.channel_subject(channel))
        added = self.own.subscribe(channel, connection_id)
        if added:
            self._queue_op(["+s", connection_id, channel])
        return added

    async def unsubscribe(self, channel: str, connection_id: str) -> bool:
        removed = self.own.unsubscribe(channel, connection_id)
        if removed:
            self._queue_op(["-s", connection_id, channel])
            if channel not in self.own.members:
                await self._drop_interest(channel)
        return removed

    async def _drop_interest(self, channel: str) -> None:
        if channel in self.own.members:
            return  # a local connection subscribed again meanwhile: keep listening
        with contextlib.suppress(BackplaneUnavailable):
            await self.transport.unsubscribe(self.transport.channel_subject(channel))

    async def subscribers(self, channel: str) -> set[str]:
        return self._all_members(channel)

    async def subscriber_count(self, channel: str) -> int:
        return self.subscriber_count_now(channel)

    async def channels_of(self, connection_id: str) -> list[str]:
        owner = self._owner(connection_id)
        if owner is None or owner == self.node_id:
            return sorted(self.own.channels_of.get(connection_id, ()))
        return sorted(self._peers[owner].state.channels_of.get(connection_id, ()))

    # -- routing -------------------------------------------------------------------
    async def publish(self, envelope: Envelope) -> int:
        """Deliver locally at once, then hand the envelope to the broker.

        Fails with :class:`BackplaneUnavailable`, delivering nothing, while
        the broker is unreachable: a caller may retry without duplicates."""
        self._require_broker()
        envelope.origin = self.node_id
        route = envelope.route
        if route is Route.DIRECT:
            owner = self._owner(envelope.connection_id or "")
            if owner is None:
                return 0
            if owner == self.node_id:
                self._deliver_locally(envelope)
            else:
                await self.transport.publish(
                    self.transport.subject("node", owner), encode_envelope(envelope)
                )
            return 1
        channel = envelope.channel
        if route is Route.CHANNEL:
            assert channel is not None
            subject = self.transport.channel_subject(channel)
            local = channel in self.own.members
            groups: list[AbstractSet[str]] = [
                m for s in self._states() if (m := s.members.get(channel))
            ]
        else:
            subject = self._all
            local = bool(self.own.connections)
            groups = [s.connections.keys() for s in self._states()]
        await self.transport.publish(subject, encode_envelope(envelope))
        if local:
            self._deliver_locally(envelope)
        # Connection ids are unique cluster-wide, so the groups are disjoint.
        return sum(count_recipients(g, envelope.only_to, envelope.exclude) for g in groups)

    def _deliver_locally(self, envelope: Envelope) -> None:
        if self._listener is not None:
            self._listener.deliver(envelope)
