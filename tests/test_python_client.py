"""The Python asyncio client (``rtforge_client``) against real nodes:
welcome, commands matched by id, channel handlers, answered pings, and
reconnects with re-subscribe after a node is killed, stopped (close code
1012) or restarted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from rtforge_client import CloseInfo, ConnectionInfo, RetryInfo, RtforgeClient, RtforgeError
from support.nodes import NodeFactory, NodeProcess, free_port
from support.polling import eventually

pytestmark = pytest.mark.slow

Frame = dict[str, Any]


def unique(prefix: str = "py") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def nodes(module_start_node: NodeFactory) -> list[NodeProcess]:
    """Two independent nodes with a fast heartbeat (ping 0.2 s, timeout 1 s)."""
    return [module_start_node(heartbeat_interval=0.2, heartbeat_timeout=1.0) for _ in range(2)]


@pytest.fixture
async def clients() -> Any:
    made: list[RtforgeClient] = []

    def make(urls: str | list[str], **options: Any) -> RtforgeClient:
        options.setdefault("backoff_initial", 0.1)
        options.setdefault("backoff_max", 1.0)
        client = RtforgeClient(urls, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def publish_http(node: NodeProcess, channel: str, payload: Any) -> int:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        response = await http.post(
            f"{node.http_url}/api/broadcast",
            json={"message": {"type": "json", "payload": payload}, "channel": channel},
        )
    assert response.status_code == 200, response.text
    return int(response.json()["recipients"])


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds (frames arrive in handlers)."""

    async def check() -> bool:
        return predicate()

    await eventually(check, timeout=timeout)


async def test_connect_reads_the_welcome(nodes: list[NodeProcess], clients: Any) -> None:
    client = clients(nodes[0].ws_url)
    opened: list[ConnectionInfo] = []
    client.on("open", opened.append)
    info = await client.connect()
    assert info.url == nodes[0].ws_url
    assert info.connection_id and len(info.connection_id) == 36
    assert client.connection_id == info.connection_id
    assert client.state == "open"
    assert opened == [ConnectionInfo(info.connection_id, nodes[0].ws_url, False)]


async def test_commands_are_matched_by_id(nodes: list[NodeProcess], clients: Any) -> None:
    client = clients(nodes[0].ws_url)
    await client.connect()
    channel = unique()
    sub, rtt, count = await asyncio.gather(
        client.subscribe(channel, lambda f: None), client.ping(), client.presence(unique())
    )
    assert sub["payload"] == f"Subscribed to channel: {channel}"
    assert rtt >= 0
    assert count == 0
    assert await client.presence(channel) == 1
    assert channel in await client.list_channels()
    assert (await client.command("ping"))["type"] == "pong"


async def test_channel_frames_go_to_their_handlers(
    nodes: list[NodeProcess], clients: Any
) -> None:
    a, b = clients(nodes[0].ws_url), clients(nodes[0].ws_url)
    await asyncio.gather(a.connect(), b.connect())
    room, other = unique("chat"), unique("chat")
    plain: list[Frame] = []
    from_coroutine: list[Frame] = []
    elsewhere: list[Frame] = []

    async def handler(frame: Frame) -> None:
        await asyncio.sleep(0)
        from_coroutine.append(frame)

    await a.subscribe(room, plain.append)
    await a.subscribe(room, handler)
    await a.subscribe(other, elsewhere.append)
    assert await b.publish(room, {"text": "hi"}, event="chat.message") == 1
    await until(lambda: len(plain) == 1 and len(from_coroutine) == 1)
    frame = plain[0]
    assert frame["type"] == "event"
    assert frame["channel"] == room
    assert frame["payload"] == {"event": "chat.message", "data": {"text": "hi"}}
    assert elsewhere == []
    # one handler removed: the other still gets frames; the last one unsubscribes
    assert await a.unsubscribe(room, handler) is None
    await publish_http(nodes[0], room, 2)
    await until(lambda: len(plain) == 2)
    reply = await a.unsubscribe(room, plain.append)
    assert reply is not None and reply["metadata"]["was_subscribed"] is True
    assert a.channels() == [other]


