"""A real node over real WebSockets: welcome frames, every client command,
publish/subscribe and the default message handler.

One node (default settings) serves the whole module; each test uses its
own channel names."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from support.client import WsConnect, in_channel, of_type, reply_to
from support.nodes import NodeProcess
from support.polling import eventually


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def meta(frame: dict[str, Any]) -> dict[str, Any]:
    metadata = frame.get("metadata")
    assert isinstance(metadata, dict), f"frame without metadata: {frame}"
    return metadata


# -- welcome ---------------------------------------------------------------


async def test_welcome_on_ws(node: NodeProcess, ws_connect: WsConnect) -> None:
    client = await ws_connect(node.ws_url)
    welcome = client.welcome
    assert welcome is not None
    assert welcome["type"] == "system"
    assert welcome["payload"] == "WebSocket connected"
    assert is_uuid(meta(welcome)["connection_id"])
    assert isinstance(welcome["timestamp"], int)
    assert abs(welcome["timestamp"] - time.time()) < 30
    assert "channel" not in welcome


async def test_welcome_on_ws_channel_then_subscribed(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str, http: httpx.AsyncClient
) -> None:
    client = await ws_connect(node.ws_channel_url(channel_name))
    assert client.welcome is not None
    assert client.welcome["type"] == "system"
    assert client.welcome["payload"] == f"Connected to channel: {channel_name}"
    assert is_uuid(meta(client.welcome)["connection_id"])
    subscribed = await client.recv_until(reply_to("subscribe"))
    assert subscribed["payload"] == f"Subscribed to channel: {channel_name}"
    assert meta(subscribed)["ok"] is True
    presence = await client.command("presence", channel=channel_name)
    assert presence["payload"] == {"channel": channel_name, "count": 1}
    assert (await http.get(f"{node.http_url}/api/connections/{client.connection_id}")).json()[
        "channels"
    ] == [channel_name]


async def test_every_connection_gets_its_own_id(node: NodeProcess, ws_connect: WsConnect) -> None:
    ids = {(await ws_connect(node.ws_url)).connection_id for _ in range(3)}
    assert len(ids) == 3


# -- the frames the seed's JavaScript example relies on ----------------------


async def test_frames_of_the_seed_javascript_example(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    """``new WebSocket('ws://H:P/ws')`` and ``.../ws/chat:room1``, then the
    three commands exactly as the example sends them (no id)."""
    ws = await ws_connect(node.ws_url)
    chat_ws = await ws_connect(f"{node.ws_base}/ws/chat:room1")
    assert ws.welcome is not None and ws.welcome["payload"] == "WebSocket connected"
    assert chat_ws.welcome is not None
    assert chat_ws.welcome["payload"] == "Connected to channel: chat:room1"

    await ws.send_json(
        {"type": "system", "payload": {"command": "subscribe", "channel": "chat:room1"}}
    )
    reply = await ws.recv_json()
    assert reply["type"] == "system"
    assert reply["payload"] == "Subscribed to channel: chat:room1"
    assert meta(reply)["command"] == "subscribe"
    assert meta(reply)["ok"] is True
    assert "id" not in meta(reply)

    await ws.send_json({"type": "system", "payload": {"command": "list_channels"}})
    listing = await ws.recv_json()
    assert listing["type"] == "json"
    assert "chat:room1" in listing["payload"]["channels"]
    assert all(isinstance(name, str) for name in listing["payload"]["channels"])
    assert meta(listing)["command"] == "list_channels"
    assert meta(listing)["ok"] is True

    await ws.send_json(
        {"type": "system", "payload": {"command": "unsubscribe", "channel": "chat:room1"}}
    )
    reply = await ws.recv_json()
    assert reply["payload"] == "Unsubscribed from channel: chat:room1"
    assert meta(reply)["ok"] is True


# -- commands ----------------------------------------------------------------


COMMAND_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("subscribe", {"channel": "CH"}, "system"),
    ("unsubscribe", {"channel": "CH"}, "system"),
    ("list_channels", {}, "json"),
    ("publish", {"channel": "CH", "data": {"x": 1}}, "system"),
    ("presence", {"channel": "CH"}, "json"),
    ("ping", {}, "pong"),
]


@pytest.mark.parametrize("case", COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
@pytest.mark.parametrize("request_id", ["req-1", 42, {"nested": ["id", 1]}])
async def test_every_command_echoes_its_id(
    node: NodeProcess,
    ws_connect: WsConnect,
    channel_name: str,
    case: tuple[str, dict[str, Any], str],
    request_id: object,
) -> None:
    command, fields, reply_type = case
    client = await ws_connect(node.ws_url)
    fields = {k: channel_name if v == "CH" else v for k, v in fields.items()}
    await client.send_json(
        {"type": "system", "payload": {"command": command, "id": request_id, **fields}}
    )
    reply = await client.recv_until(lambda f: (f.get("metadata") or {}).get("id") == request_id)
    assert reply["type"] == reply_type
    assert meta(reply)["id"] == request_id
    assert meta(reply)["command"] == command
    assert meta(reply)["ok"] is True
    assert "error" not in meta(reply)


async def test_subscribe_reply_and_idempotence(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url)
    first = await client.command("subscribe", channel=channel_name)
    again = await client.command("subscribe", channel=channel_name)
    assert first["payload"] == again["payload"] == f"Subscribed to channel: {channel_name}"
    assert meta(again)["ok"] is True
    presence = await client.command("presence", channel=channel_name)
    assert presence["payload"]["count"] == 1


async def test_unsubscribe_stops_delivery(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    listener = await ws_connect(node.ws_url)
    sender = await ws_connect(node.ws_url)
    await listener.command("subscribe", channel=channel_name)
    reply = await listener.command("unsubscribe", channel=channel_name)
    assert reply["payload"] == f"Unsubscribed from channel: {channel_name}"
    published = await sender.command("publish", channel=channel_name, data="after")
    assert meta(published)["ok"] is True
    await listener.sync()
    assert listener.take(in_channel(channel_name)) == []


async def test_unsubscribe_from_a_channel_never_joined_is_harmless(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url)
    reply = await client.command("unsubscribe", channel=channel_name)
    assert meta(reply)["ok"] is True
    assert meta(reply).get("was_subscribed") is False


async def test_list_channels_lists_subscribed_channels(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url)
    names = [f"{channel_name}:{i}" for i in range(3)]
    for name in names:
        await client.command("subscribe", channel=name)
    listing = await client.command("list_channels")
    assert set(names) <= set(listing["payload"]["channels"])
    await client.command("unsubscribe", channel=names[0])
    listing = await client.command("list_channels")
    assert names[0] not in listing["payload"]["channels"]


async def test_publish_reaches_subscribers_with_the_channel(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    first, second, sender = [await ws_connect(node.ws_url) for _ in range(3)]
    other_channel = await ws_connect(node.ws_url)
    for client in (first, second):
        await client.command("subscribe", channel=channel_name)
    await other_channel.command("subscribe", channel=channel_name + ":other")
    data = {"text": "Hello", "n": [1, 2, 3]}
    reply = await sender.command("publish", channel=channel_name, data=data)
    assert reply["type"] == "system"
    assert meta(reply)["ok"] is True
    for client in (first, second):
        frame = await client.recv_until(in_channel(channel_name))
        assert frame["type"] == "json"
        assert frame["payload"] == data
        assert isinstance(frame["timestamp"], int)
    for client in (sender, other_channel):
        await client.sync()
        assert client.take(in_channel(channel_name)) == []


async def test_publish_with_event_sends_an_event_frame(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    listener = await ws_connect(node.ws_url)
    sender = await ws_connect(node.ws_url)
    await listener.command("subscribe", channel=channel_name)
    reply = await sender.command(
        "publish", channel=channel_name, event="user.joined", data={"userId": 42}
    )
    assert meta(reply)["ok"] is True
    frame = await listener.recv_until(in_channel(channel_name))
    assert frame["type"] == "event"
    assert frame["payload"] == {"event": "user.joined", "data": {"userId": 42}}


async def test_publisher_that_is_subscribed_gets_its_own_message(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url)
    await client.command("subscribe", channel=channel_name)
    await client.command("publish", channel=channel_name, data="echo")
    assert (await client.recv_until(in_channel(channel_name)))["payload"] == "echo"


async def test_messages_of_one_publisher_arrive_in_order(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    listener = await ws_connect(node.ws_url)
    sender = await ws_connect(node.ws_url)
    await listener.command("subscribe", channel=channel_name)
    ids = [await sender.send_command("publish", channel=channel_name, data=i) for i in range(100)]
    for request_id in ids:
        assert meta(await sender.reply(request_id))["ok"] is True
    frames = await listener.recv_many(in_channel(channel_name), 100)
    assert [f["payload"] for f in frames] == list(range(100))


async def test_presence_counts_subscribers(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    clients = [await ws_connect(node.ws_url) for _ in range(3)]
    asker = clients[0]
    assert (await asker.command("presence", channel=channel_name))["payload"] == {
        "channel": channel_name, "count": 0,
    }
    for client in clients:
        await client.command("subscribe", channel=channel_name)
    assert (await asker.command("presence", channel=channel_name))["payload"]["count"] == 3
    await clients[2].close()

    async def two_left() -> bool:
        reply = await asker.command("presence", channel=channel_name)
        return bool(reply["payload"]["count"] == 2)

    await eventually(two_left, timeout=5, message="presence count after a client left")


async def test_ping_command_and_bare_ping_frame(node: NodeProcess, ws_connect: WsConnect) -> None:
    client = await ws_connect(node.ws_url)
    reply = await client.command("ping")
    assert reply["type"] == "pong"
    assert "payload" not in reply
    assert meta(reply)["command"] == "ping"
    await client.send_json({"type": "ping"})
    pong = await client.recv_until(of_type("pong"))
    assert set(pong) == {"type", "timestamp"}


# -- client messages and the default handler ---------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        "Hello server",
        '{"type": "text", "payload": "hi"}',
        '{"type": "json", "payload": {"k": [1, 2]}}',
        '{"type": "event", "payload": {"event": "clicked", "data": 1}}',
        '{"type": "system", "payload": "just a note"}',
    ],
)
async def test_client_messages_get_message_received(
    node: NodeProcess, ws_connect: WsConnect, frame: str
) -> None:
    client = await ws_connect(node.ws_url)
    await client.send_text(frame)
    reply = await client.recv_json()
    assert reply["type"] == "system"
    assert reply["payload"] == "Message received"


async def test_a_client_message_is_not_forwarded_to_others(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    talker, bystander = await ws_connect(node.ws_url), await ws_connect(node.ws_url)
    await talker.send_text("only for the server")
    assert (await talker.recv_json())["payload"] == "Message received"
    await bystander.sync()
    assert list(bystander.buffer) == []


# -- size limit at the default -------------------------------------------------


async def test_default_size_limit_is_64_kib(node: NodeProcess, ws_connect: WsConnect) -> None:
    near = await ws_connect(node.ws_url)
    await near.send_text("x" * 60_000)
    assert (await near.recv_json())["payload"] == "Message received"
    over = await ws_connect(node.ws_url)
    await over.send_text("x" * (65536 + 1))
    assert (await over.expect_close()).code == 1009
