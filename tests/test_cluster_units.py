"""The cluster backplane's parts, without a broker.

* channel tokens: ``encode_channel_token`` is injective, round-trips and
  only ever yields ``[A-Za-z0-9_-]``, so no channel name can be broker syntax;
* ``NodeState``: what a node owns survives ``snapshot_rows`` → msgpack →
  ``from_rows`` unchanged, and replaying its delta ops gives the same state;
* garbage: the envelope decoder and the control-message handler drop what
  they cannot read and never raise into the transport;
* the replication protocol itself (deltas, gaps, snapshots in parts, leases,
  ``bye``, channel records) between :class:`ClusterBackplane` instances on an
  in-process :class:`LoopTransport`: the same code that runs over NATS and
  Redis, with the broker replaced by a dict of subscriptions in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from backends import (
    BackplaneUnavailable,
    ChannelRecord,
    ClusterBackplane,
    Envelope,
    EnvelopeError,
    Route,
    decode_envelope,
    encode_envelope,
)
from backends import cluster as cluster_module
from backends.cluster import NodeState
from backends.nats import NatsTransport
from backends.redis import RedisTransport
from backends.transport import Transport, decode_channel_token, encode_channel_token

TOKEN = re.compile(r"[A-Za-z0-9_-]*")
FRAME = b'{"type":"text","payload":"x","timestamp":1}'

# -- channel tokens -------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(name=st.text(max_size=300))
def test_a_token_round_trips_and_is_only_plain_characters(name: str) -> None:
    token = encode_channel_token(name)
    assert TOKEN.fullmatch(token), token
    assert decode_channel_token(token) == name


@settings(max_examples=300, deadline=None)
@given(a=st.text(max_size=40), b=st.text(max_size=40))
def test_different_names_never_share_a_token(a: str, b: str) -> None:
    # Round-tripping already proves injectivity; this checks it directly too.
    assume(a != b)
    assert encode_channel_token(a) != encode_channel_token(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("a.*", "a.b"), ("a.>", "a.b.c"), (">", "*"), ("a", "a\x00"), ("a", "a "),
        ("é", "e\u0301"), ("A", "a"), ("YQ", "a"), ("a/b", "a:b"), ("", " "),
    ],
)
def test_look_alike_names_get_different_tokens(a: str, b: str) -> None:
    assert a != b
    assert encode_channel_token(a) != encode_channel_token(b)


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=1, max_size=255))
def test_broker_subjects_hold_the_name_as_one_plain_token(name: str) -> None:
    nats = NatsTransport("nats://127.0.0.1:4222", "cl-1", "n1")
    subject = nats.channel_subject(name)
    parts = subject.split(".")
    assert parts[:2] == ["cl-1", "ch"] and len(parts) == 3
    assert "*" not in subject and ">" not in subject and " " not in subject
    redis = RedisTransport("redis://127.0.0.1:6379/0", "cl-1", "n1")
    key = redis.channel_subject(name)
    assert key.split(":") == ["cl-1", "ch", parts[2]]
    assert not set(key) & set("*?[]\\ ")


# -- NodeState ----------------------------------------------------------------------------

conn_ids = st.sampled_from([f"c{i}" for i in range(6)])
channels = st.sampled_from(["a", "a.*", ">", "ünï", "x:y", "sp ace"])
infos = st.fixed_dictionaries(
    {"connected_at": st.floats(0, 2e9), "remote_addr": st.text(max_size=8)},
    optional={
        "custom": st.dictionaries(st.text(max_size=4), st.integers(-(2**63), 2**63), max_size=2)
    },
)
ops = st.one_of(
    st.tuples(st.just("+c"), conn_ids, infos),
    st.tuples(st.just("-c"), conn_ids, st.none()),
    st.tuples(st.just("+s"), conn_ids, channels),
    st.tuples(st.just("-s"), conn_ids, channels),
).map(list)


def shape(state: NodeState) -> tuple[Any, ...]:
    return (state.connections, state.members, state.channels_of)


def check_invariants(state: NodeState) -> None:
    """``members`` and ``channels_of`` are exact inverses without empty sets."""
    assert all(state.members.values()), state.members
    assert all(state.channels_of.values()), state.channels_of
    pairs = {(ch, c) for ch, members in state.members.items() for c in members}
    assert pairs == {(ch, c) for c, chans in state.channels_of.items() for ch in chans}


@settings(max_examples=300, deadline=None)
@given(history=st.lists(ops, max_size=40), dropped=st.lists(channels, max_size=2))
def test_node_state_survives_a_snapshot_and_replaying_its_deltas(
    history: list[list[Any]], dropped: list[str]
) -> None:
    owner, replica = NodeState(), NodeState()
    for op in history:
        kind, connection_id, arg = op
        if kind == "+c":
            owner.add_connection(connection_id, dict(arg))
        elif kind == "-c":
            owner.remove_connection(connection_id)
        elif kind == "+s":
            owner.subscribe(arg, connection_id)
        else:
            owner.unsubscribe(arg, connection_id)
        # What travels is msgpack, so replay what came through msgpack.
        replica.apply(msgpack.unpackb(msgpack.packb(op), raw=False))
    for channel in dropped:
        owner.drop_channel(channel)
        replica.drop_channel(channel)
    check_invariants(owner)
    assert shape(replica) == shape(owner)
    rows = msgpack.unpackb(msgpack.packb(list(owner.snapshot_rows())), raw=False)
    restored = NodeState.from_rows(rows)
    check_invariants(restored)
    assert shape(restored) == shape(owner)


def test_a_connection_with_many_channels_spreads_over_bounded_rows() -> None:
    """One row per ROW_CHANNELS channels, info only in the first, so that no
    row can outgrow a broker message; the rows still restore the state."""
    from backends.state import ROW_CHANNELS  # noqa: PLC0415

    owner = NodeState()
    owner.add_connection("busy", {"remote_addr": "x"})
    names = [f"{'ü' * 250}-{i}" for i in range(2 * ROW_CHANNELS + 7)]  # ~1.5 MB of names
    for name in names:
        owner.subscribe(name, "busy")
    owner.subscribe("other", "not-a-connection")
    rows = list(owner.snapshot_rows())
    busy = [row for row in rows if row[0] == "busy"]
    assert [len(row[2]) for row in busy] == [ROW_CHANNELS, ROW_CHANNELS, 7]
    assert busy[0][1] == {"remote_addr": "x"} and busy[1][1] is None and busy[2][1] is None
    assert max(len(msgpack.packb(row)) for row in rows) < 256 * 1024
    restored = NodeState.from_rows(msgpack.unpackb(msgpack.packb(rows), raw=False))
    assert shape(restored) == shape(owner)


def test_node_state_reports_channels_that_lost_their_last_member() -> None:
    state = NodeState()
    state.add_connection("c1", {})
    state.add_connection("c2", {})
    for channel in ("solo", "shared"):
        state.subscribe(channel, "c1")
    state.subscribe("shared", "c2")
    assert state.subscribe("solo", "c1") is False
    assert state.remove_connection("c1") == ["solo"]
    assert state.unsubscribe("solo", "c1") is False
    assert state.drop_channel("shared") == {"c2"}
    assert shape(state) == ({"c2": {}}, {}, {})


# -- garbage ------------------------------------------------------------------------------

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
envelope_like = st.dictionaries(
    st.sampled_from(["v", "r", "f", "c", "i", "o", "x", "n", "t", "zz"]),
    msgpack_values | st.sampled_from([1, 2, 3, b"{}"]),
    max_size=9,
)


@settings(max_examples=400, deadline=None)
@given(data=envelope_like)
def test_the_envelope_decoder_accepts_well_typed_envelopes_or_raises_envelope_error(
    data: dict[str, Any],
) -> None:
    raw = msgpack.packb(data, use_bin_type=True)
    try:
        envelope = decode_envelope(raw)
    except EnvelopeError:
        return
    assert isinstance(envelope.route, Route)
    assert isinstance(envelope.frame, bytes)
    assert envelope.channel is None or isinstance(envelope.channel, str)
    assert envelope.route is not Route.CHANNEL or envelope.channel is not None
    assert envelope.route is not Route.DIRECT or envelope.connection_id is not None
    for ids in (envelope.only_to, envelope.exclude):
        assert ids is None or all(isinstance(i, str) for i in ids)
    assert decode_envelope(encode_envelope(envelope)) == envelope


# -- the protocol on an in-process transport ------------------------------------------------


class Bus:
    """The "broker": who subscribed to what, in this process. Messages are
    delivered on later loop iterations, in publish order, never echoed."""

    def __init__(self) -> None:
        self.transports: list[LoopTransport] = []
        self.log: list[tuple[str, str, bytes]] = []
        #: return True to lose a message (node id, subject, data)
        self.lose: Callable[[str, str, bytes], bool] = lambda node, subject, data: False


class LoopTransport(Transport):
    name = "loop"

    def __init__(self, bus: Bus, cluster: str, node_id: str) -> None:
        super().__init__("loop://", cluster, node_id)
        self.bus = bus
        self.subjects: set[str] = set()
        self.up = False

    @property
    def connected(self) -> bool:
        return self.up

    async def connect(self) -> None:
        self.up = True
        self.bus.transports.append(self)

    async def close(self) -> None:
        self.up = False
        with contextlib.suppress(ValueError):
            self.bus.transports.remove(self)

    def crash(self) -> None:
        """Vanish without a word, like a SIGKILLed process."""
        self.up = False
        self.bus.transports.remove(self)

    async def publish(self, subject: str, data: bytes) -> None:
        if not self.up:
            raise BackplaneUnavailable("loop bus: down")
        self.bus.log.append((self.node_id, subject, data))
        if self.bus.lose(self.node_id, subject, data):
            return
        loop = asyncio.get_running_loop()
        for other in self.bus.transports:
            if other is not self and subject in other.subjects:
                loop.call_soon(other.on_message, subject, data)

    async def subscribe(self, subject: str) -> None:
        if not self.up:
            raise BackplaneUnavailable("loop bus: down")
        self.subjects.add(subject)

    async def unsubscribe(self, subject: str) -> None:
        self.subjects.discard(subject)


class Listener:
    def __init__(self) -> None:
        self.delivered: list[Envelope] = []
        self.deleted: list[str] = []
        self.readiness: list[bool] = []

    def deliver(self, envelope: Envelope) -> None:
        self.delivered.append(envelope)

    def channel_deleted(self, channel: str) -> None:
        self.deleted.append(channel)

    def readiness_changed(self, ready: bool) -> None:
        self.readiness.append(ready)


class Node:
    def __init__(self, bus: Bus, node_id: str, lease_ttl: float) -> None:
        self.transport = LoopTransport(bus, "unit", node_id)
        self.backplane = ClusterBackplane(self.transport, node_id=node_id, lease_ttl=lease_ttl)
        self.listener = Listener()

    async def start(self) -> Node:
        await self.backplane.start(self.listener)
        return self


@pytest.fixture
async def bus() -> AsyncIterator[Bus]:
    yield Bus()


@pytest.fixture
async def make_node(bus: Bus) -> AsyncIterator[Callable[..., Any]]:
    nodes: list[Node] = []

    async def make(node_id: str, lease_ttl: float = 0.6) -> Node:
        node = await Node(bus, node_id, lease_ttl).start()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.backplane.stop()


async def until(check: Callable[[], Any], timeout: float = 3.0) -> None:
    """Let the loop run until ``await check()`` is truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def controls(bus: Bus, sender: str, kind: str) -> list[dict[str, Any]]:
    found = []
    for node, subject, data in bus.log:
        if node == sender and subject.endswith(".ctl"):
            message = msgpack.unpackb(data, raw=False)
            if message.get("k") == kind:
                found.append(message)
    return found


