"""The seed's example services and domain events, through real sockets, on a
NATS cluster of two ``rtforge serve`` nodes.

The services run in this test process on a third cluster member: a
:class:`~service.WebSocketManager` on the same NATS cluster that holds no
sockets (as an application's worker would). What they send crosses the
broker and reaches WebSocket clients on both node processes, which proves
they use nothing but the public, cluster-wide API.

The nodes run with ``--events-subject``: messages that another service
publishes there with nats-py become ``event`` frames, each delivered once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import nats
import pytest
from support.brokers import Broker
from support.client import Frame, WsClient, WsConnect, in_channel
from support.cluster import Cluster, on_every_node, quiet, subscribe
from support.metrics import metric_value, scrape
from support.nodes import NodePool
from support.polling import eventually

from service import Settings, WebSocketManager, create_node
from service.errors import MessageInvalid
from service.events import DomainEvent, publish_domain_event
from service.examples import (
    ChatMessage,
    ChatService,
    DashboardMetrics,
    DashboardService,
    LiveUpdateService,
    UpdateAction,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

EVENTS_SUBJECT = f"t.app.events.{uuid.uuid4().hex[:8]}"


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def nats_cluster(
    nats_broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two ready nodes on NATS, bridging ``EVENTS_SUBJECT``."""
    pool = NodePool(tmp_path_factory.mktemp("examples-cluster"))
    cluster = Cluster("nats", pool, broker=nats_broker, events_subject=EVENTS_SUBJECT)
    try:
        cluster.start_nodes(2)
        cluster.wait_formed()
        yield cluster
    finally:
        pool.close()


@pytest.fixture
async def member(nats_cluster: Cluster) -> AsyncIterator[WebSocketManager]:
    """A socket-less cluster member in this process, for the services."""
    settings = Settings(
        backend="nats", nats_url=nats_cluster.broker_url or "", cluster_name=nats_cluster.name,
        node_id=unique(f"{nats_cluster.name}-py"), lease_ttl=nats_cluster.lease_ttl,
    )
    manager = create_node(settings).manager
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def two_per_node(cluster: Cluster, ws_connect: WsConnect) -> list[WsClient]:
    return [await ws_connect(cluster.node(i).ws_url) for i in (0, 0, 1, 1)]


async def member_sees(manager: WebSocketManager, channel: str, count: int) -> None:
    """Wait until the in-process member counts ``count`` subscribers."""
    async def check() -> bool:
        return await manager.channel_manager().subscriber_count(channel) == count

    await eventually(check, message=f"{count} subscribers of {channel} in the member's view")


def exact(frame: Frame) -> Frame:
    """The frame with its timestamp checked and removed, for exact comparisons."""
    frame = dict(frame)
    timestamp = frame.pop("timestamp")
    assert isinstance(timestamp, int) and timestamp > 1_700_000_000
    return frame


# -- ChatService -------------------------------------------------------------


