"""The in-memory backplane holds the Backplane contract on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from backends import ChannelRecord, Envelope, MemoryBackplane, Route, create_backplane

FRAME = b'{"type":"text","payload":"x","timestamp":1}'


class Listener:
    def __init__(self) -> None:
        self.delivered: list[Envelope] = []
        self.deleted: list[str] = []

    def deliver(self, envelope: Envelope) -> None:
        self.delivered.append(envelope)

    def channel_deleted(self, channel: str) -> None:
        self.deleted.append(channel)

    def readiness_changed(self, ready: bool) -> None:
        raise AssertionError("the memory backplane is always ready")


@pytest.fixture
async def listener() -> Listener:
    return Listener()


@pytest.fixture
async def backplane(listener: Listener) -> AsyncIterator[MemoryBackplane]:
    backplane = MemoryBackplane(node_id="mem-1")
    await backplane.start(listener)
    yield backplane
    await backplane.stop()


def test_create_backplane_by_name() -> None:
    backplane = create_backplane("memory", node_id="x", lease_ttl=3.0)
    assert isinstance(backplane, MemoryBackplane)
    assert (backplane.node_id, backplane.lease_ttl, backplane.name) == ("x", 3.0, "memory")
    with pytest.raises(ValueError, match="unknown backend"):
        create_backplane("kafka", node_id="x")


async def test_connections_and_their_info(backplane: MemoryBackplane) -> None:
    await backplane.add_connection("c1", {"remote_addr": "1.2.3.4:5"})
    await backplane.add_connection("c2", {})
    assert backplane.ready
    assert await backplane.connection_count() == 2
    assert sorted(await backplane.connection_ids()) == ["c1", "c2"]
    assert await backplane.connection_info("c1") == {"remote_addr": "1.2.3.4:5", "node_id": "mem-1"}
    assert await backplane.connection_info("nope") is None
    assert await backplane.node_ids() == ["mem-1"]


async def test_remove_connection_returns_and_drops_its_channels(backplane: MemoryBackplane) -> None:
    await backplane.add_connection("c1", {})
    await backplane.subscribe("b", "c1")
    await backplane.subscribe("a", "c1")
    assert await backplane.remove_connection("c1") == ["a", "b"]
    assert await backplane.connection_count() == 0
    assert await backplane.list_channels() == []


async def test_channel_publish_reaches_the_listener_once_and_counts_recipients(
    backplane: MemoryBackplane, listener: Listener
) -> None:
    for conn in ("c1", "c2", "c3"):
        await backplane.add_connection(conn, {})
        await backplane.subscribe("room", conn)
    envelope = Envelope(Route.CHANNEL, FRAME, channel="room", exclude=frozenset({"c1"}))
    assert await backplane.publish(envelope) == 2
    assert listener.delivered == [envelope]


async def test_publish_to_nobody_is_not_delivered(
    backplane: MemoryBackplane, listener: Listener
) -> None:
    assert await backplane.publish(Envelope(Route.CHANNEL, FRAME, channel="empty")) == 0
    assert await backplane.publish(Envelope(Route.DIRECT, FRAME, connection_id="ghost")) == 0
    assert await backplane.publish(Envelope(Route.BROADCAST, FRAME)) == 0
    assert listener.delivered == []


async def test_broadcast_and_direct_counts(backplane: MemoryBackplane, listener: Listener) -> None:
    for conn in ("c1", "c2", "c3"):
        await backplane.add_connection(conn, {})
    only = Envelope(Route.BROADCAST, FRAME, only_to=frozenset({"c1", "c2", "ghost"}))
    assert await backplane.publish(only) == 2
    assert await backplane.publish(Envelope(Route.BROADCAST, FRAME, only_to=frozenset())) == 0
    assert await backplane.publish(Envelope(Route.DIRECT, FRAME, connection_id="c3")) == 1
    assert [e.route for e in listener.delivered] == [Route.BROADCAST, Route.DIRECT]


async def test_channel_records_and_deletion(backplane: MemoryBackplane, listener: Listener) -> None:
    assert await backplane.create_channel(ChannelRecord("room", "desc", True, 5.0)) is True
    assert await backplane.create_channel(ChannelRecord("room", "new", True, 9.0)) is False
    await backplane.subscribe("room", "c1")
    info = await backplane.get_channel("room")
    assert info is not None
    assert (info.record.description, info.record.created_at, info.subscribers, info.explicit) == (
        "new", 5.0, 1, True,
    )
    assert await backplane.delete_channel("room") is True
    assert listener.deleted == ["room"]
    assert await backplane.get_channel("room") is None
    assert await backplane.channels_of("c1") == []
    assert await backplane.delete_channel("room") is False


async def test_stop_removes_this_nodes_state(listener: Listener) -> None:
    backplane = MemoryBackplane(node_id="gone")
    await backplane.start(listener)
    await backplane.add_connection("c1", {})
    await backplane.subscribe("room", "c1")
    await backplane.stop()
    assert await backplane.connection_count() == 0
    assert await backplane.subscriber_count("room") == 0
