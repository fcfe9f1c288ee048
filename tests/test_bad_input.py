"""Every kind of bad client input over a real socket gets the contract's
answer, and the node keeps serving everyone else.

The module's node has a small frame limit (4096 bytes) and a small
subscription limit (20) so that the limits are cheap to reach. After every
test a fresh client must still get a normal round trip and the node's log
must hold no traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.client import WsClient, WsConnect, in_channel, reply_to
from support.nodes import NodeFactory, NodeProcess

MAX_SIZE = 4096
MAX_SUBSCRIPTIONS = 20


@pytest.fixture(scope="module")
def node(module_start_node: NodeFactory) -> NodeProcess:
    return module_start_node(max_message_size=MAX_SIZE, max_subscriptions=MAX_SUBSCRIPTIONS)


@pytest.fixture(autouse=True)
async def node_keeps_serving(node: NodeProcess) -> AsyncIterator[None]:
    yield
    async with await WsClient.connect(node.ws_url) as client:
        reply = await client.command("subscribe", channel="after-bad-input")
        assert reply["metadata"]["ok"] is True
        assert (await client.command("ping"))["type"] == "pong"
    node.assert_log_clean()


def command(name: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "system", "payload": {"command": name, **fields}}


async def assert_refused(client: WsClient, frame: dict[str, Any], error: str) -> dict[str, Any]:
    """Send a command frame that must fail with ``error``; the reply echoes
    the id and the connection stays usable."""
    request_id = client.next_id("bad")
    frame["payload"]["id"] = request_id
    await client.send_json(frame)
    reply = await client.reply(request_id)
    assert reply["type"] == "system"
    assert isinstance(reply["payload"], str) and reply["payload"]
    assert reply["metadata"]["ok"] is False
    assert reply["metadata"]["error"] == error, reply
    assert (await client.command("ping"))["type"] == "pong"
    return reply


# -- not JSON, or JSON of an unknown shape: a text message for the handler -------


@pytest.mark.parametrize(
    "raw",
    [
        "{",
        '{"type": "system", "payload": {"command": "subscribe"',
        "not json at all",
        "",
        " ",
        "null",
        "42",
        '"just a string"',
        "[]",
        '[{"type": "ping"}]',
        "{}",
        '{"type": 5, "payload": "x"}',
        '{"type": null}',
        '{"type": "banana", "payload": {"command": "subscribe"}}',
        '{"type": "text", "payload": 42}',
        '{"type": "text"}',
        '{"type": "event", "payload": "not an object"}',
        '{"type": "json", "payload": 1, "metadata": "not an object"}',
        '{"type": "binary", "payload": "%%% not base64"}',
        '{"type": "system", "payload": ["command", "subscribe"]}',
        '{"type": "system", "payload": null}',
        '{"payload": {"command": "subscribe", "channel": "x"}}',
        "\u0000\u0001 control characters",
        '{"type": "text", "payload": "' + "\\ud800" + '"}',
    ],
)
async def test_non_frames_are_handled_as_text_messages(
    node: NodeProcess, ws_connect: WsConnect, raw: str
) -> None:
    client = await ws_connect(node.ws_url)
    await client.send_text(raw)
    reply = await client.recv_json()
    assert reply["type"] == "system"
    assert reply["payload"] == "Message received"


async def test_a_pong_frame_gets_no_reply(node: NodeProcess, ws_connect: WsConnect) -> None:
    client = await ws_connect(node.ws_url)
    await client.send_json({"type": "pong"})
    await client.sync()
    assert list(client.buffer) == []


# -- commands that cannot be carried out -----------------------------------------------


@pytest.mark.parametrize("name", ["explode", "SUBSCRIBE", "", "x" * 1000, "subscribe "])
async def test_unknown_commands(node: NodeProcess, ws_connect: WsConnect, name: str) -> None:
    client = await ws_connect(node.ws_url)
    reply = await assert_refused(client, command(name), "unknown_command")
    assert reply["metadata"]["command"] == name
    assert len(reply["payload"]) < 200


@pytest.mark.parametrize("name", [5, None, ["subscribe"], {"c": 1}, True])
async def test_commands_that_are_not_strings(
    node: NodeProcess, ws_connect: WsConnect, name: Any
) -> None:
    client = await ws_connect(node.ws_url)
    await assert_refused(client, command(name), "invalid_command")


@pytest.mark.parametrize("name", ["subscribe", "unsubscribe", "publish", "presence"])
async def test_missing_channel(node: NodeProcess, ws_connect: WsConnect, name: str) -> None:
    client = await ws_connect(node.ws_url)
    reply = await assert_refused(client, command(name, data=1), "invalid_command")
    assert reply["metadata"]["command"] == name


INVALID_CHANNELS: list[Any] = [
    "",
    "x" * 256,
    "a\nb",
    "nul\u0000",
    "tab\tname",
    "esc\u001b[31m",
    "del\u007f",
    "line\u2028separator",
    5,
    None,
    ["chat"],
    {"name": "chat"},
    True,
]


@pytest.mark.parametrize("channel", INVALID_CHANNELS, ids=lambda v: repr(v)[:24])
@pytest.mark.parametrize("name", ["subscribe", "unsubscribe", "publish", "presence"])
async def test_invalid_channel_names(
    node: NodeProcess, ws_connect: WsConnect, name: str, channel: Any
) -> None:
    client = await ws_connect(node.ws_url)
    await assert_refused(client, command(name, channel=channel, data=1), "invalid_channel")


async def test_longest_valid_channel_name(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(node.ws_url)
    name = "n" * 255
    assert (await client.command("subscribe", channel=name))["metadata"]["ok"] is True


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({}, "missing data"),
        ({"data": 1, "event": 5}, "event not a string"),
        ({"data": 1, "event": ""}, "empty event"),
        ({"data": 1, "event": ["e"]}, "event a list"),
    ],
)
async def test_bad_publish_fields(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str, fields: dict[str, Any], why: str
) -> None:
    listener = await ws_connect(node.ws_url)
    await listener.command("subscribe", channel=channel_name)
    client = await ws_connect(node.ws_url)
    frame = command("publish", channel=channel_name, **fields)
    await assert_refused(client, frame, "invalid_command")
    await listener.sync()
    assert listener.take(in_channel(channel_name)) == []


@pytest.mark.parametrize(
    "channel",
    ["a.b", "*", ">", "a.*.>", "chat/../../etc", "{{x}}", "名前", "emoji 😀", "'; DROP --", "%2F"],
)
async def test_hostile_but_valid_names_are_just_data(
    node: NodeProcess, ws_connect: WsConnect, channel: str
) -> None:
    """Names that look like broker wildcards or paths address exactly one channel."""
    member = await ws_connect(node.ws_url)
    bystander = await ws_connect(node.ws_url)
    await member.command("subscribe", channel=channel)
    await bystander.command("subscribe", channel=channel + "x")
    reply = await member.command("publish", channel=channel, data="exact")
    assert reply["metadata"]["ok"] is True
    frame = await member.recv_until(in_channel(channel))
    assert frame["payload"] == "exact"
    await bystander.sync()
    assert bystander.take(lambda f: f.get("payload") == "exact") == []


@pytest.mark.parametrize(
    "path",
    ["/ws/" + "x" * 256, "/ws/a%0Ab", "/ws/nul%00", "/ws/esc%1B"],
)
async def test_invalid_channel_in_the_path_is_refused(
    node: NodeProcess, ws_connect: WsConnect, path: str
) -> None:
    client = await ws_connect(node.ws_base + path, welcome=False)
    refusal = await client.recv_json()
    assert refusal["type"] == "system"
    assert refusal["metadata"]["ok"] is False
    assert refusal["metadata"]["error"] == "invalid_channel"
    closed = await client.expect_close()
    assert closed.code == 1008


# -- frame size, binary and invalid UTF-8 ----------------------------------------------


async def test_a_frame_at_the_size_limit_is_accepted(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(node.ws_url)
    await client.send_text("x" * MAX_SIZE)
    assert (await client.recv_json())["payload"] == "Message received"


@pytest.mark.parametrize(
    ("frame", "options"),
    [
        ("x" * (MAX_SIZE + 1), {}),
        ("€" * (MAX_SIZE // 3 + 1), {}),  # few characters, too many UTF-8 bytes
        (b"\x00" * (MAX_SIZE + 1), {}),
        ("y" * (MAX_SIZE * 4), {"compression": "deflate"}),  # small on the wire only
        ('{"type": "json", "payload": "' + "z" * MAX_SIZE + '"}', {}),
    ],
    ids=["text", "utf8", "binary", "deflated", "json"],
)
async def test_frames_over_the_size_limit_close_with_1009(
    node: NodeProcess, ws_connect: WsConnect, frame: str | bytes, options: dict[str, Any]
) -> None:
    bystander = await ws_connect(node.ws_url)
    client = await ws_connect(node.ws_url, **options)
    await client.ws.send(frame)
    closed = await client.expect_close()
    assert closed.code == 1009
    assert (await bystander.command("ping"))["type"] == "pong"


async def test_binary_frames_are_client_messages(node: NodeProcess, ws_connect: WsConnect) -> None:
    client = await ws_connect(node.ws_url)
    for data in (b"\x00\x01\x02", b"", b'{"type": "system", "payload": {"command": "ping"}}'):
        await client.send_bytes(data)
        reply = await client.recv_json()
        assert (reply["type"], reply["payload"]) == ("system", "Message received")


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    bystander = await ws_connect(node.ws_url)
    client = await ws_connect(node.ws_url)
    await client.ws.send(b"\xff\xfe not utf-8", text=True)
    assert (await client.expect_close()).code == 1007
    assert (await bystander.command("ping"))["type"] == "pong"


# -- floods -------------------------------------------------------------------------


async def test_subscribe_flood_hits_the_subscription_limit(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url)
    other = await ws_connect(node.ws_url)
    ids = [
        await client.send_command("subscribe", channel=f"{channel_name}:{i}")
        for i in range(MAX_SUBSCRIPTIONS * 2)
    ]
    replies = [await client.reply(request_id) for request_id in ids]
    accepted = [r for r in replies if r["metadata"]["ok"]]
    refused = [r for r in replies if not r["metadata"]["ok"]]
    assert len(accepted) == MAX_SUBSCRIPTIONS
    assert replies[:MAX_SUBSCRIPTIONS] == accepted
    assert len(refused) == MAX_SUBSCRIPTIONS
    assert {r["metadata"]["error"] for r in refused} == {"limit_reached"}
    # re-subscribing to a channel it already has is no new subscription
    again = await client.command("subscribe", channel=f"{channel_name}:0")
    assert again["metadata"]["ok"] is True
    # the node serves everyone meanwhile, and a freed slot can be used again
    assert (await other.command("subscribe", channel=f"{channel_name}:0"))["metadata"]["ok"]
    await client.command("unsubscribe", channel=f"{channel_name}:0")
    retry = await client.command("subscribe", channel=f"{channel_name}:{MAX_SUBSCRIPTIONS}")
    assert retry["metadata"]["ok"] is True
    presence = await other.command("presence", channel=f"{channel_name}:0")
    assert presence["payload"]["count"] == 1


async def test_the_subscription_limit_also_applies_to_the_channel_endpoint(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    client = await ws_connect(node.ws_channel_url(channel_name))
    await client.recv_until(reply_to("subscribe"))
    for i in range(MAX_SUBSCRIPTIONS - 1):
        assert (await client.command("subscribe", channel=f"{channel_name}:{i}"))["metadata"]["ok"]
    refused = await client.command("subscribe", channel=f"{channel_name}:last")
    assert refused["metadata"]["error"] == "limit_reached"


async def test_a_flood_of_bad_frames_does_not_disturb_others(
    node: NodeProcess, ws_connect: WsConnect, channel_name: str
) -> None:
    flooder = await ws_connect(node.ws_url)
    listener = await ws_connect(node.ws_url)
    await listener.command("subscribe", channel=channel_name)
    bad = ['{"type": "system", "payload": {"command": 1}}', "{", '{"type": "nope"}', "\x00"]
    for i in range(200):
        await flooder.send_text(bad[i % len(bad)])
    for _ in range(200):
        await flooder.recv_json()
    reply = await flooder.command("publish", channel=channel_name, data="still here")
    assert reply["metadata"]["ok"] is True
    assert (await listener.recv_until(in_channel(channel_name)))["payload"] == "still here"