async def test_chat_service_across_nodes(
    nats_cluster: Cluster, member: WebSocketManager, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    chat = ChatService(member)
    room = unique("general")
    channel = f"chat:{room}"
    assert await chat.create_room(room, "General Discussion") is True
    assert await chat.create_room(room, "General Discussion") is False
    # the room record is replicated: both nodes list it with its description
    await on_every_node(
        http, nats_cluster.live_nodes, f"/api/channels/{channel}",
        lambda c: c["description"], "General Discussion",
    )
    alice = await ws_connect(nats_cluster.node(0).ws_url)
    bob = await ws_connect(nats_cluster.node(1).ws_url)
    await subscribe(alice, channel)
    await subscribe(bob, channel)
    await member_sees(member, channel, 2)
    assert await chat.room_user_count(room) == 2

    message = ChatMessage.new("Alice", "Hello everyone!")
    assert await chat.send_message(room, message) == 2
    expected = {
        "type": "event",
        "payload": {"event": "chat.message", "data": {
            "room": room, "id": message.id, "user": "Alice", "text": "Hello everyone!",
            "sent_at": message.sent_at,
        }},
        "channel": channel,
    }
    for client in (alice, bob):
        assert exact(await client.recv_until(in_channel(channel))) == expected

    assert await chat.notify_user_joined(room, "Bob") == 2
    assert await chat.notify_user_left(room, "Alice") == 2
    for client in (alice, bob):
        joined, left = await client.recv_many(in_channel(channel), 2)
        assert exact(joined) == {
            "type": "event", "channel": channel,
            "payload": {"event": "chat.user_joined", "data": {"room": room, "user": "Bob"}},
        }
        assert exact(left) == {
            "type": "event", "channel": channel,
            "payload": {"event": "chat.user_left", "data": {"room": room, "user": "Alice"}},
        }
    await quiet([alice, bob], in_channel(channel))

    rooms = {r.name: r for r in await chat.list_rooms()}
    assert rooms[room].channel == channel
    assert rooms[room].description == "General Discussion"
    assert rooms[room].user_count == 2


async def test_a_browser_style_publish_is_a_chat_message(
    nats_cluster: Cluster, member: WebSocketManager, ws_connect: WsConnect
) -> None:
    """Clients may publish chat messages themselves (as the demo app does):
    the frame is the same as ChatService's and parses as a ChatMessage."""
    room = unique("lobby")
    channel = f"chat:{room}"
    alice = await ws_connect(nats_cluster.node(0).ws_url)
    bob = await ws_connect(nats_cluster.node(1).ws_url)
    await subscribe(bob, channel)
    await member_sees(member, channel, 1)
    sent = {"room": room, **ChatMessage.new("Alice", "from a browser").to_dict()}
    reply = await alice.command("publish", channel=channel, event="chat.message", data=sent)
    assert reply["metadata"]["recipients"] == 1
    frame = await bob.recv_until(in_channel(channel))
    assert frame["payload"]["event"] == "chat.message"
    parsed = ChatMessage.from_dict(frame["payload"]["data"])
    assert (parsed.user, parsed.text, parsed.id) == ("Alice", "from a browser", sent["id"])


def test_chat_message_validation() -> None:
    for user, text in (("", "x"), ("Alice", ""), ("Alice", "x" * 4001), ("x" * 65, "hi")):
        with pytest.raises(MessageInvalid):
            ChatMessage.new(user, text)
    with pytest.raises(MessageInvalid):
        ChatMessage.from_dict(["not", "an", "object"])
    message = ChatMessage.from_dict({"user": "Bob", "text": "hi", "sent_at": 5})
    assert message.sent_at == 5.0 and message.id


# -- LiveUpdateService ---------------------------------------------------------


async def test_live_updates_reach_subscribers_of_the_entity_type(
    nats_cluster: Cluster, member: WebSocketManager, ws_connect: WsConnect
) -> None:
    live = LiveUpdateService(member)
    entity = unique("user")
    channel = f"live:{entity}"
    watchers = [await ws_connect(nats_cluster.node(i).ws_url) for i in (0, 1)]
    other = await ws_connect(nats_cluster.node(1).ws_url)
    for client in watchers:
        await subscribe(client, channel)
    await subscribe(other, f"live:{unique('post')}")
    await member_sees(member, channel, 2)

    assert await live.notify_created(entity, "123", {"name": "Alice"}) == 2
    assert await live.notify_updated(entity, 123, {"name": "Alice B."}) == 2
    assert await live.notify_deleted(entity, "123") == 2
    for client in watchers:
        frames = [exact(f) for f in await client.recv_many(in_channel(channel), 3)]
        actions = [UpdateAction.CREATED, UpdateAction.UPDATED, UpdateAction.DELETED]
        datas = [{"name": "Alice"}, {"name": "Alice B."}, None]
        for frame, action, data in zip(frames, actions, datas, strict=True):
            updated_at = frame["payload"]["data"].pop("updated_at")
            assert isinstance(updated_at, float)
            assert frame == {
                "type": "event", "channel": channel,
                "payload": {"event": f"{entity}.{action}", "data": {
                    "entity_type": entity, "entity_id": "123", "action": action.value,
                    "data": data,
                }},
            }
    await quiet([*watchers, other])


# -- DashboardService ----------------------------------------------------------


async def test_dashboard_metrics_frame(
    nats_cluster: Cluster, member: WebSocketManager, ws_connect: WsConnect
) -> None:
    channel = unique("dashboard:test")
    dashboard = DashboardService(member, channel=channel)
    viewer = await ws_connect(nats_cluster.node(1).ws_url)
    await subscribe(viewer, channel)
    await member_sees(member, channel, 1)
    assert await dashboard.viewers() == 1
    metrics = DashboardMetrics(
        active_users=42, requests_per_second=123.45, memory_usage_mb=256.0,
        cpu_usage_percent=45.5,
    )
    assert await dashboard.send_metrics(metrics) == 1
    assert exact(await viewer.recv_until(in_channel(channel))) == {
        "type": "event", "channel": channel,
        "payload": {"event": "dashboard.metrics", "data": {
            "active_users": 42, "requests_per_second": 123.45, "memory_usage_mb": 256.0,
            "cpu_usage_percent": 45.5,
        }},
    }


async def test_every_node_feeds_the_demo_dashboard(
    nats_cluster: Cluster, ws_connect: WsConnect
) -> None:
    """While someone watches ``dashboard:metrics``, each node sends one
    sample per second: the page can add the nodes up."""
    viewer = await ws_connect(nats_cluster.node(0).ws_url)
    await subscribe(viewer, "dashboard:metrics")
    seen: dict[str, dict[str, Any]] = {}
    expected = {n.node_id for n in nats_cluster.live_nodes}
    while set(seen) != expected:
        frame = await viewer.recv_until(in_channel("dashboard:metrics"), timeout=5)
        assert frame["payload"]["event"] == "dashboard.metrics"
        data = frame["payload"]["data"]
        seen[data["node_id"]] = data
    for data in seen.values():
        assert set(data) == {
            "active_users", "requests_per_second", "memory_usage_mb", "cpu_usage_percent",
            "node_id", "connections", "deliveries_per_second",
        }
        assert data["active_users"] >= 1
        assert data["memory_usage_mb"] > 0
    assert seen[nats_cluster.node(0).node_id]["connections"] >= 1


# -- domain events -------------------------------------------------------------


async def test_in_process_domain_events_reach_everyone_or_a_channel(
    nats_cluster: Cluster, member: WebSocketManager, ws_connect: WsConnect
) -> None:
    clients = await two_per_node(nats_cluster, ws_connect)
    channel = unique("orders")
    await subscribe(clients[0], channel)
    await subscribe(clients[3], channel)
    await member_sees(member, channel, 2)

    tag = unique("evt")
    shipped = DomainEvent("order.shipped", {"order_id": 7, "tag": tag})
    assert await publish_domain_event(member, shipped, channel=channel) == 2
    for client in (clients[0], clients[3]):
        assert exact(await client.recv_until(in_channel(channel))) == {
            "type": "event", "channel": channel,
            "payload": {"event": "order.shipped", "data": {"order_id": 7, "tag": tag}},
        }

    everyone = DomainEvent("maintenance.scheduled", {"in_minutes": 5, "tag": tag})
    recipients = await publish_domain_event(member, everyone)
    assert recipients >= 4

    def is_notice(frame: Frame) -> bool:
        return frame.get("type") == "event" and frame["payload"]["event"] == everyone.name

    for client in clients:
        assert exact(await client.recv_until(is_notice)) == {
            "type": "event",
            "payload": {"event": "maintenance.scheduled", "data": {"in_minutes": 5, "tag": tag}},
        }
    await quiet(clients)


async def publish_external(broker_url: str, *bodies: bytes) -> None:
    """What any other service does: publish on the events subject."""
    nc = await nats.connect(broker_url)
    try:
        for body in bodies:
            await nc.publish(EVENTS_SUBJECT, body)
        await nc.flush()
    finally:
        await nc.close()


async def test_events_from_another_service_arrive_exactly_once(
    nats_cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    clients = await two_per_node(nats_cluster, ws_connect)
    channel = unique("orders")
    await subscribe(clients[1], channel)
    await subscribe(clients[2], channel)
    tag = unique("ext")
    broadcast = {"name": "price.changed", "payload": {"sku": "A-1", "tag": tag}}
    to_channel = {"name": "order.shipped", "payload": {"id": 9, "tag": tag}, "channel": channel}
    assert nats_cluster.broker_url
    await publish_external(
        nats_cluster.broker_url, json.dumps(broadcast).encode(), json.dumps(to_channel).encode()
    )
    for client in clients:
        frame = await client.recv_until(lambda f: f.get("type") == "event")
        assert exact(frame) == {
            "type": "event",
            "payload": {"event": "price.changed", "data": {"sku": "A-1", "tag": tag}},
        }
    for client in (clients[1], clients[2]):
        assert exact(await client.recv_until(in_channel(channel))) == {
            "type": "event", "channel": channel,
            "payload": {"event": "order.shipped", "data": {"id": 9, "tag": tag}},
        }
    await quiet(clients)  # nothing twice, nothing to non-subscribers
    for node in nats_cluster.live_nodes:
        samples = await scrape(http, node.http_url)
        assert metric_value(
            samples, "rtforge_domain_events_total", source="external", outcome="delivered"
        ) >= 2
        assert metric_value(samples, "rtforge_events_bridge_up") == 1


async def test_bad_event_messages_are_dropped_with_one_log_line(
    nats_cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    clients = [await ws_connect(nats_cluster.node(i).ws_url) for i in (0, 1)]
    before = [
        metric_value(await scrape(http, n.http_url), "rtforge_domain_events_total",
                     source="external", outcome="dropped")
        for n in nats_cluster.live_nodes
    ]
    bad = [
        b"not json",
        b'["an", "array"]',
        b'{"payload": {"no": "name"}}',
        b'{"name": "", "payload": 1}',
        b'{"name": "x", "channel": ""}',
        b'{"name": "x", "channel": 5}',
        b"\xff\xfe",
    ]
    tag = unique("after")
    good = json.dumps({"name": "still.working", "payload": {"tag": tag}}).encode()
    assert nats_cluster.broker_url
    await publish_external(nats_cluster.broker_url, *bad, good)
    for client in clients:
        frame = await client.recv_until(lambda f: f.get("type") == "event")
        assert frame["payload"] == {"event": "still.working", "data": {"tag": tag}}
    await quiet(clients)
    for node, earlier in zip(nats_cluster.live_nodes, before, strict=True):
        samples = await scrape(http, node.http_url)
        dropped = metric_value(
            samples, "rtforge_domain_events_total", source="external", outcome="dropped"
        )
        assert dropped - earlier == len(bad)
        lines = [ln for ln in node.log_text().splitlines() if "events bridge: dropped" in ln]
        assert len(lines) >= len(bad)
        node.assert_log_clean()


async def test_events_bridge_on_redis(
    make_cluster: Any, ws_connect: WsConnect
) -> None:
    """The same bridge on a Redis cluster: a redis-py PUBLISH becomes one
    event frame per client."""
    subject = f"t:app:events:{uuid.uuid4().hex[:8]}"
    cluster: Cluster = make_cluster("redis", nodes=2, events_subject=subject)
    clients = [await ws_connect(cluster.node(i).ws_url) for i in (0, 1)]
    channel = unique("orders")
    await subscribe(clients[1], channel)
    import redis.asyncio as aioredis  # noqa: PLC0415 - only this test needs it

    assert cluster.broker_url
    publisher = aioredis.Redis.from_url(cluster.broker_url)
    try:
        receivers = await publisher.publish(
            subject, json.dumps({"name": "user.signed_up", "payload": {"id": 1}})
        )
        assert receivers == 2  # one subscription per node
        await publisher.publish(
            subject, json.dumps({"name": "order.paid", "payload": 3, "channel": channel})
        )
    finally:
        await publisher.aclose()
    for client in clients:
        frame = await client.recv_until(lambda f: f.get("type") == "event")
        assert frame["payload"] == {"event": "user.signed_up", "data": {"id": 1}}
    frame = await clients[1].recv_until(in_channel(channel))
    assert frame["payload"] == {"event": "order.paid", "data": 3}
    await quiet(clients)
