"""The cluster's behaviour, the same on every backend.

Each test runs three times: on three ``rtforge serve`` nodes sharing a NATS
broker, on three sharing a Redis broker, and on the one node of the in-memory
backend, where every "node i" below is that same node. So the three
backends provably behave alike: the same publishes reach the same clients
exactly once, the same counts come back from every node.

Clients on node ``i`` are opened with ``cluster.node(i)``. Counts are
eventually consistent across nodes, so tests wait for them with
:func:`~support.cluster.on_every_node` before asserting recipients.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from support.client import Frame, WsClient, WsConnect, in_channel, of_type
from support.cluster import Cluster, get_json, on_every_node, quiet, subscribe, tagged

pytestmark = pytest.mark.cluster


def unique(label: str) -> str:
    return f"{label}:{uuid.uuid4().hex[:10]}"


def path(channel: str) -> str:
    return quote(channel, safe="")


def meta(frame: Frame) -> dict[str, Any]:
    metadata = frame.get("metadata")
    assert isinstance(metadata, dict), f"frame without metadata: {frame}"
    return metadata


@pytest.fixture(autouse=True)
async def _idle_cluster(cluster: Cluster, http: httpx.AsyncClient) -> None:
    """Start every test on a cluster where the previous test's clients
    have left every node's view."""
    await on_every_node(
        http, cluster.live_nodes, "/api/stats", lambda s: s["connections"], 0, timeout=15
    )


async def clients_on_nodes(
    cluster: Cluster, ws_connect: WsConnect, per_node: int, nodes: int = 3
) -> list[WsClient]:
    """``per_node`` clients on each of ``nodes`` nodes, node-major order."""
    return [
        await ws_connect(cluster.node(index).ws_url)
        for index in range(nodes)
        for _ in range(per_node)
    ]


async def wait_subscribers(
    http: httpx.AsyncClient, cluster: Cluster, channel: str, count: int
) -> None:
    await on_every_node(
        http, cluster.live_nodes, f"/api/channels/{path(channel)}",
        lambda c: c["subscribers"], count,
    )


async def wait_connections(http: httpx.AsyncClient, cluster: Cluster, count: int) -> None:
    await on_every_node(http, cluster.live_nodes, "/api/stats", lambda s: s["connections"], count)


# -- the cluster itself ------------------------------------------------------