async def test_deltas_replicate_connections_and_memberships(make_node: Any) -> None:
    a, b = await make_node("a"), await make_node("b")
    await until(lambda: _eq(b.backplane.node_ids(), ["a", "b"]))
    await a.backplane.add_connection("c1", {"remote_addr": "1.2.3.4:5"})
    await a.backplane.subscribe("room", "c1")
    await b.backplane.add_connection("c2", {})
    await b.backplane.subscribe("room", "c2")
    for node in (a, b):
        await until(lambda n=node: _eq(n.backplane.subscriber_count("room"), 2))
        assert await node.backplane.connection_count() == 2
    assert await b.backplane.connection_info("c1") == {"remote_addr": "1.2.3.4:5", "node_id": "a"}
    assert await b.backplane.channels_of("c1") == ["room"]
    assert await a.backplane.remove_connection("c1") == ["room"]
    await until(lambda: _eq(b.backplane.subscriber_count("room"), 1))
    assert await b.backplane.connection_info("c1") is None


async def test_a_channel_publish_goes_only_to_nodes_with_subscribers(
    make_node: Any, bus: Bus
) -> None:
    a, b, c = await make_node("a"), await make_node("b"), await make_node("c")
    await b.backplane.add_connection("cb", {})
    await b.backplane.subscribe("room", "cb")
    await until(lambda: _eq(a.backplane.subscriber_count("room"), 1))
    recipients = await a.backplane.publish(Envelope(Route.CHANNEL, FRAME, channel="room"))
    assert recipients == 1
    await until(lambda: _true(len(b.listener.delivered) == 1))
    assert c.listener.delivered == [] and a.listener.delivered == []
    assert b.listener.delivered[0].origin == "a"
    channel_subject = a.transport.channel_subject("room")
    assert channel_subject not in c.transport.subjects
    await b.backplane.unsubscribe("room", "cb")  # 1 -> 0: interest withdrawn
    assert channel_subject not in b.transport.subjects


