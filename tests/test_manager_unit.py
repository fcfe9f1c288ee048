"""WebSocketManager in-process: registry, fan-out, heartbeat, slow consumers,
the message handler hook and route merging.

Connections here are real :class:`~service.connection.Connection` objects
whose socket side is a :class:`Sink` that records the ASGI events it is
sent (and can stall, like a client that stopped reading)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
from litestar import get
from litestar.testing import TestClient
from support.metrics import metric_value, parse_metrics
from support.polling import eventually

from backends import MemoryBackplane
from service import (
    BroadcastOptions,
    ChannelManager,
    CloseCode,
    ConnectionMetadata,
    ConnectionNotFound,
    MessageContext,
    RtforgeError,
    Settings,
    WebSocketManager,
    WebSocketMessage,
    create_app,
    get_websocket_manager,
    websocket_routes,
)
from service.connection import Connection
from service.protocol import ClientProtocol


class Sink:
    """The sending half of a socket: records every event it is sent. While
    ``gate`` is clear, sends wait, like a socket whose peer stopped reading."""

    def __init__(self, *, stalled: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        if not stalled:
            self.gate.set()

    async def send(self, event: dict[str, Any]) -> None:
        await self.gate.wait()
        self.events.append(event)

    @property
    def texts(self) -> list[str]:
        return [e["text"] for e in self.events if e["type"] == "websocket.send"]

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self.texts]

    @property
    def close_code(self) -> int | None:
        closes = [e["code"] for e in self.events if e["type"] == "websocket.close"]
        return closes[0] if closes else None


async def test_broadcast() -> None:
    """The seed's example, as written: no connections, no recipients."""
    manager = WebSocketManager()

    msg = WebSocketMessage.text("Test")
    count = await manager.broadcast(msg, None)
    assert count == 0


@pytest.fixture
async def manager() -> AsyncIterator[WebSocketManager]:
    manager = WebSocketManager(Settings(node_id="unit", send_queue_size=8))
    await manager.start()
    yield manager
    await manager.stop(timeout=1.0)


async def connect(
    manager: WebSocketManager, sink: Sink | None = None, **metadata: Any
) -> tuple[Connection, Sink]:
    sink = sink or Sink()
    conn = await manager.register(sink.send, ConnectionMetadata(**metadata))
    await eventually(lambda: _has_frames(sink), message="welcome frame")
    return conn, sink


async def _has_frames(sink: Sink, count: int = 1) -> bool:
    return len(sink.texts) >= count


async def frames_of(sink: Sink, count: int) -> list[dict[str, Any]]:
    await eventually(lambda: _has_frames(sink, count), timeout=5, message=f"{count} frames")
    return sink.frames


async def test_welcome_frame_comes_first_and_names_the_connection(
    manager: WebSocketManager,
) -> None:
    conn, sink = await connect(manager)
    welcome = sink.frames[0]
    assert welcome["type"] == "system"
    assert welcome["payload"] == "WebSocket connected"
    assert welcome["metadata"]["connection_id"] == conn.id


async def test_broadcast_reaches_every_connection(manager: WebSocketManager) -> None:
    (_, a), (_, b) = await connect(manager), await connect(manager)
    assert await manager.broadcast(WebSocketMessage.text("Hello everyone!")) == 2
    for sink in (a, b):
        assert (await frames_of(sink, 2))[1]["payload"] == "Hello everyone!"


async def test_a_frame_is_encoded_once_for_all_recipients(manager: WebSocketManager) -> None:
    sinks = [(await connect(manager))[1] for _ in range(3)]
    await manager.broadcast(WebSocketMessage.json({"big": "x" * 1000}))
    for sink in sinks:
        await frames_of(sink, 2)
    first = sinks[0].texts[1]
    assert all(sink.texts[1] is first for sink in sinks)