async def test_refused_commands_raise_the_servers_code(
    nodes: list[NodeProcess], clients: Any
) -> None:
    client = clients(nodes[0].ws_url)
    await client.connect()
    with pytest.raises(RtforgeError) as refused:
        await client.subscribe("", lambda f: None)
    assert refused.value.code == "invalid_channel"
    assert refused.value.reply is not None and refused.value.reply["metadata"]["ok"] is False
    assert client.channels() == []
    with pytest.raises(RtforgeError) as unknown:
        await client.command("no_such_command")
    assert unknown.value.code == "unknown_command"
    assert client.state == "open"


async def test_a_command_without_reply_times_out(nodes: list[NodeProcess], clients: Any) -> None:
    client = clients(nodes[1].ws_url)
    await client.connect()
    nodes[1].pause()
    try:
        with pytest.raises(RtforgeError) as timed_out:
            await client.command("ping", timeout=0.3)
    finally:
        nodes[1].resume()
    assert timed_out.value.code == "timeout"
    assert await client.presence(unique()) == 0


async def test_server_pings_are_answered(nodes: list[NodeProcess], clients: Any) -> None:
    client = clients(nodes[0].ws_url)
    pings: list[Frame] = []
    closes: list[CloseInfo] = []
    client.on("frame", lambda f: pings.append(f) if f.get("type") == "ping" else None)
    client.on("close", closes.append)
    await client.connect()
    await asyncio.sleep(2.0)  # twice the heartbeat timeout, sending nothing but pongs
    assert len(pings) >= 3
    assert closes == []
    assert client.state == "open"


