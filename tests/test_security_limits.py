"""Origin allow-list and abuse limits over real sockets.

Each limit trips exactly at its value, counts in ``rtforge_limit_hits_total``
and answers as docs/security.md says; afterwards the connection (or node)
carries on."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from support.client import WsClient, WsConnect
from support.cluster import ClusterFactory
from support.metrics import metric_value, scrape
from support.nodes import NodeFactory, NodeProcess
from support.polling import eventually
from support.tokens import SECRET, hs256
from websockets.exceptions import InvalidStatus


def meta(frame: dict[str, Any]) -> dict[str, Any]:
    return frame.get("metadata") or {}


async def limit_hits(http: httpx.AsyncClient, node: NodeProcess, limit: str) -> float:
    return metric_value(await scrape(http, node.http_url), "rtforge_limit_hits_total",
                        limit=limit)


async def refused(url: str, **options: Any) -> tuple[int, dict[str, Any], Any]:
    with pytest.raises(InvalidStatus) as info:
        await WsClient.connect(url, **options)
    response = info.value.response
    return response.status_code, json.loads(bytes(response.body or b"{}")), response.headers


async def stats(http: httpx.AsyncClient, node: NodeProcess) -> dict[str, Any]:
    result: dict[str, Any] = (await http.get(f"{node.http_url}/api/stats")).json()
    return result


# -- Origin -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin_node(module_start_node: NodeFactory) -> NodeProcess:
    return module_start_node(allowed_origins="https://app.example.com,https://*.example.org")


@pytest.mark.parametrize(
    "origin", [None, "https://app.example.com", "https://APP.example.com:443",
               "https://eu.example.org", "https://a.b.example.org"]
)
async def test_listed_origins_and_no_origin_are_accepted(
    origin_node: NodeProcess, ws_connect: WsConnect, origin: str | None
) -> None:
    client = await ws_connect(origin_node.ws_url, origin=origin)
    assert (await client.command("ping"))["type"] == "pong"


@pytest.mark.parametrize(
    "origin", ["https://evil.test", "http://app.example.com", "https://app.example.com:8443",
               "https://example.org", "https://app.example.com.evil.test", "null",
               "not an origin"]
)
async def test_other_origins_are_refused_with_403(
    origin_node: NodeProcess, http: httpx.AsyncClient, origin: str
) -> None:
    before = metric_value(await scrape(http, origin_node.http_url),
                          "rtforge_origin_refusals_total")
    status, body, _ = await refused(origin_node.ws_url, origin=origin)
    assert status == 403
    assert body["error"] == "origin_not_allowed"
    after = metric_value(await scrape(http, origin_node.http_url),
                         "rtforge_origin_refusals_total")
    assert after == before + 1


async def test_without_a_list_every_origin_is_accepted(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(node.ws_url, origin="https://anything.test")
    assert (await client.command("ping"))["type"] == "pong"


# -- rate limit ------------------------------------------------------------------------


async def test_rate_limit_replies_then_recovers_then_closes_abusers(
    start_node: NodeFactory, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    node = start_node(rate_limit=1, rate_burst=5)
    client = await ws_connect(node.ws_url)
    for _ in range(5):  # the burst
        assert (await client.command("ping"))["type"] == "pong"
    reply = await client.command("ping", id="over")
    assert meta(reply) == {"ok": False, "error": "rate_limited", "command": "ping", "id": "over"}
    assert await limit_hits(http, node, "rate") == 1
    await asyncio.sleep(1.1)  # one token back: the connection carries on
    assert (await client.command("ping"))["type"] == "pong"
    for index in range(10):  # sustained abuse: refusals in a row reach the burst
        await client.send_json({"type": "system", "payload": {"command": "ping", "id": index}})
    closed = await client.expect_close()
    assert closed.code == 1008
    assert closed.reason == "rate limit exceeded"
    refusals = [f for f in client.buffer if meta(f).get("error") == "rate_limited"]
    assert len(refusals) == 4  # the fifth refusal in a row closes instead of replying
    # everyone else is served
    other = await ws_connect(node.ws_url)
    assert (await other.command("ping"))["type"] == "pong"


# -- subscriptions, frame size and channel names ------------------------------------------


@pytest.fixture(scope="module")
def small_node(module_start_node: NodeFactory) -> NodeProcess:
    return module_start_node(max_subscriptions=3, max_message_size=1024,
                             max_channel_name_length=20)


async def test_subscription_limit(
    small_node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    client = await ws_connect(small_node.ws_url)
    before = await limit_hits(http, small_node, "subscriptions")
    for i in range(3):
        assert meta(await client.command("subscribe", channel=f"sub-limit:{i}"))["ok"] is True
    reply = await client.command("subscribe", channel="sub-limit:3")
    assert meta(reply)["error"] == "limit_reached"
    assert await limit_hits(http, small_node, "subscriptions") == before + 1
    await client.command("unsubscribe", channel="sub-limit:0")
    assert meta(await client.command("subscribe", channel="sub-limit:3"))["ok"] is True


async def test_frame_size_limit(
    small_node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    client = await ws_connect(small_node.ws_url)
    prefix, suffix = '{"type":"text","payload":"', '"}'
    exact = prefix + "x" * (1024 - len(prefix) - len(suffix)) + suffix
    assert len(exact.encode()) == 1024
    await client.send_text(exact)
    assert (await client.recv_json())["payload"] == "Message received"
    before = await limit_hits(http, small_node, "frame_size")
    await client.send_text(exact[:-2] + "x" + suffix)  # 1025 bytes
    assert (await client.expect_close()).code == 1009
    await eventually(lambda: _hits_reached(http, small_node, "frame_size", before + 1),
                     message="frame_size counted")
    other = await ws_connect(small_node.ws_url)
    assert (await other.command("ping"))["type"] == "pong"


async def _hits_reached(http: httpx.AsyncClient, node: NodeProcess, limit: str,
                        value: float) -> bool:
    return await limit_hits(http, node, limit) >= value


async def test_channel_name_length_limit(
    small_node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    client = await ws_connect(small_node.ws_url)
    before = await limit_hits(http, small_node, "channel_name")
    assert meta(await client.command("subscribe", channel="n" * 20))["ok"] is True
    reply = await client.command("subscribe", channel="n" * 21)
    assert meta(reply)["error"] == "invalid_channel"
    reply = await client.command("publish", channel="p" * 21, data=1)
    assert meta(reply)["error"] == "invalid_channel"
    assert await limit_hits(http, small_node, "channel_name") == before + 2
    bad = await client.command("subscribe", channel="bad\x00name")
    assert meta(bad)["error"] == "invalid_channel"
    assert (await client.command("ping"))["type"] == "pong"


# -- connections per node and per user -----------------------------------------------------


async def test_connections_per_node(
    start_node: NodeFactory, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    node = start_node(max_connections=3)
    clients = [await ws_connect(node.ws_url) for _ in range(3)]
    status, body, headers = await refused(node.ws_url)
    assert status == 503
    assert body["error"] == "node_full"
    assert headers["Retry-After"] == "1"
    assert await limit_hits(http, node, "connections") == 1
    for client in clients:  # the connections already open carry on
        assert (await client.command("ping"))["type"] == "pong"
    await clients[0].close()

    async def freed() -> bool:
        return (await stats(http, node))["connections"] == 2

    await eventually(freed, message="a slot freed")
    again = await ws_connect(node.ws_url)
    assert (await again.command("ping"))["type"] == "pong"


async def test_connections_per_user(
    start_node: NodeFactory, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    node = start_node(jwt_secret=SECRET, max_connections_per_user=2)
    first = await ws_connect(f"{node.ws_url}?token={hs256(sub='u1')}")
    await ws_connect(f"{node.ws_url}?token={hs256(sub='u1')}")
    status, body, _ = await refused(f"{node.ws_url}?token={hs256(sub='u1')}")
    assert status == 429
    assert body["error"] == "too_many_connections"
    assert await limit_hits(http, node, "connections_per_user") == 1
    other = await ws_connect(f"{node.ws_url}?token={hs256(sub='u2')}")  # others are fine
    assert (await other.command("ping"))["type"] == "pong"
    await first.close()

    async def freed() -> bool:
        return (await stats(http, node))["connections"] == 2

    await eventually(freed, message="u1's slot freed")
    await ws_connect(f"{node.ws_url}?token={hs256(sub='u1')}")


async def test_concurrent_handshakes_cannot_overshoot_the_user_limit(
    start_node: NodeFactory, http: httpx.AsyncClient
) -> None:
    node = start_node(jwt_secret=SECRET, max_connections_per_user=3)
    url = f"{node.ws_url}?token={hs256(sub='racer')}"

    async def attempt() -> WsClient | None:
        try:
            return await WsClient.connect(url)
        except InvalidStatus:
            return None

    results = await asyncio.gather(*(attempt() for _ in range(12)))
    admitted = [r for r in results if r is not None]
    try:
        assert len(admitted) == 3
    finally:
        for client in admitted:
            await client.close()


async def test_connections_per_user_count_cluster_wide(
    make_cluster: ClusterFactory, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    cluster = make_cluster("nats", nodes=2, jwt_secret=SECRET, max_connections_per_user=2)
    a, b = cluster.node(0), cluster.node(1)
    await ws_connect(f"{a.ws_url}?token={hs256(sub='roamer')}")
    await ws_connect(f"{b.ws_url}?token={hs256(sub='roamer')}")

    async def both_seen() -> bool:
        return [(await stats(http, n))["connections"] for n in (a, b)] == [2, 2]

    await eventually(both_seen, message="both nodes see both connections")
    for target in (a, b):
        status, body, _ = await refused(f"{target.ws_url}?token={hs256(sub='roamer')}")
        assert status == 429, body