async def test_broadcast_only_to_and_exclude(manager: WebSocketManager) -> None:
    (a, sa), (b, sb), (c, sc) = [await connect(manager) for _ in range(3)]
    only = BroadcastOptions.new().with_only_to([a.id, c.id])
    assert await manager.broadcast(WebSocketMessage.text("only"), only) == 2
    excluding = BroadcastOptions.new().with_exclude([a.id])
    assert await manager.broadcast(WebSocketMessage.text("excl"), excluding) == 2
    assert await manager.broadcast(WebSocketMessage.text("none"), BroadcastOptions(only_to=[])) == 0
    await manager.send_to_connection(a.id, WebSocketMessage.text("end"))
    await manager.send_to_connection(b.id, WebSocketMessage.text("end"))
    await manager.send_to_connection(c.id, WebSocketMessage.text("end"))
    payloads = {}
    for name, sink in (("a", sa), ("b", sb), ("c", sc)):
        await eventually(partial(_last_is, sink, "end"), message=f"end frame for {name}")
        payloads[name] = [f["payload"] for f in sink.frames[1:]]
    assert payloads == {
        "a": ["only", "end"],
        "b": ["excl", "end"],
        "c": ["only", "excl", "end"],
    }


async def _last_is(sink: Sink, payload: str) -> bool:
    return bool(sink.frames) and sink.frames[-1].get("payload") == payload


async def test_broadcast_to_channel_and_send_to_channel(manager: WebSocketManager) -> None:
    (a, sa), (_b, sb) = await connect(manager), await connect(manager)
    channels = manager.channel_manager()
    await channels.subscribe("chat:vip", a.id)
    options = BroadcastOptions.new().to_channel("chat:vip")
    assert await manager.broadcast(WebSocketMessage.text("vip only"), options) == 1
    assert await manager.send_to_channel("chat:vip", WebSocketMessage.json({"n": 2})) == 1
    assert await manager.send_to_channel("nobody:here", WebSocketMessage.text("x")) == 0
    frames = await frames_of(sa, 3)
    assert [(f["payload"], f["channel"]) for f in frames[1:]] == [
        ("vip only", "chat:vip"), ({"n": 2}, "chat:vip"),
    ]
    assert len(sb.frames) == 1


async def test_send_to_connection(manager: WebSocketManager) -> None:
    conn, sink = await connect(manager)
    await manager.send_to_connection(conn.id, WebSocketMessage.event("user.joined", {"userId": 42}))
    frame = (await frames_of(sink, 2))[1]
    assert frame["payload"] == {"event": "user.joined", "data": {"userId": 42}}


async def test_send_to_unknown_connection_raises(manager: WebSocketManager) -> None:
    with pytest.raises(ConnectionNotFound) as caught:
        await manager.send_to_connection("no-such-id", WebSocketMessage.text("x"))
    assert caught.value.code == "connection_not_found"


async def test_connection_registry(manager: WebSocketManager) -> None:
    a, _ = await connect(manager, remote_addr="10.0.0.1:5000", user_agent="ua", custom={"u": 1})
    b, _ = await connect(manager)
    assert await manager.connection_count() == 2
    assert set(await manager.get_connection_ids()) == {a.id, b.id}
    meta = await manager.get_connection_metadata(a.id)
    assert meta is not None
    assert (meta.remote_addr, meta.user_agent, meta.custom) == ("10.0.0.1:5000", "ua", {"u": 1})
    assert meta.connected_at > 0
    assert await manager.get_connection_metadata("unknown") is None


async def test_ping_all_queues_a_ping_frame_to_everyone(manager: WebSocketManager) -> None:
    (_, a), (_, b) = await connect(manager), await connect(manager)
    assert manager.ping_all() == 2
    for sink in (a, b):
        ping = (await frames_of(sink, 2))[1]
        assert ping["type"] == "ping"
        assert "payload" not in ping


async def test_close_connection_flushes_then_closes_and_forgets(manager: WebSocketManager) -> None:
    conn, sink = await connect(manager)
    await manager.channel_manager().subscribe("room", conn.id)
    await manager.send_to_connection(conn.id, WebSocketMessage.text("last words"))
    assert await manager.close_connection(conn.id) is True
    await eventually(lambda: _closed(sink), message="close event")
    assert sink.frames[-1]["payload"] == "last words"
    assert sink.close_code == 1000
    assert int(CloseCode.NORMAL) == 1000
    assert await manager.connection_count() == 0
    assert await manager.channel_manager().subscriber_count("room") == 0
    assert await manager.close_connection(conn.id) is False


