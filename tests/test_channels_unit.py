"""Channels: name rules and ChannelManager on the in-memory backplane."""

from __future__ import annotations

import time

import pytest

from backends import MemoryBackplane
from service import (
    Channel,
    ChannelManager,
    ChannelNameInvalid,
    ConnectionId,
    validate_channel_name,
)


async def test_channel_subscription() -> None:
    """The seed's example, as written."""
    manager = ChannelManager()
    channel = Channel("test")
    await manager.create_channel(channel)

    conn_id = ConnectionId.new()
    await manager.subscribe("test", conn_id)

    assert await manager.subscriber_count("test") == 1


@pytest.mark.parametrize(
    "name",
    [
        "chat:general",
        "notifications:user-123",
        "a",
        "x" * 255,
        "with space",
        "a.b.c",
        "*",
        ">",
        "chat/../etc",
        "{}[]%",
        "名前:チャット",
        "emoji:😀",
    ],
)
def test_valid_channel_names(name: str) -> None:
    assert validate_channel_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "", "x" * 256, "a\nb", "\x00", "tab\there", "del\x7f", "line\u2028sep", "para\u2029",
        "\ud800",
    ],
)
def test_invalid_channel_names(name: str) -> None:
    with pytest.raises(ChannelNameInvalid) as caught:
        validate_channel_name(name)
    assert caught.value.code == "invalid_channel"


@pytest.mark.parametrize("name", [None, 5, ["a"], b"bytes"])
def test_channel_names_must_be_strings(name: object) -> None:
    with pytest.raises(ChannelNameInvalid):
        validate_channel_name(name)


def test_channel_builder() -> None:
    channel = Channel("chat:general").with_description("General Chat Room")
    assert channel.description == "General Chat Room"
    assert channel.is_private is False
    assert abs(channel.created_at - time.time()) < 5
    assert channel.make_private().is_private is True


async def test_create_channel_reports_whether_it_is_new_and_keeps_created_at() -> None:
    manager = ChannelManager()
    assert await manager.create_channel(Channel("room", created_at=100.0)) is True
    assert await manager.create_channel(Channel("room").with_description("updated")) is False
    found = await manager.get_channel_metadata("room")
    assert found is not None
    assert found.description == "updated"
    assert found.created_at == 100.0


async def test_create_channel_refuses_invalid_names() -> None:
    with pytest.raises(ChannelNameInvalid):
        await ChannelManager().create_channel(Channel(""))


async def test_subscribe_and_unsubscribe_report_changes() -> None:
    manager = ChannelManager()
    conn = ConnectionId.new()
    assert await manager.subscribe("room", conn) is True
    assert await manager.subscribe("room", conn) is False
    assert await manager.subscriber_count("room") == 1
    assert await manager.unsubscribe("room", conn) is True
    assert await manager.unsubscribe("room", conn) is False
    assert await manager.subscriber_count("room") == 0


async def test_subscribe_refuses_invalid_names() -> None:
    with pytest.raises(ChannelNameInvalid):
        await ChannelManager().subscribe("x" * 256, ConnectionId.new())


async def test_subscribers_and_subscribed_channels() -> None:
    manager = ChannelManager()
    a, b = ConnectionId.new(), ConnectionId.new()
    await manager.subscribe("one", a)
    await manager.subscribe("two", a)
    await manager.subscribe("one", b)
    assert await manager.get_subscribers("one") == {a, b}
    assert await manager.get_subscribers("missing") == set()
    assert await manager.get_subscribed_channels(a) == ["one", "two"]
    assert await manager.get_subscribed_channels(ConnectionId.new()) == []


async def test_unsubscribe_all_leaves_every_channel() -> None:
    manager = ChannelManager()
    a, b = ConnectionId.new(), ConnectionId.new()
    for name in ("one", "two", "three"):
        await manager.subscribe(name, a)
    await manager.subscribe("one", b)
    assert sorted(await manager.unsubscribe_all(a)) == ["one", "three", "two"]
    assert await manager.get_subscribed_channels(a) == []
    assert await manager.get_subscribers("one") == {b}
    assert await manager.subscriber_count("two") == 0


async def test_list_channels_has_explicit_and_implicit_channels_with_counts() -> None:
    manager = ChannelManager()
    await manager.create_channel(Channel("empty").with_description("nobody here"))
    await manager.subscribe("busy", ConnectionId.new())
    await manager.subscribe("busy", ConnectionId.new())
    listed = {c.name: c for c in await manager.list_channels()}
    assert set(listed) == {"empty", "busy"}
    assert listed["busy"].subscriber_count == 2
    assert listed["empty"].subscriber_count == 0
    assert listed["empty"].description == "nobody here"


async def test_an_implicit_channel_disappears_with_its_last_subscriber() -> None:
    manager = ChannelManager()
    conn = ConnectionId.new()
    await manager.subscribe("fleeting", conn)
    assert await manager.channel_exists("fleeting")
    await manager.unsubscribe("fleeting", conn)
    assert not await manager.channel_exists("fleeting")
    assert await manager.get_channel_metadata("fleeting") is None


async def test_get_channel_metadata() -> None:
    manager = ChannelManager()
    await manager.create_channel(Channel("vip", "VIP lounge", is_private=True))
    await manager.subscribe("vip", ConnectionId.new())
    found = await manager.get_channel_metadata("vip")
    assert found is not None
    assert (found.name, found.description, found.is_private, found.subscriber_count) == (
        "vip", "VIP lounge", True, 1,
    )
    assert found.to_dict()["subscribers"] == 1
    assert await manager.get_channel_metadata("unknown") is None


async def test_delete_channel_unsubscribes_everyone() -> None:
    manager = ChannelManager()
    a, b = ConnectionId.new(), ConnectionId.new()
    await manager.create_channel(Channel("chat:general"))
    await manager.subscribe("chat:general", a)
    await manager.subscribe("chat:general", b)
    await manager.subscribe("other", a)
    assert await manager.delete_channel("chat:general") is True
    assert not await manager.channel_exists("chat:general")
    assert await manager.subscriber_count("chat:general") == 0
    assert await manager.get_subscribed_channels(a) == ["other"]
    assert await manager.get_subscribed_channels(b) == []
    assert await manager.delete_channel("chat:general") is False


async def test_two_managers_on_one_backplane_share_membership() -> None:
    backplane = MemoryBackplane()
    first, second = ChannelManager(backplane), ChannelManager(backplane)
    await first.subscribe("shared", ConnectionId.new())
    assert await second.subscriber_count("shared") == 1
    assert [c.name for c in await second.list_channels()] == ["shared"]