def test_backoff_is_exponential_capped_and_jittered() -> None:
    low = RtforgeClient("ws://x/ws", rng=lambda: 0.0, backoff_initial=0.1, backoff_max=1.0)
    high = RtforgeClient("ws://x/ws", rng=lambda: 1.0, backoff_initial=0.1, backoff_max=1.0)
    assert [round(low.backoff(n), 3) for n in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert [round(high.backoff(n), 3) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    jittered = {RtforgeClient("ws://x/ws", backoff_initial=0.1).backoff(3) for _ in range(20)}
    assert len(jittered) > 1
    assert all(0.4 <= d <= 0.8 for d in jittered)


async def test_killed_node_moves_client_to_next_node_and_resubscribes(
    start_node: NodeFactory, clients: Any
) -> None:
    a, b = start_node(), start_node()
    client = clients([a.ws_url, b.ws_url])
    first = await client.connect()
    channel = unique("chat")
    frames: list[Frame] = []
    await client.subscribe(channel, frames.append)
    await publish_http(a, channel, 1)
    await until(lambda: len(frames) == 1)

    reopened = asyncio.ensure_future(client.wait_for_event("open", timeout=10))
    a.kill()
    info: ConnectionInfo = await reopened
    assert info.url == b.ws_url
    assert info.reconnected is True
    assert info.connection_id != first.connection_id
    assert await client.presence(channel) == 1
    assert await publish_http(b, channel, 2) == 1
    await until(lambda: len(frames) == 2)
    assert [f["payload"] for f in frames] == [1, 2]


async def test_single_url_retries_with_backoff_until_node_is_back(
    start_node: NodeFactory, clients: Any
) -> None:
    node = start_node()
    client = clients(node.ws_url)
    await client.connect()
    channel = unique()
    frames: list[Frame] = []
    await client.subscribe(channel, frames.append)
    retries: list[RetryInfo] = []
    client.on("reconnecting", retries.append)
    node.kill()
    await until(lambda: len(retries) >= 3)
    assert [r.attempt for r in retries[:3]] == [1, 2, 3]
    assert retries[2].delay > retries[0].delay
    reopened = asyncio.ensure_future(client.wait_for_event("open", timeout=15))
    await asyncio.to_thread(node.start)
    await reopened
    assert await publish_http(node, channel, "back") == 1
    await until(lambda: len(frames) == 1)
    assert client.attempt == 0


async def test_close_code_1012_reconnects_at_once(
    start_node: NodeFactory, clients: Any
) -> None:
    a, b = start_node(), start_node()
    client = clients([a.ws_url, b.ws_url], backoff_initial=20.0, backoff_max=20.0)
    await client.connect()
    channel = unique()
    frames: list[Frame] = []
    await client.subscribe(channel, frames.append)
    closed = asyncio.ensure_future(client.wait_for_event("close", timeout=10))
    reopened = asyncio.ensure_future(client.wait_for_event("open", timeout=10))
    stopping = asyncio.ensure_future(asyncio.to_thread(a.stop))  # SIGTERM: close 1012
    close: CloseInfo = await closed
    assert close.code == 1012
    started = time.monotonic()
    info: ConnectionInfo = await reopened
    assert time.monotonic() - started < 2.0
    assert info.url == b.ws_url
    await stopping
    assert await publish_http(b, channel, "moved") == 1
    await until(lambda: len(frames) == 1)


async def test_commands_wait_while_reconnecting(
    start_node: NodeFactory, clients: Any
) -> None:
    a, b = start_node(), start_node()
    client = clients([a.ws_url, b.ws_url], request_timeout=8.0)
    await client.connect()
    closed = asyncio.ensure_future(client.wait_for_event("close", timeout=10))
    a.kill()
    await closed
    assert client.state != "open"
    channel = unique()
    frames: list[Frame] = []
    reply, _count = await asyncio.gather(
        client.subscribe(channel, frames.append), client.presence(channel)
    )
    assert reply["metadata"]["ok"] is True
    assert client.url == b.ws_url
    assert await publish_http(b, channel, "late") == 1
    await until(lambda: len(frames) == 1)


async def test_dead_first_url_is_skipped(nodes: list[NodeProcess], clients: Any) -> None:
    client = clients([f"ws://127.0.0.1:{free_port()}/ws", nodes[0].ws_url])
    info = await client.connect()
    assert info.url == nodes[0].ws_url
    assert client.connects == 1


async def test_close_is_final(nodes: list[NodeProcess], clients: Any) -> None:
    client = clients(nodes[0].ws_url)
    await client.connect()
    closes: list[CloseInfo] = []
    client.on("close", closes.append)
    await client.close()
    assert client.state == "closed"
    assert [c.will_reconnect for c in closes] == [False]
    with pytest.raises(RtforgeError) as closed:
        await client.ping()
    assert closed.value.code == "closed"


async def test_context_manager(nodes: list[NodeProcess]) -> None:
    async with RtforgeClient(nodes[0].ws_url) as client:
        assert client.state == "open"
        assert await client.ping() >= 0
    assert client.state == "closed"


async def test_a_token_is_sent_on_every_connect_and_lands_in_the_metadata(
    start_node: NodeFactory, clients: Any
) -> None:
    from support.tokens import SECRET, hs256  # noqa: PLC0415

    node = start_node(jwt_secret=SECRET)
    issued: list[str] = []

    def fresh_token() -> str:
        issued.append(hs256(sub=f"user-{len(issued)}"))
        return issued[-1]

    refused = clients(node.ws_url, reconnect=False, connect_timeout=2)
    with pytest.raises(Exception):  # noqa: B017 - any refusal: 401 before the upgrade
        await refused.connect()
    client = clients(node.ws_url, token=fresh_token)
    info = await client.connect()
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(f"{node.http_url}/api/connections/{info.connection_id}")
    assert response.json()["custom"]["sub"] == "user-0"
    assert len(issued) == 1