async def _closed(sink: Sink) -> bool:
    return sink.close_code is not None


async def test_close_all(manager: WebSocketManager) -> None:
    sinks = [(await connect(manager))[1] for _ in range(3)]
    assert await manager.close_all() == 3
    for sink in sinks:
        await eventually(partial(_closed, sink), message="close event")
    assert await manager.connection_count() == 0


async def test_channel_manager_is_bound_to_the_node(manager: WebSocketManager) -> None:
    channels = manager.channel_manager()
    assert isinstance(channels, ChannelManager)
    assert manager.channel_manager() is channels
    conn, _ = await connect(manager)
    await channels.subscribe("bound", conn.id)
    assert await manager.send_to_channel("bound", WebSocketMessage.text("x")) == 1


async def test_unregister_cleans_up_every_membership(manager: WebSocketManager) -> None:
    conn, _ = await connect(manager)
    channels = manager.channel_manager()
    for name in ("a", "b", "c"):
        await channels.subscribe(name, conn.id)
    await manager.unregister(conn)
    assert await manager.connection_count() == 0
    assert await channels.list_channels() == []
    assert await manager.send_to_channel("a", WebSocketMessage.text("x")) == 0


async def test_slow_consumer_is_closed_and_nobody_else_waits(manager: WebSocketManager) -> None:
    fast_conn, fast = await connect(manager)
    slow_sink = Sink(stalled=True)
    slow_conn = await manager.register(slow_sink.send, ConnectionMetadata())
    channels = manager.channel_manager()
    await channels.subscribe("firehose", fast_conn.id)
    await channels.subscribe("firehose", slow_conn.id)
    sent = 20  # well past the queue limit of 8
    for i in range(sent):
        await manager.send_to_channel("firehose", WebSocketMessage.json(i))
        await asyncio.sleep(0)  # let the fast writer run, as the event loop would
    frames = await frames_of(fast, 1 + sent)
    assert [f["payload"] for f in frames[1:]] == list(range(sent))
    assert slow_conn.closed
    assert slow_conn.close_code is CloseCode.SLOW_CONSUMER
    assert int(CloseCode.SLOW_CONSUMER) == 1013
    await eventually(lambda: _count_is(manager, 1), message="slow consumer unregistered")
    assert await channels.get_subscribers("firehose") == {fast_conn.id}
    samples = parse_metrics(manager.metrics.render().decode())
    assert metric_value(samples, "rtforge_slow_consumer_disconnects_total") == 1
    slow_sink.gate.set()  # the client reads again: it gets the close frame
    await eventually(lambda: _closed(slow_sink), message="close frame to the slow consumer")
    assert slow_sink.close_code == 1013


async def _count_is(manager: WebSocketManager, count: int) -> bool:
    return await manager.connection_count() == count


async def test_heartbeat_pings_then_closes_a_silent_connection() -> None:
    settings = Settings(node_id="hb", heartbeat_interval=0.05, heartbeat_timeout=0.3)
    manager = WebSocketManager(settings)
    await manager.start()
    try:
        conn, sink = await connect(manager)
        await manager.channel_manager().subscribe("room", conn.id)
        await eventually(lambda: _closed(sink), timeout=3, message="heartbeat close")
        assert sink.close_code == CloseCode.HEARTBEAT_TIMEOUT
        assert [f["type"] for f in sink.frames[1:]].count("ping") >= 2
        assert await manager.connection_count() == 0
        assert await manager.channel_manager().subscriber_count("room") == 0
    finally:
        await manager.stop(timeout=1.0)


