"""Failures of nodes and brokers, on NATS and on Redis.

Every test builds a cluster of its own (its own ``--cluster-name``), so a
node killed here never shows up in another test. Tests that stop the
session's broker are marked ``broker_restart`` and use ``broker.outage()``,
which brings the broker back even when the test fails inside it.

These tests only mean something where several nodes share a broker, so they
run on ``nats`` and ``redis``; the behaviour they end in (delivery, counts)
is the one ``test_cluster.py`` checks on all three backends.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import msgpack
import nats
import pytest
import redis.asyncio as aioredis
from support.brokers import Broker
from support.client import Frame, WsClient, WsConnect
from support.cluster import (
    Cluster,
    ClusterFactory,
    get_json,
    on_every_node,
    quiet,
    subscribe,
    tagged,
)
from support.nodes import NodeProcess, free_port

from backends import Envelope, Route, encode_envelope
from backends.transport import encode_channel_token

pytestmark = pytest.mark.cluster
restarts_broker = pytest.mark.broker_restart

#: lease of the clusters whose nodes die: convergence is checked against it
SHORT_LEASE = 2.0
#: slack on top of the lease: one heartbeat tick (lease / 3) plus polling on a busy machine
LEASE_MARGIN = 3.0
#: how long a node may take to notice a hung broker (NATS: 2 s pings, 2 may be
#: outstanding; Redis: a ping after 2 idle seconds, 2 s for its answer)
HUNG_DETECTION = 12.0


def unique(label: str) -> str:
    return f"{label}:{uuid.uuid4().hex[:10]}"


def path(channel: str) -> str:
    return quote(channel, safe="")


def meta(frame: Frame) -> dict[str, Any]:
    metadata = frame.get("metadata")
    assert isinstance(metadata, dict), frame
    return metadata


async def subscribers_everywhere(
    http: httpx.AsyncClient, nodes: list[NodeProcess], channel: str, count: int,
    timeout: float = 10.0,
) -> None:
    await on_every_node(
        http, nodes, f"/api/channels/{path(channel)}", lambda c: c["subscribers"], count,
        timeout=timeout,
    )


async def publish_api(http: httpx.AsyncClient, node: NodeProcess, channel: str, tag: str) -> int:
    response = await http.post(
        f"{node.http_url}/api/channels/{path(channel)}/publish",
        json={"type": "json", "payload": {"tag": tag, "from": node.node_id}},
    )
    assert response.status_code == 200, f"{node.node_id}: {response.status_code} {response.text}"
    recipients: int = response.json()["recipients"]
    return recipients


async def exactly_once(clients: list[WsClient], others: list[WsClient], tag: str) -> None:
    """Each of ``clients`` got one frame tagged ``tag``; nobody got more."""
    for client in clients:
        await client.recv_until(tagged(tag))
    await quiet([*clients, *others], tagged(tag))


def error_lines(node: NodeProcess) -> list[str]:
    return [line for line in node.log_text().splitlines() if " ERROR " in line]


# -- nodes dying -------------------------------------------------------------------


async def test_a_killed_node_leaves_every_count_within_the_lease(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    cluster = make_cluster(shared_backend, lease_ttl=SHORT_LEASE)
    channel = unique("kill")
    clients = [await ws_connect(cluster.node(i).ws_url) for i in (0, 0, 1, 1, 2, 2)]
    for client in clients:
        await subscribe(client, channel)
    await subscribers_everywhere(http, cluster.live_nodes, channel, 6)
    victim = cluster.node(2)
    victim_ids = [c.connection_id for c in clients[4:]]
    survivors, doomed = clients[:4], clients[4:]

    victim.kill()
    killed_at = time.monotonic()
    # Nobody waits on the dead node: publishing right away answers at once.
    tag = uuid.uuid4().hex
    started = time.monotonic()
    assert await publish_api(http, cluster.node(0), channel, tag) in (4, 6)
    assert time.monotonic() - started < 2.0
    await exactly_once(survivors, [], tag)

    alive = cluster.live_nodes
    deadline = SHORT_LEASE + LEASE_MARGIN
    await subscribers_everywhere(http, alive, channel, 4, timeout=deadline)
    await on_every_node(http, alive, "/api/stats", lambda s: s["connections"], 4, timeout=1)
    await on_every_node(http, alive, "/api/stats", lambda s: s["nodes"], cluster.node_ids,
                        timeout=1)
    assert time.monotonic() - killed_at <= deadline
    for node in alive:
        connections = (await get_json(http, node, "/api/connections"))["connections"]
        assert not set(victim_ids) & set(connections)
        for dead in victim_ids:
            sent = await http.post(
                f"{node.http_url}/api/connections/{dead}/send",
                json={"type": "text", "payload": "?"},
            )
            assert sent.status_code == 404
    presence = await survivors[0].command("presence", channel=channel)
    assert presence["payload"]["count"] == 4

    # The survivors keep delivering to each other, both ways.
    for node in alive:
        tag = uuid.uuid4().hex
        assert await publish_api(http, node, channel, tag) == 4
        await exactly_once(survivors, [], tag)
    for client in doomed:  # the dead node's clients were cut off
        closed = await client.expect_close(2.0)
        assert closed.code in (1006, 1011, 1012)


async def test_a_killed_node_restarted_with_its_id_replaces_its_old_state(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    """A new incarnation of a node id wipes what the dead one held at once,
    long before the lease (60 s here) would."""
    cluster = make_cluster(shared_backend, nodes=2, lease_ttl=60)
    channel = unique("reborn")
    old = [await ws_connect(cluster.node(1).ws_url) for _ in range(3)]
    keeper = await ws_connect(cluster.node(0).ws_url)
    for client in [*old, keeper]:
        await subscribe(client, channel)
    await subscribers_everywhere(http, cluster.live_nodes, channel, 4)
    node = cluster.node(1)
    node.kill()
    node.start()
    node.wait_ready()
    cluster.wait_formed(timeout=10)
    await subscribers_everywhere(http, cluster.live_nodes, channel, 1, timeout=5)
    await on_every_node(http, cluster.live_nodes, "/api/stats", lambda s: s["connections"], 1)
    fresh = await ws_connect(node.ws_url)
    await subscribe(fresh, channel)
    await subscribers_everywhere(http, cluster.live_nodes, channel, 2)
    tag = uuid.uuid4().hex
    assert await publish_api(http, cluster.node(0), channel, tag) == 2
    await exactly_once([keeper, fresh], [], tag)


async def test_a_clean_stop_removes_the_node_state_at_once(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    cluster = make_cluster(shared_backend, nodes=2, lease_ttl=60)
    channel = unique("bye")
    leaving = [await ws_connect(cluster.node(1).ws_url) for _ in range(3)]
    staying = await ws_connect(cluster.node(0).ws_url)
    for client in [*leaving, staying]:
        await subscribe(client, channel)
    await subscribers_everywhere(http, cluster.live_nodes, channel, 4)
    stopped_at = time.monotonic()
    assert cluster.node(1).stop() in (0, -signal.SIGTERM)
    codes = {(await client.expect_close(2.0)).code for client in leaving}
    assert codes <= {1001, 1012}, codes  # going away / service restart
    # Gone within a moment, not after the 60 s lease.
    await subscribers_everywhere(http, cluster.live_nodes, channel, 1, timeout=3)
    await on_every_node(
        http, cluster.live_nodes, "/api/stats", lambda s: (s["connections"], s["nodes"]),
        (1, cluster.node_ids), timeout=1,
    )
    assert time.monotonic() - stopped_at < 5


# -- broker outages ------------------------------------------------------------------


@restarts_broker
async def test_a_broker_outage_keeps_clients_and_delivery_resumes(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    cluster = make_cluster(shared_backend, lease_ttl=SHORT_LEASE)
    broker = cluster.broker
    assert broker is not None
    nodes = cluster.live_nodes
    channel, fresh_channel = unique("outage"), unique("during")
    clients = [await ws_connect(cluster.node(i).ws_url) for i in (0, 0, 1, 1, 2, 2)]
    for client in clients:
        await subscribe(client, channel)
    await subscribers_everywhere(http, nodes, channel, 6)

    with broker.outage():
        await on_every_node(http, nodes, "/readyz", lambda r: r, 503, timeout=10)
        for node in nodes:
            assert (await http.get(f"{node.http_url}/healthz")).status_code == 200
            ready = await http.get(f"{node.http_url}/readyz")
            assert ready.json()["backplane"] is False
            for url, body in (
                (f"/api/channels/{path(channel)}/publish", {"type": "text", "payload": "x"}),
                ("/api/broadcast", {"message": {"type": "text", "payload": "x"}}),
            ):
                response = await http.post(f"{node.http_url}{url}", json=body)
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "backplane_unavailable"
        for client in clients:  # still connected, still served
            await client.sync()
        reply = await clients[0].command("publish", channel=channel, data={"tag": "lost"})
        assert meta(reply)["ok"] is False
        assert meta(reply)["error"] == "backplane_unavailable"
        reply = await clients[2].command("subscribe", channel=fresh_channel)
        assert (meta(reply)["ok"], meta(reply)["error"]) == (False, "backplane_unavailable")
        # Membership changes during the outage are applied once it is over:
        # a client leaves node 1, one unsubscribes and one arrives on node 2
        # (joining a channel the node already listens to needs no broker).
        await clients[3].close()
        unsubscribed = await clients[5].command("unsubscribe", channel=channel)
        assert meta(unsubscribed)["ok"] is True
        late = await ws_connect(cluster.node(2).ws_url)
        await subscribe(late, channel)
        await quiet(clients[:3] + clients[4:], tagged("lost"), within=0.1)
        # Outlast the lease: every node forgets its peers and keeps only its own.
        for node, local in zip(nodes, (2, 1, 3), strict=True):
            await on_every_node(
                http, [node], "/api/stats", lambda s: (s["nodes"], s["connections"]),
                ([node.node_id], local), timeout=SHORT_LEASE + LEASE_MARGIN,
            )

    await on_every_node(http, nodes, "/readyz", lambda r: r["status"], "ready", timeout=20)
    cluster.wait_formed(timeout=15)
    members = [clients[0], clients[1], clients[2], clients[4], late]
    await subscribers_everywhere(http, nodes, channel, 5, timeout=15)
    await on_every_node(http, nodes, "/api/stats", lambda s: s["connections"], 6)
    for node in nodes:  # delivery resumes from every node, exactly once
        tag = uuid.uuid4().hex
        assert await publish_api(http, node, channel, tag) == 5
        await exactly_once(members, [clients[5]], tag)
    await subscribe(late, fresh_channel)
    await subscribe(clients[0], fresh_channel)
    await subscribers_everywhere(http, nodes, fresh_channel, 2)
    tag = uuid.uuid4().hex
    assert await publish_api(http, cluster.node(1), fresh_channel, tag) == 2
    await exactly_once([late, clients[0]], [clients[1]], tag)


@restarts_broker
async def test_a_hung_broker_makes_every_node_unready_until_it_answers(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    """A broker that stops answering but keeps its sockets open (a partition
    without resets) is noticed by pings: NATS client pings, and on Redis a
    ping on the idle subscriber connection."""
    cluster = make_cluster(shared_backend, nodes=2, lease_ttl=SHORT_LEASE)
    broker = cluster.broker
    assert broker is not None
    nodes = cluster.live_nodes
    channel = unique("hung")
    clients = [await ws_connect(cluster.node(i).ws_url) for i in (0, 1)]
    for client in clients:
        await subscribe(client, channel)
    await subscribers_everywhere(http, nodes, channel, 2)
    with broker.frozen():
        await on_every_node(http, nodes, "/readyz", lambda r: r, 503, timeout=HUNG_DETECTION)
        for client in clients:
            await client.sync()
    await on_every_node(http, nodes, "/readyz", lambda r: r["status"], "ready", timeout=20)
    cluster.wait_formed(timeout=15)
    await subscribers_everywhere(http, nodes, channel, 2, timeout=15)
    for node in nodes:
        tag = uuid.uuid4().hex
        assert await publish_api(http, node, channel, tag) == 2
        await exactly_once(clients, [], tag)


@restarts_broker
async def test_a_node_started_while_the_broker_is_down_becomes_ready_later(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    cluster = make_cluster(shared_backend, nodes=1, lease_ttl=SHORT_LEASE)
    broker = cluster.broker
    assert broker is not None
    first = cluster.node(0)
    with broker.outage(graceful=False):  # the broker crashes (SIGKILL)
        late = cluster.add_node(ready=False)  # waits for /healthz only
        assert (await http.get(f"{late.http_url}/healthz")).status_code == 200
        ready = await http.get(f"{late.http_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["backplane"] is False
        early_client = await ws_connect(late.ws_url)  # it serves clients meanwhile
        await early_client.sync()
        await on_every_node(http, [first], "/readyz", lambda r: r, 503)
    await on_every_node(http, [first, late], "/readyz", lambda r: r["status"], "ready", timeout=20)
    cluster.wait_formed(timeout=15)

    channel = unique("late")
    a, b = await ws_connect(first.ws_url), early_client
    for client in (a, b):
        await subscribe(client, channel)
    await subscribers_everywhere(http, [first, late], channel, 2)
    for node in (first, late):
        tag = uuid.uuid4().hex
        assert await publish_api(http, node, channel, tag) == 2
        await exactly_once([a, b], [], tag)
    errors = error_lines(late)
    assert len(errors) == 1, errors  # one clear line, however long the outage lasted
    assert "unreachable" in errors[0] or "cannot reach" in errors[0]


async def test_an_unreachable_broker_at_start_logs_one_clear_line(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    port = free_port()
    scheme = "nats" if shared_backend == "nats" else "redis"
    url = f"{scheme}://rtforge:s3cr3t-pw@127.0.0.1:{port}" + ("/0" if scheme == "redis" else "")
    cluster = make_cluster(shared_backend, nodes=0)
    # The URL goes in by environment variable, as secrets do, not on the command line.
    node = cluster.add_node(
        ready=False, env={f"RTFORGE_{scheme.upper()}_URL": url}, **{f"{scheme}_url": None}
    )
    assert (await http.get(f"{node.http_url}/healthz")).status_code == 200
    ready = await http.get(f"{node.http_url}/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "backplane": False, "draining": False}
    client = await ws_connect(node.ws_url)
    reply = await client.command("publish", channel="x", data=1)
    assert meta(reply)["error"] == "backplane_unavailable"
    response = await http.post(
        f"{node.http_url}/api/broadcast", json={"message": {"type": "text", "payload": "x"}}
    )
    assert (response.status_code, response.json()["error"]) == (503, "backplane_unavailable")
    await asyncio.sleep(2.0)  # several reconnect attempts
    assert node.running
    errors = error_lines(node)
    assert len(errors) == 1, node.log_tail()
    assert f"127.0.0.1:{port}" in errors[0]
    assert scheme.upper() in errors[0].upper()
    text = node.log_text()
    assert "s3cr3t-pw" not in text, "the broker password leaked into the log"
    assert "Traceback" not in text


# -- state size ------------------------------------------------------------------------


async def test_a_large_cluster_state_reaches_a_new_node_in_parts(
    shared_backend: str, make_cluster: ClusterFactory, http: httpx.AsyncClient
) -> None:
    """A node joining a cluster with over 1 MB of membership state gets all of it.

    1000 connections, each subscribed to the same 20 channels with names of
    ~48 characters: about 1.1 MB of rows, so the holder's snapshot travels in
    several parts of at most 256 KiB, and the new node must put them together.
    """
    connections, channels = 1000, 20
    cluster = make_cluster(shared_backend, nodes=1, lease_ttl=10)
    holder = cluster.node(0)
    names = [f"bulk:{uuid.uuid4().hex}:{i:04d}-{'x' * 5}" for i in range(channels)]
    assert all(len(n) >= 48 for n in names)
    clients: list[WsClient] = []
    for _ in range(0, connections, 250):
        clients += await asyncio.gather(*(WsClient.connect(holder.ws_url) for _ in range(250)))
    try:
        async def subscribe_all(client: WsClient) -> None:
            ids = [await client.send_command("subscribe", channel=n) for n in names]
            for request_id in ids:
                assert meta(await client.reply(request_id, timeout=30))["ok"] is True

        await asyncio.gather(*(subscribe_all(c) for c in clients))
        expected = (connections, channels, connections * channels)

        def totals(stats: dict[str, Any]) -> tuple[int, int, int]:
            return (stats["connections"], stats["channels"], stats["subscriptions"])

        await on_every_node(http, [holder], "/api/stats", totals, expected)
        # What the holder's snapshot carries: one row per connection.
        info = await get_json(http, holder, f"/api/connections/{clients[0].connection_id}")
        stored = {k: v for k, v in info.items() if k not in ("id", "node_id", "channels")}
        row = msgpack.packb([info["id"], stored, sorted(names)], use_bin_type=True)
        assert len(row) * connections > 3 * 256 * 1024, len(row)
        joiner = cluster.add_node()
        cluster.wait_formed()
        await on_every_node(http, [joiner], "/api/stats", totals, expected, timeout=15)
        some = names[channels // 2]
        info = await get_json(http, joiner, f"/api/channels/{path(some)}")
        assert info["subscribers"] == connections
        described = await get_json(http, joiner, f"/api/connections/{clients[-1].connection_id}")
        assert described["node_id"] == holder.node_id
        assert described["channels"] == sorted(names)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


# -- garbage on the broker -----------------------------------------------------------------


def _garbage(cluster: Cluster) -> list[tuple[str, bytes]]:
    """(subject, bytes) that no node can use, on every subject a node reads."""
    sep = "." if cluster.backend == "nats" else ":"
    ctl, everyone = f"{cluster.name}{sep}ctl", f"{cluster.name}{sep}all"
    node = f"{cluster.name}{sep}node{sep}{cluster.node(0).node_id}"
    channel = f"{cluster.name}{sep}ch{sep}{encode_channel_token('garbage')}"

    def pack(value: object) -> bytes:
        return msgpack.packb(value, use_bin_type=True)

    bad_frame = encode_envelope(Envelope(Route.BROADCAST, b"\xff\xfe not utf-8", origin="ghost"))
    bad_direct = encode_envelope(
        Envelope(Route.DIRECT, b"\xc0", connection_id="nobody", origin="ghost")
    )
    data_garbage = [b"", b"\xc1", b"not msgpack at all", pack([1, 2, 3]), pack({"v": 99}),
                    pack({"v": 1, "r": 1, "f": b"{}"}), bad_frame, bad_direct]
    control_garbage = [
        b"", b"\xc1", pack("a string"), pack([1, 2]),
        pack({"k": "d", "n": "ghost", "i": "x", "s": "not a number"}),
        pack({"k": "d", "n": "ghost", "i": "x", "s": 1, "o": [["+c"], 5, None]}),
        pack({"k": "snap", "n": "ghost", "i": "x", "s": 1, "p": 0, "P": 1, "c": [[1, 2]]}),
        pack({"k": "snap", "n": "ghost", "i": "x", "s": 1, "p": "z", "P": 1, "c": 5}),
        pack({"k": "rec", "n": "ghost", "i": "x", "s": 1, "c": 7, "r": None, "v": "?"}),
        pack({"k": "rec", "n": "ghost", "i": "x", "s": 1, "c": "c", "r": {"x": 1}, "v": [1]}),
        pack({"k": "hb", "n": ["not", "a", "name"], "s": 1}),
        pack({"k": "sync", "n": "ghost", "i": "x", "s": 1, "to": cluster.node(1).node_id}),
        pack({1: 2}),
    ]
    return (
        [(subject, data) for subject in (everyone, node, channel) for data in data_garbage]
        + [(f"{node}{sep}x", b"")]  # a subject nobody reads
        + [(ctl, data) for data in control_garbage]
    )


async def _inject(broker: Broker, backend: str, messages: list[tuple[str, bytes]]) -> None:
    if backend == "nats":
        nc = await nats.connect(broker.url, connect_timeout=5)
        try:
            for subject, data in messages:
                await nc.publish(subject, data)
            await nc.flush(timeout=5)
        finally:
            await nc.close()
    else:
        client = aioredis.Redis.from_url(broker.url)
        try:
            for subject, data in messages:
                await client.publish(subject, data)
        finally:
            await client.aclose()


async def test_garbage_on_the_broker_is_dropped_with_a_log_line(
    shared_backend: str, make_cluster: ClusterFactory, ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    cluster = make_cluster(shared_backend, nodes=2)
    assert cluster.broker is not None
    nodes = cluster.live_nodes
    clients = [await ws_connect(cluster.node(i).ws_url) for i in range(3)]
    for client in clients:
        await subscribe(client, "garbage")
    await subscribers_everywhere(http, nodes, "garbage", 3)

    await _inject(cluster.broker, cluster.backend, _garbage(cluster))
    await _inject(cluster.broker, cluster.backend, _garbage(cluster))

    # Every node still routes everything, and the counts are untouched.
    for node in nodes:
        tag = uuid.uuid4().hex
        assert await publish_api(http, node, "garbage", tag) == 3
        await exactly_once(clients, [], tag)
        tag = uuid.uuid4().hex
        response = await http.post(
            f"{node.http_url}/api/broadcast",
            json={"message": {"type": "json", "payload": {"tag": tag}}},
        )
        assert response.json() == {"recipients": 3}
        await exactly_once(clients, [], tag)
    # No phantom node, no phantom connection: nothing of the garbage was applied.
    for node in nodes:
        stats = await get_json(http, node, "/api/stats")
        assert (stats["nodes"], stats["connections"]) == (cluster.node_ids, 3)
    for client in clients:  # none of the garbage reached a client
        await client.sync()
        assert not [f for f in client.buffer if f.get("type") != "json"], list(client.buffer)
    for node in nodes:
        dropped = re.findall(r"WARNING .*dropped", node.log_text())
        assert dropped, f"{node.node_id} logged nothing about the garbage:\n{node.log_tail()}"
    await on_every_node(http, nodes, "/readyz", lambda r: r["status"], "ready", timeout=1)
