"""The HTTP API of a real node, with real WebSocket clients on the other end:
broadcasts, channel publishes, targeted sends, channel records, connection
listings, stats, health, readiness and metrics, and their error statuses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from support.client import WsClient, WsConnect, in_channel, reply_to
from support.metrics import metric_value, scrape
from support.nodes import NodeProcess
from support.polling import eventually


def text(payload: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "payload": payload, **extra}


async def stats(http: httpx.AsyncClient, node: NodeProcess) -> dict[str, Any]:
    response = await http.get(f"{node.http_url}/api/stats")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def wait_connections(http: httpx.AsyncClient, node: NodeProcess, count: int) -> None:
    """Other tests' clients may still be closing: wait for exactly ``count``."""

    async def settled() -> bool:
        return bool((await stats(http, node))["connections"] == count)

    await eventually(settled, timeout=5, message=f"{count} connections on the node")


async def nothing_for(client: WsClient, payload: str) -> None:
    """After a round trip, no frame with ``payload`` reached ``client``."""
    await client.sync()
    assert client.take(lambda f: f.get("payload") == payload) == []


# -- health, readiness, metrics --------------------------------------------------


async def test_healthz(node: NodeProcess, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{node.http_url}/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_on_a_serving_memory_node(node: NodeProcess, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{node.http_url}/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_metrics_are_prometheus_text_and_counters_move(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    before = await scrape(http, node.http_url)
    response = await http.get(f"{node.http_url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    client = await ws_connect(node.ws_url)
    await client.command("subscribe", channel=channel_name)
    await http.post(f"{node.http_url}/api/channels/{channel_name}/publish", json=text("m"))
    await client.recv_until(in_channel(channel_name))
    after = await scrape(http, node.http_url)

    def moved(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert moved("rtforge_connections_opened_total") == 1
    assert moved("rtforge_commands_total", command="subscribe", outcome="ok") == 1
    assert moved("rtforge_publishes_total", route="channel") == 1
    assert moved("rtforge_deliveries_total") >= 1
    assert metric_value(after, "rtforge_connections") >= 1


# -- stats, connections ------------------------------------------------------------


async def test_stats(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    await wait_connections(http, node, 0)
    clients = [await ws_connect(node.ws_url) for _ in range(2)]
    await clients[0].command("subscribe", channel=channel_name)
    body = await stats(http, node)
    assert body["node_id"] == node.node_id
    assert body["connections"] == 2
    assert isinstance(body["channels"], int)
    assert body["channels"] >= 1


async def test_list_connections_and_metadata(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    client = await ws_connect(node.ws_url, user_agent_header="rtforge-tests/1.0")
    await client.command("subscribe", channel=channel_name)
    listed = (await http.get(f"{node.http_url}/api/connections")).json()["connections"]
    assert client.connection_id in listed
    response = await http.get(f"{node.http_url}/api/connections/{client.connection_id}")
    assert response.status_code == 200
    info = response.json()
    assert info["user_agent"] == "rtforge-tests/1.0"
    assert info["remote_addr"].startswith("127.0.0.1:")
    assert info["connected_at"] > 0
    assert info["node_id"] == node.node_id
    assert info["channels"] == [channel_name]


async def test_unknown_connection_is_404(node: NodeProcess, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{node.http_url}/api/connections/no-such-connection")
    assert response.status_code == 404
    assert response.json()["error"] == "connection_not_found"


# -- broadcast ---------------------------------------------------------------------


async def test_broadcast_to_everyone(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect
) -> None:
    await wait_connections(http, node, 0)
    clients = [await ws_connect(node.ws_url) for _ in range(3)]
    response = await http.post(
        f"{node.http_url}/api/broadcast",
        json={"message": text("Hello everyone!", metadata={"priority": "high"})},
    )
    assert response.status_code == 200
    assert response.json() == {"recipients": 3}
    for client in clients:
        frame = await client.recv_until(lambda f: f.get("payload") == "Hello everyone!")
        assert frame["type"] == "text"
        assert frame["metadata"] == {"priority": "high"}
        assert "channel" not in frame


async def test_broadcast_only_to(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect
) -> None:
    a, b, c = [await ws_connect(node.ws_url) for _ in range(3)]
    response = await http.post(
        f"{node.http_url}/api/broadcast",
        json={"message": text("only"), "only_to": [a.connection_id, c.connection_id]},
    )
    assert response.json() == {"recipients": 2}
    for client in (a, c):
        await client.recv_until(lambda f: f.get("payload") == "only")
    await nothing_for(b, "only")


async def test_broadcast_only_to_nobody(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect
) -> None:
    client = await ws_connect(node.ws_url)
    response = await http.post(
        f"{node.http_url}/api/broadcast", json={"message": text("nobody"), "only_to": []}
    )
    assert response.json() == {"recipients": 0}
    await nothing_for(client, "nobody")


async def test_broadcast_exclude(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect
) -> None:
    await wait_connections(http, node, 0)
    a, b = await ws_connect(node.ws_url), await ws_connect(node.ws_url)
    response = await http.post(
        f"{node.http_url}/api/broadcast",
        json={"message": {"type": "json", "payload": {"k": 1}}, "exclude": [a.connection_id]},
    )
    assert response.json() == {"recipients": 1}
    assert (await b.recv_until(lambda f: f.get("payload") == {"k": 1}))["type"] == "json"
    await a.sync()
    assert a.take(lambda f: f.get("payload") == {"k": 1}) == []


async def test_broadcast_to_a_channel_with_exclude(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    member, excluded, outsider = [await ws_connect(node.ws_url) for _ in range(3)]
    for client in (member, excluded):
        await client.command("subscribe", channel=channel_name)
    response = await http.post(
        f"{node.http_url}/api/broadcast",
        json={
            "message": {"type": "event", "payload": {"event": "vip", "data": None}},
            "channel": channel_name,
            "exclude": [excluded.connection_id],
        },
    )
    assert response.json() == {"recipients": 1}
    frame = await member.recv_until(in_channel(channel_name))
    assert frame["type"] == "event"
    assert frame["payload"] == {"event": "vip", "data": None}
    for client in (excluded, outsider):
        await client.sync()
        assert client.take(in_channel(channel_name)) == []


# -- channel publish, targeted send ----------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"type": "text", "payload": "Welcome to general chat!"},
        {"type": "json", "payload": {"active_users": 42, "cpu": 45.5}},
        {"type": "event", "payload": {"event": "entity.created", "data": {"id": "123"}}},
        {"type": "system", "payload": "Server maintenance in 5 minutes"},
        {"type": "json", "payload": [1, 2], "metadata": {"source": "api"}},
    ],
)
async def test_publish_to_channel(
    node: NodeProcess,
    http: httpx.AsyncClient,
    ws_connect: WsConnect,
    channel_name: str,
    message: dict[str, Any],
) -> None:
    listeners = [await ws_connect(node.ws_channel_url(channel_name)) for _ in range(2)]
    for listener in listeners:
        await listener.recv_until(reply_to("subscribe"))
    response = await http.post(
        f"{node.http_url}/api/channels/{channel_name}/publish", json=message
    )
    assert response.status_code == 200
    assert response.json() == {"recipients": 2}
    for listener in listeners:
        frame = await listener.recv_until(in_channel(channel_name))
        assert frame["type"] == message["type"]
        assert frame["payload"] == message["payload"]
        assert frame.get("metadata") == message.get("metadata")
        assert isinstance(frame["timestamp"], int)


async def test_publish_to_a_channel_without_subscribers(
    node: NodeProcess, http: httpx.AsyncClient, channel_name: str
) -> None:
    response = await http.post(
        f"{node.http_url}/api/channels/{channel_name}/publish", json=text("void")
    )
    assert response.status_code == 200
    assert response.json() == {"recipients": 0}


async def test_send_to_one_connection(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect
) -> None:
    target, other = await ws_connect(node.ws_url), await ws_connect(node.ws_url)
    response = await http.post(
        f"{node.http_url}/api/connections/{target.connection_id}/send",
        json={"type": "event", "payload": {"event": "user.joined", "data": {"userId": 42}}},
    )
    assert response.status_code == 200
    frame = await target.recv_until(lambda f: f.get("type") == "event")
    assert frame["payload"] == {"event": "user.joined", "data": {"userId": 42}}
    assert "channel" not in frame
    await other.sync()
    assert other.take(lambda f: f.get("type") == "event") == []


async def test_send_to_an_unknown_connection_is_404(
    node: NodeProcess, http: httpx.AsyncClient
) -> None:
    response = await http.post(
        f"{node.http_url}/api/connections/00000000-0000-4000-8000-000000000000/send",
        json=text("anyone?"),
    )
    assert response.status_code == 404
    assert response.json()["error"] == "connection_not_found"


async def test_send_to_a_connection_that_left_is_404(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect
) -> None:
    client = await ws_connect(node.ws_url)
    await client.close()
    url = f"{node.http_url}/api/connections/{client.connection_id}/send"

    async def gone() -> bool:
        return (await http.post(url, json=text("late"))).status_code == 404

    await eventually(gone, timeout=5, message="send to a closed connection answers 404")


# -- channel records ---------------------------------------------------------------------


async def test_put_creates_then_updates_a_channel(
    node: NodeProcess, http: httpx.AsyncClient, channel_name: str
) -> None:
    url = f"{node.http_url}/api/channels/{channel_name}"
    created = await http.put(url, json={"description": "General Chat Room"})
    assert created.status_code in (200, 201)
    assert created.json()["name"] == channel_name
    assert created.json()["description"] == "General Chat Room"
    assert created.json()["is_private"] is False
    updated = await http.put(url, json={"description": "Renamed"})
    assert updated.status_code == 200
    found = await http.get(url)
    assert found.status_code == 200
    assert found.json()["description"] == "Renamed"
    assert found.json()["created_at"] == created.json()["created_at"]
    assert found.json()["subscribers"] == 0


async def test_put_without_a_body_creates_a_channel(
    node: NodeProcess, http: httpx.AsyncClient, channel_name: str
) -> None:
    response = await http.put(f"{node.http_url}/api/channels/{channel_name}")
    assert response.status_code in (200, 201)
    assert (await http.get(f"{node.http_url}/api/channels/{channel_name}")).status_code == 200


async def test_list_channels_with_subscriber_counts(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    created = f"{channel_name}:created"
    await http.put(f"{node.http_url}/api/channels/{created}", json={"description": "d"})
    for _ in range(2):
        client = await ws_connect(node.ws_url)
        await client.command("subscribe", channel=channel_name)
    response = await http.get(f"{node.http_url}/api/channels")
    assert response.status_code == 200
    listed = {c["name"]: c for c in response.json()["channels"]}
    assert listed[channel_name]["subscribers"] == 2
    assert listed[created]["subscribers"] == 0
    assert listed[created]["description"] == "d"
    one = (await http.get(f"{node.http_url}/api/channels/{channel_name}")).json()
    assert one["subscribers"] == 2


async def test_unknown_channel_is_404(node: NodeProcess, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{node.http_url}/api/channels/never-created-here")
    assert response.status_code == 404
    assert response.json()["error"] == "channel_not_found"
    deleted = await http.delete(f"{node.http_url}/api/channels/never-created-here")
    assert deleted.status_code == 404


async def test_delete_channel_unsubscribes_everyone(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    url = f"{node.http_url}/api/channels/{channel_name}"
    await http.put(url, json={"description": "doomed"})
    members = [await ws_connect(node.ws_url) for _ in range(2)]
    for member in members:
        await member.command("subscribe", channel=channel_name)
    response = await http.delete(url)
    assert response.status_code == 200
    for member in members:
        notice = await member.recv_until(in_channel(channel_name))
        assert notice["type"] == "system"
        presence = await member.command("presence", channel=channel_name)
        assert presence["payload"]["count"] == 0
        listing = await member.command("list_channels")
        assert channel_name not in listing["payload"]["channels"]
    assert (await http.get(url)).status_code == 404
    published = await http.post(f"{url}/publish", json=text("after delete"))
    assert published.json() == {"recipients": 0}
    for member in members:
        await nothing_for(member, "after delete")


async def test_delete_of_an_implicit_channel_with_subscribers(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    member = await ws_connect(node.ws_url)
    await member.command("subscribe", channel=channel_name)
    assert (await http.delete(f"{node.http_url}/api/channels/{channel_name}")).status_code == 200
    info = (await http.get(f"{node.http_url}/api/connections/{member.connection_id}")).json()
    assert info["channels"] == []


# -- private channels --------------------------------------------------------------------


async def test_private_channel_refuses_client_subscribe(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    created = await http.put(
        f"{node.http_url}/api/channels/{channel_name}", json={"is_private": True}
    )
    assert created.json()["is_private"] is True
    client = await ws_connect(node.ws_url)
    cases: tuple[tuple[str, dict[str, Any]], ...] = (
        ("subscribe", {}),
        ("publish", {"data": "sneaky"}),
        ("presence", {}),
    )
    for command, fields in cases:
        reply = await client.command(command, channel=channel_name, **fields)
        assert reply["metadata"]["ok"] is False, command
        assert reply["metadata"]["error"] == "forbidden", command
        assert reply["metadata"]["command"] == command
    listing = await client.command("list_channels")
    assert channel_name not in listing["payload"]["channels"]
    stats_after = (await http.get(f"{node.http_url}/api/channels/{channel_name}")).json()
    assert stats_after["subscribers"] == 0
    assert (await client.command("ping"))["type"] == "pong"  # still connected


async def test_private_channel_refuses_the_channel_endpoint(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, channel_name: str
) -> None:
    await http.put(f"{node.http_url}/api/channels/{channel_name}", json={"is_private": True})
    client = await ws_connect(node.ws_channel_url(channel_name))
    reply = await client.recv_until(reply_to("subscribe"))
    assert reply["metadata"]["ok"] is False
    assert reply["metadata"]["error"] == "forbidden"
    published = await http.post(
        f"{node.http_url}/api/channels/{channel_name}/publish", json=text("secret")
    )
    assert published.json() == {"recipients": 0}


# -- bad requests ----------------------------------------------------------------------------


BAD_MESSAGES: list[Any] = [
    {},
    {"payload": "no type"},
    {"type": "ping"},
    {"type": "binary", "payload": "AAAA"},
    {"type": "banana", "payload": 1},
    {"type": "text", "payload": 5},
    {"type": "text", "payload": None},
    {"type": "event", "payload": "not an object"},
    {"type": "event", "payload": {"data": 1}},
    {"type": "system", "payload": {"command": "subscribe"}},
    {"type": "json", "payload": 1, "metadata": [1]},
    {"type": "json", "payload": 1, "timestamp": 5},
    {"type": "json", "payload": 1, "surprise": True},
    [1, 2],
    "text",
]


@pytest.mark.parametrize("message", BAD_MESSAGES)
async def test_bad_messages_are_400(
    node: NodeProcess, http: httpx.AsyncClient, ws_connect: WsConnect, message: Any
) -> None:
    client = await ws_connect(node.ws_url)
    base = node.http_url
    for method, url, body in (
        ("POST", f"{base}/api/broadcast", {"message": message}),
        ("POST", f"{base}/api/channels/some-channel/publish", message),
        ("POST", f"{base}/api/connections/{client.connection_id}/send", message),
    ):
        response = await http.request(method, url, json=body)
        assert response.status_code == 400, (url, response.text)
        assert isinstance(response.json()["error"], str)
    await client.sync()
    assert list(client.buffer) == []


@pytest.mark.parametrize(
    "body",
    [
        {"only_to": []},
        {"message": {"type": "text", "payload": "x"}, "only_to": "abc"},
        {"message": {"type": "text", "payload": "x"}, "only_to": [1, 2]},
        {"message": {"type": "text", "payload": "x"}, "exclude": {"a": 1}},
        {"message": {"type": "text", "payload": "x"}, "channel": ""},
        {"message": {"type": "text", "payload": "x"}, "channel": "x" * 256},
        {"message": {"type": "text", "payload": "x"}, "channel": "a\nb"},
        {"message": {"type": "text", "payload": "x"}, "channel": 7},
        {"message": {"type": "text", "payload": "x"}, "extra": 1},
    ],
)
async def test_bad_broadcast_bodies_are_400(
    node: NodeProcess, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post(f"{node.http_url}/api/broadcast", json=body)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", "/api/broadcast", b"{not json"),
        ("POST", "/api/broadcast", b""),
        ("POST", "/api/channels/c/publish", b"\xff\xfe"),
        ("POST", "/api/connections/x/send", b"[1,"),
        ("PUT", "/api/channels/c", b"{oops"),
    ],
)
async def test_malformed_json_bodies_are_400(
    node: NodeProcess, http: httpx.AsyncClient, method: str, path: str, content: bytes
) -> None:
    response = await http.request(
        method, f"{node.http_url}{path}", content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "body",
    [{"is_private": "yes"}, {"description": 5}, {"name": "x"}, [1], "text"],
)
async def test_bad_channel_bodies_are_400(
    node: NodeProcess, http: httpx.AsyncClient, channel_name: str, body: Any
) -> None:
    url = f"{node.http_url}/api/channels/{channel_name}"
    response = await http.put(url, json=body)
    assert response.status_code == 400, response.text
    assert (await http.get(url)).status_code == 404


@pytest.mark.parametrize("channel", ["x" * 256, "a%0Ab", "nul%00", "del%7F"])
async def test_invalid_channel_names_in_paths_are_400(
    node: NodeProcess, http: httpx.AsyncClient, channel: str
) -> None:
    base = f"{node.http_url}/api/channels/{channel}"
    for method, url, body in (
        ("PUT", base, {}),
        ("GET", base, None),
        ("DELETE", base, None),
        ("POST", f"{base}/publish", text("x")),
    ):
        response = await http.request(method, url, json=body)
        assert response.status_code == 400, (method, response.text)
        assert response.json()["error"] == "invalid_channel"


async def test_unknown_paths_are_404(node: NodeProcess, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{node.http_url}/api/nothing-here")).status_code == 404
    assert (await http.get(f"{node.http_url}/nothing")).status_code == 404


async def test_the_node_log_has_no_traceback(node: NodeProcess, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{node.http_url}/healthz")).status_code == 200
    node.assert_log_clean()