async def test_stop_flushes_queued_frames_then_closes_with_going_away() -> None:
    manager = WebSocketManager(Settings(node_id="stop"))
    await manager.start()
    conn, sink = await connect(manager)
    await manager.send_to_connection(conn.id, WebSocketMessage.text("bye"))
    await manager.stop(timeout=1.0)
    assert sink.frames[-1]["payload"] == "bye"
    assert sink.close_code == 1001
    assert int(CloseCode.GOING_AWAY) == 1001
    assert not manager.ready


async def test_manager_on_a_given_backplane_shares_its_state() -> None:
    backplane = MemoryBackplane(node_id="shared")
    manager = WebSocketManager(Settings(node_id="shared"), backplane)
    await manager.start()
    try:
        conn, _ = await connect(manager)
        assert await backplane.connection_ids() == [conn.id]
    finally:
        await manager.stop(timeout=1.0)


# -- the client protocol and the message handler hook ---------------------


async def test_default_handler_acknowledges_client_messages(manager: WebSocketManager) -> None:
    conn, sink = await connect(manager)
    await ClientProtocol(manager).handle_text(conn, "hello")
    reply = (await frames_of(sink, 2))[1]
    assert (reply["type"], reply["payload"]) == ("system", "Message received")


async def test_custom_message_handler_gets_message_and_context() -> None:
    seen: list[tuple[WebSocketMessage, MessageContext]] = []

    async def handler(message: WebSocketMessage, context: MessageContext) -> WebSocketMessage:
        seen.append((message, context))
        return WebSocketMessage.json({"echo": message.payload})

    manager = WebSocketManager(Settings(node_id="hook"), message_handler=handler)
    await manager.start()
    try:
        conn, sink = await connect(manager, user_agent="agent")
        protocol = ClientProtocol(manager)
        await protocol.handle_text(conn, '{"type": "json", "payload": {"a": 1}}')
        await protocol.handle_bytes(conn, b"\x01\x02")
        frames = await frames_of(sink, 3)
        assert frames[1]["payload"] == {"echo": {"a": 1}}
        assert frames[2]["payload"] == {"echo": "AQI="}
        message, context = seen[0]
        assert message.type.value == "json"
        assert context.connection_id == conn.id
        assert context.metadata.user_agent == "agent"
        assert context.manager is manager
    finally:
        await manager.stop(timeout=1.0)


async def test_a_failing_handler_gets_an_error_reply_not_a_crash() -> None:
    async def handler(message: WebSocketMessage, context: MessageContext) -> WebSocketMessage:
        raise RuntimeError("application bug")

    manager = WebSocketManager(Settings(node_id="bug"), message_handler=handler)
    await manager.start()
    try:
        conn, sink = await connect(manager)
        await ClientProtocol(manager).handle_text(conn, "hello")
        reply = (await frames_of(sink, 2))[1]
        assert reply["metadata"]["ok"] is False
        assert reply["metadata"]["error"] == "handler_error"
        assert not conn.closed
    finally:
        await manager.stop(timeout=1.0)


def test_get_websocket_manager_without_a_running_node_raises() -> None:
    with pytest.raises(RtforgeError):
        get_websocket_manager()


def test_websocket_routes_serve_ws_and_ws_channel() -> None:
    paths = {path for handler in websocket_routes() for path in handler.paths}
    assert paths == {"/ws", "/ws/{channel:str}"}


def test_an_app_merges_its_routes_and_message_handler_with_the_node() -> None:
    async def handler(message: WebSocketMessage, context: MessageContext) -> WebSocketMessage:
        return WebSocketMessage.json({"echo": message.payload, "from": context.connection_id})

    @get("/hello", sync_to_thread=False)
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    app = create_app(Settings(node_id="app"), message_handler=handler, route_handlers=[hello])
    with TestClient(app) as client:
        assert client.get("/hello").json() == {"hello": "world"}
        assert get_websocket_manager().node_id == "app"
        with client.websocket_connect("/ws") as ws:
            welcome = ws.receive_json()
            ws.send_text("hi")
            assert ws.receive_json()["payload"] == {
                "echo": "hi", "from": welcome["metadata"]["connection_id"],
            }
    with pytest.raises(RtforgeError):
        get_websocket_manager()