async def test_a_snapshot_in_many_parts_reaches_a_new_node(
    make_node: Any, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "_SNAPSHOT_PART_BYTES", 256)
    a = await make_node("a")
    for i in range(40):
        await a.backplane.add_connection(f"c{i}", {"n": i})
        for channel in ("x", "y", f"own-{i}"):
            await a.backplane.subscribe(channel, f"c{i}")
    await asyncio.sleep(0.05)
    b = await make_node("b")
    await until(lambda: _eq(b.backplane.connection_count(), 40))
    assert await b.backplane.subscriber_count("x") == 40
    assert await b.backplane.channels_of("c7") == ["own-7", "x", "y"]
    parts = controls(bus, "a", "snap")
    assert len({m["P"] for m in parts}) == 1 and parts[0]["P"] >= 3
    total = parts[0]["P"]
    assert [m["p"] for m in parts] == list(range(total)) * (len(parts) // total)
    assert all(len(msgpack.packb(m["c"])) <= 256 + 64 for m in parts)


async def test_a_lost_delta_is_noticed_and_repaired_by_a_snapshot(
    make_node: Any, bus: Bus
) -> None:
    a, b = await make_node("a", lease_ttl=0.6), await make_node("b", lease_ttl=0.6)
    await until(lambda: _eq(b.backplane.node_ids(), ["a", "b"]))
    await asyncio.sleep(0.1)  # the join's snapshots are all out: only a sync can repair
    lost: list[bytes] = []

    def lose_first_delta(node: str, subject: str, data: bytes) -> bool:
        is_delta = subject.endswith(".ctl") and msgpack.unpackb(data, raw=False).get("k") == "d"
        if node == "a" and is_delta and not lost:
            lost.append(data)
            return True
        return False

    bus.lose = lose_first_delta
    await a.backplane.add_connection("c1", {})
    await asyncio.sleep(0.02)
    await a.backplane.add_connection("c2", {})  # b sees a gap here, or at the next heartbeat
    assert lost
    await until(lambda: _eq(b.backplane.connection_count(), 2))
    assert controls(bus, "b", "sync")


async def test_a_lost_snapshot_part_is_repaired(
    make_node: Any, bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "_SNAPSHOT_PART_BYTES", 128)
    a = await make_node("a", lease_ttl=0.6)
    for i in range(10):
        await a.backplane.add_connection(f"c{i}", {"pad": "x" * 40})
    await asyncio.sleep(0.02)
    dropped: list[int] = []

    def lose_part_one(node: str, subject: str, data: bytes) -> bool:
        message = msgpack.unpackb(data, raw=False) if subject.endswith(".ctl") else {}
        if message.get("k") == "snap" and message.get("p") == 1 and not dropped:
            dropped.append(1)
            return True
        return False

    bus.lose = lose_part_one
    b = await make_node("b", lease_ttl=0.6)
    await until(lambda: _eq(b.backplane.connection_count(), 10))
    assert dropped


async def test_connection_info_that_msgpack_cannot_carry_does_not_stop_replication(
    make_node: Any,
) -> None:
    a, b = await make_node("a"), await make_node("b")
    await until(lambda: _eq(b.backplane.node_ids(), ["a", "b"]))
    await a.backplane.add_connection("big", {"custom": {"id": 2**70, "when": object()}})
    await a.backplane.add_connection("plain", {"custom": {"id": 7}})
    await until(lambda: _eq(b.backplane.connection_count(), 2))
    info = await b.backplane.connection_info("big")
    assert info is not None and info["custom"]["id"] == str(2**70)
    assert await b.backplane.connection_info("plain") == {"custom": {"id": 7}, "node_id": "a"}
    c = await make_node("c")  # and snapshots still work
    await until(lambda: _eq(c.backplane.connection_count(), 2))


async def test_a_silent_node_leaves_within_its_lease(make_node: Any) -> None:
    a, b, c = [await make_node(n, lease_ttl=0.5) for n in "abc"]
    for node, conn in ((b, "cb"), (c, "cc")):
        await node.backplane.add_connection(conn, {})
        await node.backplane.subscribe("room", conn)
    await until(lambda: _eq(a.backplane.subscriber_count("room"), 2))
    loop = asyncio.get_running_loop()
    started = loop.time()
    b.transport.crash()
    await until(lambda: _eq(a.backplane.node_ids(), ["a", "c"]), timeout=3)
    assert loop.time() - started <= 0.5 + 0.5  # the lease plus one tick (lease / 3)
    assert await a.backplane.subscriber_count("room") == 1
    assert await a.backplane.connection_info("cb") is None


async def test_a_stopped_node_leaves_at_once(make_node: Any) -> None:
    a, c = await make_node("a", lease_ttl=30), await make_node("c", lease_ttl=30)
    await c.backplane.add_connection("cc", {})
    await until(lambda: _eq(a.backplane.connection_count(), 1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await c.backplane.stop()
    await until(lambda: _eq(a.backplane.node_ids(), ["a"]), timeout=2)
    assert loop.time() - started < 1.0  # "bye", not the 30 s lease
    assert await a.backplane.connection_count() == 0


async def test_channel_records_last_writer_wins_and_deletes_unsubscribe_everyone(
    make_node: Any,
) -> None:
    a, b = await make_node("a"), await make_node("b")
    await until(lambda: _eq(b.backplane.node_ids(), ["a", "b"]))
    assert await a.backplane.create_channel(ChannelRecord("r", "one")) is True
    await until(lambda: _true(b.backplane._records.get("r") is not None))
    assert await b.backplane.create_channel(ChannelRecord("r", "two")) is False
    await b.backplane.add_connection("cb", {})
    await b.backplane.subscribe("r", "cb")
    await until(lambda: _eq(a.backplane.subscriber_count("r"), 1))
    info = await a.backplane.get_channel("r")
    assert info is not None and info.record.description == "two"
    assert await a.backplane.delete_channel("r") is True
    await until(lambda: _true(b.listener.deleted == ["r"]))
    assert await b.backplane.get_channel("r") is None
    assert await b.backplane.channels_of("cb") == []
    assert b.transport.channel_subject("r") not in b.transport.subjects
    # A late upsert older than the delete cannot resurrect it.
    stale = {"k": "rec", "n": "a", "i": "old", "s": 0, "c": "r",
             "r": ChannelRecord("r", "zombie").to_dict(), "v": [1.0, "a"]}
    b.backplane._on_message(b.transport.subject("ctl"), msgpack.packb(stale))
    assert await b.backplane.get_channel("r") is None


async def test_a_subscribe_right_after_a_delete_keeps_the_node_listening(
    make_node: Any,
) -> None:
    """The unsubscribe a delete schedules must not undo a subscribe that
    lands before it runs."""
    a = await make_node("a")
    await a.backplane.add_connection("c1", {})
    await a.backplane.subscribe("r", "c1")
    subject = a.transport.channel_subject("r")
    assert await a.backplane.delete_channel("r") is True
    await a.backplane.subscribe("r", "c1")  # same loop iteration as the delete
    for _ in range(5):
        await asyncio.sleep(0)  # let the scheduled unsubscribe run
    assert subject in a.transport.subjects
    assert await a.backplane.subscriber_count("r") == 1


async def test_publishing_while_the_broker_is_down_fails_and_delivers_nothing(
    make_node: Any,
) -> None:
    a = await make_node("a")
    await a.backplane.add_connection("c1", {})
    await a.backplane.subscribe("room", "c1")
    a.transport.up = False
    assert not a.backplane.ready
    for envelope in (
        Envelope(Route.CHANNEL, FRAME, channel="room"),
        Envelope(Route.BROADCAST, FRAME),
        Envelope(Route.DIRECT, FRAME, connection_id="c1"),
    ):
        with pytest.raises(BackplaneUnavailable):
            await a.backplane.publish(envelope)
    assert a.listener.delivered == []
    with pytest.raises(BackplaneUnavailable):
        await a.backplane.subscribe("new", "c1")
    a.transport.up = True


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=40) | envelope_like.map(msgpack.packb))
async def test_garbage_on_any_subject_is_dropped_without_raising(raw: bytes) -> None:
    bus = Bus()
    node = await Node(bus, "a", 5.0).start()
    try:
        for subject in ("ctl", "all", "node.a", "ch.eA"):
            node.backplane._on_message(node.transport.subject(*subject.split(".")), raw)
        await asyncio.sleep(0)
        for envelope in node.listener.delivered:  # only well-formed envelopes get through
            assert isinstance(envelope.frame, bytes)
        assert await node.backplane.node_ids() == ["a"]  # no phantom peer
    finally:
        await node.backplane.stop()


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _true(value: bool) -> bool:
    return value
