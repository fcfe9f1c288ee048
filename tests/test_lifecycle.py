"""Connection lifecycle on a real node: heartbeat pings and timeouts with
sub-second settings, cleanup of every membership after a disconnect or a
timeout, slow consumers, and a graceful stop."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from typing import Any

import httpx
import pytest
from support.client import WsClient, WsConnect, in_channel, of_type
from support.metrics import metric_value, scrape
from support.nodes import NodeFactory, NodeProcess
from support.polling import eventually

INTERVAL = 0.2
TIMEOUT = 0.6
HEARTBEAT_CLOSE = 4000
SEND_QUEUE = 16


@pytest.fixture(scope="module")
def hb_node(module_start_node: NodeFactory) -> NodeProcess:
    """A node with a sub-second heartbeat."""
    return module_start_node(heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT)


@pytest.fixture(scope="module")
def node(module_start_node: NodeFactory) -> NodeProcess:
    """A node with the default heartbeat and a small send queue."""
    return module_start_node(send_queue_size=SEND_QUEUE)


async def status(http: httpx.AsyncClient, url: str) -> int:
    return (await http.get(url)).status_code


async def assert_forgotten(
    http: httpx.AsyncClient, node: NodeProcess, connection_id: str, channels: list[str]
) -> None:
    """The node no longer knows the connection, and its channels (which only
    it subscribed to) are gone."""
    url = f"{node.http_url}/api/connections/{connection_id}"

    async def gone() -> bool:
        return await status(http, url) == 404

    await eventually(gone, timeout=5, message=f"connection {connection_id} forgotten")
    listed = (await http.get(f"{node.http_url}/api/connections")).json()["connections"]
    assert connection_id not in listed
    for channel in channels:
        assert await status(http, f"{node.http_url}/api/channels/{channel}") == 404, channel


async def subscribe_all(client: WsClient, base: str, count: int = 3) -> list[str]:
    names = [f"{base}:{i}" for i in range(count)]
    for name in names:
        assert (await client.command("subscribe", channel=name))["metadata"]["ok"] is True
    return names


# -- heartbeat ----------------------------------------------------------------------------


async def test_server_sends_ping_frames_every_interval(
    hb_node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(hb_node.ws_url)
    started = time.monotonic()
    first = await client.recv_until(of_type("ping"), timeout=2)
    await client.send_json({"type": "pong"})
    second = await client.recv_until(of_type("ping"), timeout=2)
    elapsed = time.monotonic() - started
    assert set(first) == {"type", "timestamp"}
    assert set(second) == {"type", "timestamp"}
    assert elapsed < 5 * INTERVAL + TIMEOUT  # the interval setting applies, not the default 30 s


async def test_a_silent_client_is_closed_and_cleaned_up(
    hb_node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient, channel_name: str
) -> None:
    client = await ws_connect(hb_node.ws_url)
    channels = await subscribe_all(client, channel_name)
    silent_since = time.monotonic()
    closed = await client.expect_close(timeout=TIMEOUT + 3)
    silent_for = time.monotonic() - silent_since
    assert closed.code == HEARTBEAT_CLOSE
    assert silent_for >= TIMEOUT * 0.8
    assert [f["type"] for f in client.buffer].count("ping") >= 1
    await assert_forgotten(http, hb_node, client.connection_id, channels)


async def test_a_client_that_answers_pings_stays_connected(
    hb_node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(hb_node.ws_url)
    deadline = time.monotonic() + 2 * TIMEOUT
    pings = 0
    while time.monotonic() < deadline:
        await client.recv_until(of_type("ping"), timeout=2)
        pings += 1
        await client.send_json({"type": "pong"})
    assert pings >= 2
    assert (await client.command("ping"))["type"] == "pong"


async def test_any_client_frame_counts_as_activity(
    hb_node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(hb_node.ws_url)
    deadline = time.monotonic() + 2 * TIMEOUT
    while time.monotonic() < deadline:
        reply = await client.command("list_channels")
        assert reply["metadata"]["ok"] is True
        await asyncio.sleep(INTERVAL / 2)  # pacing the client, not waiting for the server
    assert (await client.command("ping"))["type"] == "pong"


async def test_heartbeat_timeouts_are_counted(
    hb_node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    samples = await scrape(http, hb_node.http_url)
    before = metric_value(samples, "rtforge_heartbeat_timeouts_total")
    client = await ws_connect(hb_node.ws_url)
    assert (await client.expect_close(timeout=TIMEOUT + 3)).code == HEARTBEAT_CLOSE

    async def counted() -> bool:
        samples = await scrape(http, hb_node.http_url)
        return metric_value(samples, "rtforge_heartbeat_timeouts_total") > before

    await eventually(counted, timeout=5, message="heartbeat timeout counter")


# -- disconnects ------------------------------------------------------------------------------


async def test_memberships_are_cleaned_up_after_a_clean_close(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url)
    stayer = await ws_connect(node.ws_url)
    channels = await subscribe_all(client, channel_name)
    shared = f"{channel_name}:shared"
    for member in (client, stayer):
        await member.command("subscribe", channel=shared)
    await client.close()
    await assert_forgotten(http, node, client.connection_id, channels)
    presence = await stayer.command("presence", channel=shared)
    assert presence["payload"]["count"] == 1


async def test_memberships_are_cleaned_up_after_a_dropped_connection(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url)
    channels = await subscribe_all(client, channel_name)
    transport: Any = client.ws.transport
    transport.abort()  # TCP reset, no close frame
    await assert_forgotten(http, node, client.connection_id, channels)


async def test_channel_endpoint_membership_is_cleaned_up(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient, channel_name: str
) -> None:
    client = await ws_connect(node.ws_channel_url(channel_name))
    assert client.welcome is not None
    await client.close()
    await assert_forgotten(http, node, client.connection_id, [channel_name])


# -- slow consumers ---------------------------------------------------------------------------


async def slow_reader(node: NodeProcess) -> WsClient:
    """A client that stops reading after its welcome: a tiny kernel receive
    buffer and a one-message client queue, so the server's writes back up."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((node.host, node.port))
    return await WsClient.connect(node.ws_url, sock=sock, max_queue=1)