async def test_every_node_is_ready_and_sees_the_whole_cluster(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    assert len(cluster.live_nodes) == (3 if cluster.shared else 1)
    for node in cluster.live_nodes:
        ready = await http.get(f"{node.http_url}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["backplane"] is True
        stats = await get_json(http, node, "/api/stats")
        assert stats["node_id"] == node.node_id
        assert stats["backend"] == cluster.backend
        assert stats["nodes"] == cluster.node_ids
        assert stats["ready"] is True


# -- channel publish ---------------------------------------------------------


async def test_publish_reaches_every_subscriber_on_every_node_exactly_once(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel, tag = unique("pub"), uuid.uuid4().hex
    subscribers = await clients_on_nodes(cluster, ws_connect, per_node=2)
    publishers = await clients_on_nodes(cluster, ws_connect, per_node=1)
    for client in subscribers:
        await subscribe(client, channel)
    await wait_subscribers(http, cluster, channel, 6)
    per_source = 5

    async def from_client(index: int, client: WsClient) -> None:
        for seq in range(per_source):
            reply = await client.command(
                "publish", channel=channel, data={"tag": tag, "src": f"ws{index}", "seq": seq}
            )
            assert meta(reply)["ok"] is True, reply
            assert reply["payload"] == f"Published to channel: {channel}"
            assert meta(reply)["recipients"] == 6

    async def from_api(index: int) -> None:
        url = f"{cluster.node(index).http_url}/api/channels/{path(channel)}/publish"
        for seq in range(per_source):
            message = {"type": "json", "payload": {"tag": tag, "src": f"api{index}", "seq": seq}}
            response = await http.post(url, json=message)
            assert response.status_code == 200, response.text
            assert response.json() == {"recipients": 6}

    await asyncio.gather(
        *(from_client(i, c) for i, c in enumerate(publishers)),
        *(from_api(i) for i in range(3)),
    )
    expected = {(f"{kind}{i}", seq) for kind in ("ws", "api") for i in range(3)
                for seq in range(per_source)}
    for client in subscribers:
        frames = await client.recv_many(tagged(tag), len(expected))
        for frame in frames:
            assert frame["type"] == "json"
            assert frame["channel"] == channel
            assert isinstance(frame["timestamp"], int)
        got = [(f["payload"]["src"], f["payload"]["seq"]) for f in frames]
        assert Counter(got) == Counter(expected), f"duplicates or losses: {sorted(got)}"
        # Per-publisher order: each source's messages arrive in the order sent.
        for source in {src for src, _ in got}:
            seqs = [seq for src, seq in got if src == source]
            assert seqs == sorted(seqs), f"{source} out of order: {seqs}"
    # Nothing more: no duplicate arrives late, publishers were not subscribed.
    await quiet([*subscribers, *publishers], tagged(tag))


async def test_publish_of_an_event_and_a_publisher_that_is_subscribed(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel, tag = unique("evt"), uuid.uuid4().hex
    clients = await clients_on_nodes(cluster, ws_connect, per_node=1)
    for client in clients:
        await subscribe(client, channel)
    await wait_subscribers(http, cluster, channel, 3)
    reply = await clients[1].command(
        "publish", channel=channel, event="moved", data={"tag": tag, "x": 1}
    )
    assert meta(reply)["recipients"] == 3
    for client in clients:  # the publisher gets its own message too
        frame = await client.recv_until(tagged(tag))
        assert frame["type"] == "event"
        assert frame["payload"] == {"event": "moved", "data": {"tag": tag, "x": 1}}
        assert frame["channel"] == channel
    await quiet(clients, tagged(tag))


async def test_publish_to_a_channel_nobody_listens_to(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel = unique("empty")
    bystanders = await clients_on_nodes(cluster, ws_connect, per_node=1)
    for index in range(3):
        node = cluster.node(index)
        response = await http.post(
            f"{node.http_url}/api/channels/{path(channel)}/publish",
            json={"type": "text", "payload": "into the void"},
        )
        assert response.json() == {"recipients": 0}
    reply = await bystanders[0].command("publish", channel=channel, data={"tag": "void"})
    assert meta(reply)["recipients"] == 0
    await quiet(bystanders, in_channel(channel))


async def test_unsubscribe_stops_delivery_on_every_node(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel = unique("unsub")
    clients = await clients_on_nodes(cluster, ws_connect, per_node=1)
    for client in clients:
        await subscribe(client, channel)
    await wait_subscribers(http, cluster, channel, 3)
    reply = await clients[2].command("unsubscribe", channel=channel)
    assert meta(reply)["ok"] is True and meta(reply)["was_subscribed"] is True
    await wait_subscribers(http, cluster, channel, 2)
    tag = uuid.uuid4().hex
    response = await http.post(
        f"{cluster.node(2).http_url}/api/channels/{path(channel)}/publish",
        json={"type": "json", "payload": {"tag": tag}},
    )
    assert response.json() == {"recipients": 2}
    for client in clients[:2]:
        await client.recv_until(tagged(tag))
    await quiet(clients, tagged(tag))


# -- broadcast ---------------------------------------------------------------


async def test_broadcast_with_only_to_and_exclude_across_nodes(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    clients = await clients_on_nodes(cluster, ws_connect, per_node=2)  # c0 c1 | c2 c3 | c4 c5
    ids = [c.connection_id for c in clients]
    await wait_connections(http, cluster, 6)
    prefix = uuid.uuid4().hex
    cases: list[tuple[str, dict[str, Any], set[int]]] = [
        ("all", {}, set(range(6))),
        ("only", {"only_to": [ids[0], ids[4], "no-such-connection"]}, {0, 4}),
        ("exclude", {"exclude": [ids[1], ids[2]]}, {0, 3, 4, 5}),
        ("both", {"only_to": [ids[1], ids[3], ids[5]], "exclude": [ids[3]]}, {1, 5}),
        ("nobody", {"only_to": []}, set()),
        ("exclude-all", {"exclude": ids}, set()),
    ]
    for number, (name, options, targets) in enumerate(cases):
        node = cluster.node(number)
        body = {"message": {"type": "text", "payload": f"{prefix}:{name}"}, **options}
        response = await http.post(f"{node.http_url}/api/broadcast", json=body)
        assert response.status_code == 200, response.text
        assert response.json() == {"recipients": len(targets)}, name

    def ours(frame: Frame) -> bool:
        payload = frame.get("payload")
        return frame.get("type") == "text" and isinstance(payload, str) and (
            payload.startswith(f"{prefix}:")
        )

    for index, client in enumerate(clients):
        wanted = sorted(f"{prefix}:{name}" for name, _, t in cases if index in t)
        frames = await client.recv_many(ours, len(wanted))
        assert sorted(f["payload"] for f in frames) == wanted, f"client {index}"
        assert all("channel" not in f for f in frames)
    await quiet(clients, ours)


async def test_broadcast_to_a_channel_with_only_to_and_exclude(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel = unique("bcast")
    members = await clients_on_nodes(cluster, ws_connect, per_node=2)
    outsider = await ws_connect(cluster.node(1).ws_url)
    for client in members:
        await subscribe(client, channel)
    await wait_subscribers(http, cluster, channel, 6)
    ids = [c.connection_id for c in members]
    tag = uuid.uuid4().hex
    body = {
        "message": {"type": "json", "payload": {"tag": tag}},
        "channel": channel,
        "only_to": [ids[0], ids[2], ids[5], outsider.connection_id],
        "exclude": [ids[2]],
    }
    response = await http.post(f"{cluster.node(1).http_url}/api/broadcast", json=body)
    assert response.json() == {"recipients": 2}
    for index in (0, 5):
        frame = await members[index].recv_until(tagged(tag))
        assert frame["channel"] == channel
    await quiet([*members, outsider], tagged(tag))


# -- targeted send -------------------------------------------------------------


async def test_send_to_a_connection_on_another_node(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    clients = await clients_on_nodes(cluster, ws_connect, per_node=1)
    target = clients[2]
    # Every node knows where the target lives.
    await on_every_node(
        http, cluster.live_nodes, f"/api/connections/{target.connection_id}",
        lambda c: c["node_id"], cluster.node(2).node_id,
    )
    tag = uuid.uuid4().hex
    for index in range(3):
        response = await http.post(
            f"{cluster.node(index).http_url}/api/connections/{target.connection_id}/send",
            json={"type": "event", "payload": {"event": "dm", "data": {"tag": tag, "n": index}}},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"sent": True}
    frames = await target.recv_many(tagged(tag), 3)
    assert sorted(f["payload"]["data"]["n"] for f in frames) == [0, 1, 2]
    assert all(f["type"] == "event" and "channel" not in f for f in frames)
    await quiet(clients, tagged(tag))


async def test_send_to_an_unknown_connection_is_404_on_every_node(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    for node in cluster.live_nodes:
        response = await http.post(
            f"{node.http_url}/api/connections/{uuid.uuid4()}/send",
            json={"type": "text", "payload": "anyone?"},
        )
        assert response.status_code == 404
        assert response.json()["error"] == "connection_not_found"
        response = await http.get(f"{node.http_url}/api/connections/{uuid.uuid4()}")
        assert response.status_code == 404


async def test_send_to_a_connection_that_left_is_404(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    gone = await ws_connect(cluster.node(1).ws_url)
    gone_id = gone.connection_id
    await wait_connections(http, cluster, 1)
    await gone.close()
    await wait_connections(http, cluster, 0)
    for node in cluster.live_nodes:
        response = await http.post(
            f"{node.http_url}/api/connections/{gone_id}/send",
            json={"type": "text", "payload": "too late"},
        )
        assert response.status_code == 404, node.node_id


# -- counts and listings -------------------------------------------------------


async def test_counts_and_listings_are_cluster_wide(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    busy, quiet_channel = unique("busy"), unique("quiet")
    # node 0: 1 subscriber, node 1: 2, node 2: 3 (+ one idle client per node)
    placement = [0, 1, 1, 2, 2, 2, 0, 1, 2]
    everyone = [await ws_connect(cluster.node(index).ws_url) for index in placement]
    subscribers, idle = everyone[:6], everyone[6:]
    for client in subscribers:
        await subscribe(client, busy)
    await subscribe(subscribers[1], quiet_channel)
    await wait_connections(http, cluster, 9)
    await wait_subscribers(http, cluster, busy, 6)
    await wait_subscribers(http, cluster, quiet_channel, 1)

    all_ids = sorted(c.connection_id for c in everyone)
    await on_every_node(
        http, cluster.live_nodes, "/api/connections", lambda r: sorted(r["connections"]), all_ids
    )
    await on_every_node(
        http, cluster.live_nodes, "/api/stats", lambda s: s["subscriptions"], 7
    )

    def counts(listing: dict[str, Any]) -> dict[str, int]:
        return {
            c["name"]: c["subscribers"]
            for c in listing["channels"]
            if c["name"] in (busy, quiet_channel)
        }

    await on_every_node(
        http, cluster.live_nodes, "/api/channels", counts, {busy: 6, quiet_channel: 1}
    )
    for index, client in enumerate(idle):  # presence and list_channels from every node
        presence = await client.command("presence", channel=busy)
        assert presence["type"] == "json"
        assert presence["payload"] == {"channel": busy, "count": 6}, f"node {index}"
        listed = await client.command("list_channels")
        assert {busy, quiet_channel} <= set(listed["payload"]["channels"])
    # Any node describes any connection, with the node that holds it.
    for index, client in enumerate(everyone):
        holder = cluster.node(placement[index])
        assert client.welcome is not None
        assert meta(client.welcome)["node_id"] == holder.node_id
        asked = cluster.node(index + 1)
        info = await get_json(http, asked, f"/api/connections/{client.connection_id}")
        assert info["id"] == client.connection_id
        assert info["node_id"] == holder.node_id
        expected = (
            sorted([busy, quiet_channel]) if index == 1 else [busy] if index < 6 else []
        )
        assert info["channels"] == expected
        assert isinstance(info["connected_at"], (int, float)) and info["connected_at"] > 0
        assert str(info["remote_addr"]).startswith("127.0.0.1:")


async def test_a_disconnect_on_one_node_drops_counts_everywhere(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel = unique("leave")
    clients = await clients_on_nodes(cluster, ws_connect, per_node=2)
    for client in clients:
        await subscribe(client, channel)
    await wait_subscribers(http, cluster, channel, 6)
    await wait_connections(http, cluster, 6)
    for client in clients[2:4]:  # both clients of node 1 leave
        await client.close()
    await wait_subscribers(http, cluster, channel, 4)
    await wait_connections(http, cluster, 4)
    presence = await clients[0].command("presence", channel=channel)
    assert presence["payload"]["count"] == 4
    for client in clients[4:]:  # the last members leave: the channel is gone
        await client.close()
    for client in clients[:2]:
        await client.close()
    await on_every_node(
        http, cluster.live_nodes, f"/api/channels/{path(channel)}", lambda c: c, 404
    )


# -- channel records: create and delete ------------------------------------------


async def test_create_and_update_are_seen_on_every_node(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    channel = unique("created")
    url = f"/api/channels/{path(channel)}"
    created = await http.put(f"{cluster.node(0).http_url}{url}", json={"description": "first"})
    assert created.status_code == 201, created.text
    created_at = created.json()["created_at"]
    await on_every_node(
        http, cluster.live_nodes, url,
        lambda c: (c["name"], c["description"], c["is_private"], c["subscribers"]),
        (channel, "first", False, 0),
    )
    updated = await http.put(f"{cluster.node(1).http_url}{url}", json={"description": "second"})
    assert updated.status_code == 200, updated.text
    await on_every_node(
        http, cluster.live_nodes, url, lambda c: (c["description"], c["created_at"]),
        ("second", created_at),
    )
    await on_every_node(
        http, cluster.live_nodes, "/api/channels",
        lambda r: [c["description"] for c in r["channels"] if c["name"] == channel], ["second"],
    )


async def test_a_private_channel_is_private_on_every_node(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel = unique("private")
    url = f"/api/channels/{path(channel)}"
    response = await http.put(f"{cluster.node(2).http_url}{url}", json={"is_private": True})
    assert response.status_code == 201
    await on_every_node(http, cluster.live_nodes, url, lambda c: c["is_private"], True)
    for index in range(3):
        client = await ws_connect(cluster.node(index).ws_url)
        for command in ("subscribe", "publish", "presence"):
            reply = await client.command(command, channel=channel, data={})
            assert meta(reply)["ok"] is False, reply
            assert meta(reply)["error"] == "forbidden"
        listed = await client.command("list_channels")
        assert channel not in listed["payload"]["channels"]


async def test_delete_on_one_node_unsubscribes_everyone_everywhere(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel = unique("doomed")
    url = f"/api/channels/{path(channel)}"
    assert (await http.put(f"{cluster.node(0).http_url}{url}", json={})).status_code == 201
    members = await clients_on_nodes(cluster, ws_connect, per_node=2)
    for client in members:
        await subscribe(client, channel)
    await wait_subscribers(http, cluster, channel, 6)

    response = await http.delete(f"{cluster.node(0).http_url}{url}")
    assert response.status_code == 200
    assert response.json() == {"deleted": channel}
    for client in members:
        notice = await client.recv_until(
            lambda f: f.get("type") == "system" and f.get("channel") == channel
        )
        assert notice["payload"] == f"Channel deleted: {channel}"
    await on_every_node(http, cluster.live_nodes, url, lambda c: c, 404)
    await on_every_node(
        http, cluster.live_nodes, "/api/stats", lambda s: s["subscriptions"], 0
    )
    for index, client in enumerate(members):
        assert (await client.command("presence", channel=channel))["payload"]["count"] == 0
        listed = await client.command("list_channels")
        assert channel not in listed["payload"]["channels"], index
        info = await get_json(http, cluster.node(index), f"/api/connections/{client.connection_id}")
        assert info["channels"] == []

    # Publishing to it now reaches nobody, wherever it comes from.
    tag = uuid.uuid4().hex
    for index in range(3):
        response = await http.post(
            f"{cluster.node(index).http_url}{url}/publish",
            json={"type": "json", "payload": {"tag": tag}},
        )
        assert response.json() == {"recipients": 0}
    reply = await members[3].command("publish", channel=channel, data={"tag": tag})
    assert meta(reply)["recipients"] == 0
    await quiet(members, in_channel(channel))
    assert (await http.delete(f"{cluster.node(1).http_url}{url}")).status_code == 404

    # The name is free again: subscribing makes it live on every node.
    await subscribe(members[5], channel)
    await wait_subscribers(http, cluster, channel, 1)
    response = await http.post(
        f"{cluster.node(0).http_url}{url}/publish", json={"type": "json", "payload": {"tag": tag}}
    )
    assert response.json() == {"recipients": 1}
    await members[5].recv_until(tagged(tag))


async def test_delete_of_an_implicit_channel_from_a_node_without_members(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    channel = unique("implicit")
    member = await ws_connect(cluster.node(2).ws_url)
    await subscribe(member, channel)
    await wait_subscribers(http, cluster, channel, 1)
    response = await http.delete(f"{cluster.node(0).http_url}/api/channels/{path(channel)}")
    assert response.status_code == 200
    notice = await member.recv_until(of_type("system"))
    assert notice["payload"] == f"Channel deleted: {channel}"
    assert meta(notice).get("event") == "channel_deleted"
    await on_every_node(
        http, cluster.live_nodes, f"/api/channels/{path(channel)}", lambda c: c, 404
    )
