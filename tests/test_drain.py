"""Graceful drain on SIGTERM: unready at once, flush what was accepted,
close with 1012, leave the cluster, exit within the drain timeout."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import httpx
import pytest
from support.brokers import Broker
from support.client import WsClient, in_channel
from support.nodes import NodeFactory
from support.polling import eventually

pytestmark = pytest.mark.asyncio

MESSAGES = 300


async def _publish(http: httpx.AsyncClient, base: str, channel: str, n: int) -> None:
    response = await http.post(
        f"{base}/api/channels/{channel}/publish", json={"type": "json", "payload": {"n": n}}
    )
    assert response.status_code == 200, response.text


async def test_sigterm_flushes_accepted_frames_then_closes_with_1012(
    start_node: NodeFactory, http: httpx.AsyncClient
) -> None:
    node = start_node(drain_timeout=5)
    channel = f"drain:{uuid.uuid4().hex[:8]}"
    client = await WsClient.connect(node.ws_channel_url(channel))
    await client.recv_until(lambda f: f.get("metadata", {}).get("command") == "subscribe")
    for n in range(MESSAGES):
        await _publish(http, node.http_url, channel, n)
    # Every publish above was accepted for delivery before the signal.
    assert node.process is not None
    started = time.monotonic()
    node.process.send_signal(signal.SIGTERM)
    closed = await client.expect_close(timeout=10)
    received = [f["payload"]["n"] for f in client.take(in_channel(channel))]
    assert received == list(range(MESSAGES))
    assert closed.code == 1012
    await asyncio.to_thread(node.process.wait, 10)
    assert time.monotonic() - started < 5 + 2
    node.assert_log_clean()


async def test_draining_node_is_unready_and_refuses_new_sockets(
    start_node: NodeFactory, http: httpx.AsyncClient
) -> None:
    node = start_node(drain_delay=3, drain_timeout=5)
    client = await WsClient.connect(node.ws_url)
    assert node.process is not None
    node.process.send_signal(signal.SIGTERM)

    async def unready() -> bool:
        return (await http.get(f"{node.http_url}/readyz")).status_code == 503

    await eventually(unready, timeout=2)
    body = (await http.get(f"{node.http_url}/readyz")).json()
    assert body["draining"] is True
    with pytest.raises(Exception) as refused:
        late = await WsClient.connect(node.ws_url)
        await late.recv_json(timeout=2)
    assert "1012" in str(refused.value) or "403" in str(refused.value)
    # The socket that was already open stays open during the delay...
    await client.send_json({"type": "ping"})
    assert (await client.recv_json())["type"] == "pong"
    # ...and is closed with 1012 when it ends.
    assert (await client.expect_close(timeout=10)).code == 1012


async def test_drained_clients_reconnect_to_another_node_and_keep_receiving(
    start_node: NodeFactory, http: httpx.AsyncClient, nats_broker: Broker
) -> None:
    cluster = f"drain{uuid.uuid4().hex[:6]}"
    common = {"backend": "nats", "nats_url": nats_broker.url, "cluster_name": cluster,
              "lease_ttl": 2, "drain_timeout": 5}
    first = start_node(node_id="drain-a", **common)
    second = start_node(node_id="drain-b", **common)
    channel = f"drain:{uuid.uuid4().hex[:8]}"
    client = await WsClient.connect(first.ws_channel_url(channel))
    await client.recv_until(lambda f: f.get("metadata", {}).get("command") == "subscribe")

    async def seen_by_second() -> bool:
        stats = (await http.get(f"{second.http_url}/api/channels/{channel}")).json()
        return stats.get("subscribers") == 1

    await eventually(seen_by_second, timeout=5)
    for n in range(50):
        await _publish(http, second.http_url, channel, n)
    await client.recv_until(lambda f: f.get("payload") == {"n": 49})
    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    assert (await client.expect_close(timeout=10)).code == 1012

    async def left_cluster() -> bool:
        stats = (await http.get(f"{second.http_url}/api/stats")).json()
        return stats["connections"] == 0 and stats["nodes"] == ["drain-b"]

    # A clean stop says goodbye: no waiting for the lease.
    await eventually(left_cluster, timeout=1.5)
    again = await WsClient.connect(second.ws_channel_url(channel))
    await again.recv_until(lambda f: f.get("metadata", {}).get("command") == "subscribe")
    await _publish(http, second.http_url, channel, 1000)
    frame = await again.recv_until(in_channel(channel))
    assert frame["payload"] == {"n": 1000}