async def test_a_slow_consumer_is_closed_and_the_fast_one_gets_everything(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient, channel_name: str
) -> None:
    before = metric_value(
        await scrape(http, node.http_url), "rtforge_slow_consumer_disconnects_total"
    )
    slow = await slow_reader(node)
    fast = await ws_connect(node.ws_url)
    for client in (slow, fast):
        assert (await client.command("subscribe", channel=channel_name))["metadata"]["ok"]
    publish_url = f"{node.http_url}/api/channels/{channel_name}/publish"
    slow_url = f"{node.http_url}/api/connections/{slow.connection_id}"
    filler = "x" * 32_000
    sent = 0
    slow_gone_after: int | None = None
    for i in range(600):
        response = await http.post(publish_url, json={"type": "json", "payload": [i, filler]})
        assert response.status_code == 200
        sent += 1
        frame = await fast.recv_until(in_channel(channel_name), timeout=5)
        assert frame["payload"][0] == i
        if slow_gone_after is None and await status(http, slow_url) == 404:
            slow_gone_after = i
        if slow_gone_after is not None and i >= slow_gone_after + 20:
            break
    assert slow_gone_after is not None, "the slow consumer was never disconnected"
    assert sent > slow_gone_after
    # the slow client reads again: buffered frames, then the close
    closed = await slow.expect_close(timeout=10)
    assert closed.code == 1013
    assert len(slow.buffer) < sent
    after = metric_value(
        await scrape(http, node.http_url), "rtforge_slow_consumer_disconnects_total"
    )
    assert after == before + 1
    assert (await fast.command("ping"))["type"] == "pong"


# -- stopping ----------------------------------------------------------------------------------


async def test_sigterm_closes_clients_and_exits_cleanly(start_node: NodeFactory) -> None:
    node = start_node()
    client = await WsClient.connect(node.ws_url)
    try:
        assert node.process is not None
        node.process.send_signal(signal.SIGTERM)
        closed = await client.expect_close(timeout=10)
        assert closed.code in (1001, 1012)  # going away / service restart
        code = await asyncio.to_thread(node.process.wait, 15)
    finally:
        await client.close()
    assert code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in node.log_text()
    node.assert_log_clean()
