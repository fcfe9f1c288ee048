"""Channel names are data, never broker syntax.

NATS subjects treat ``.`` as a separator and ``*`` / ``>`` as wildcards;
Redis keys and channels use ``:`` by convention and match patterns with
``*``, ``?`` and ``[]``. A channel name with any of these must reach exactly
its own subscribers, with its name unchanged in every frame and listing, on
every backend. Names with ``/`` cannot be put in a URL path: they are
published with ``POST /api/broadcast`` and ``"channel"`` or the client
``publish`` command.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from support.client import Frame, WsClient, WsConnect, reply_to
from support.cluster import Cluster, on_every_node, quiet, subscribe, tagged

pytestmark = pytest.mark.cluster

HOSTILE = [
    # NATS syntax: separators and wildcards, alone and in every position
    "a", "a.b", "a.*", "a.>", ">", "*", "*.*", "a.b.c", "a..b", ".a", "a.", "*.b", ">.b",
    # Redis conventions and glob patterns
    "x:y", "x:*", "ns:[ab]", "a?", "[", "\\",
    # whitespace, URL syntax, percent signs
    "chat room", " lead", "trail ", "x/y", "/", "a/b/c", "50%off", "%2F", "#general",
    "q?x=1&y=2", "a+b", "=", "~",
    # Unicode: composed and decomposed forms are different names, and so is case
    "ünï", "u\u0308ni\u0308", "é", "e\u0301", "A", "A.B", "名前.チャンネル", "🚀.*", "\u200b",
    # base64 look-alikes: a name must never be confused with its own token
    "YQ", "YS5i", "-_", "==",
    # the longest name: 255 characters of 4 UTF-8 bytes each
    "😀" * 255,
]
assert len(set(HOSTILE)) == len(HOSTILE)


def meta(frame: Frame) -> dict[str, Any]:
    metadata = frame.get("metadata")
    assert isinstance(metadata, dict), frame
    return metadata


@pytest.fixture(autouse=True)
async def _idle_cluster(cluster: Cluster, http: httpx.AsyncClient) -> None:
    await on_every_node(
        http, cluster.live_nodes, "/api/stats", lambda s: s["connections"], 0, timeout=15
    )


async def test_hostile_names_stay_isolated_and_round_trip(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    # One subscriber per name, spread over the nodes.
    subscribers = [await ws_connect(cluster.node(i).ws_url) for i in range(len(HOSTILE))]
    publishers = [await ws_connect(cluster.node(i).ws_url) for i in range(3)]
    for name, client in zip(HOSTILE, subscribers, strict=True):
        await subscribe(client, name)

    def counts(listing: dict[str, Any]) -> dict[str, int]:
        return {c["name"]: c["subscribers"] for c in listing["channels"] if c["name"] in HOSTILE}

    await on_every_node(
        http, cluster.live_nodes, "/api/channels", counts, dict.fromkeys(HOSTILE, 1), timeout=15
    )
    tag = uuid.uuid4().hex

    async def publish(index: int, name: str) -> None:
        # from a client on the next node, and from the API of the one after
        reply = await publishers[(index + 1) % 3].command(
            "publish", channel=name, data={"tag": tag, "to": name, "via": "ws"}
        )
        assert meta(reply)["ok"] is True, reply
        assert meta(reply)["recipients"] == 1, name
        assert reply["payload"] == f"Published to channel: {name}"
        response = await http.post(
            f"{cluster.node(index + 2).http_url}/api/broadcast",
            json={
                "channel": name,
                "message": {"type": "json", "payload": {"tag": tag, "to": name, "via": "api"}},
            },
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"recipients": 1}, name

    for index, name in enumerate(HOSTILE):
        await publish(index, name)

    async def check(name: str, client: WsClient) -> None:
        frames = await client.recv_many(tagged(tag), 2)
        assert sorted(f["payload"]["via"] for f in frames) == ["api", "ws"], name
        for frame in frames:
            assert frame["channel"] == name
            assert frame["payload"]["to"] == name

    await asyncio.gather(*(check(n, c) for n, c in zip(HOSTILE, subscribers, strict=True)))
    # Nobody got a third frame: no wildcard ever matched another name.
    await quiet([*subscribers, *publishers], tagged(tag), within=0.5)

    # Listings and presence name every channel exactly, on every node.
    for index, client in enumerate(publishers):
        listed = await client.command("list_channels")
        assert set(HOSTILE) <= set(listed["payload"]["channels"]), f"node {index}"
        for name in HOSTILE:
            presence = await client.command("presence", channel=name)
            assert presence["payload"] == {"channel": name, "count": 1}
    for name, client in zip(HOSTILE, subscribers, strict=True):
        info = (await http.get(
            f"{cluster.node(1).http_url}/api/connections/{client.connection_id}"
        )).json()
        assert info["channels"] == [name]


async def test_hostile_names_in_url_paths(
    cluster: Cluster, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    """Percent-encoded in a path, every name without ``/`` works in the
    channel endpoints of the API and in ``/ws/{channel}``."""
    names = [n for n in HOSTILE if "/" not in n and n not in (".", "..")]
    tag = uuid.uuid4().hex
    clients = []
    for index, name in enumerate(names):
        client = await ws_connect(cluster.node(index).ws_channel_url(name))
        assert client.welcome is not None
        assert client.welcome["payload"] == f"Connected to channel: {name}"
        subscribed = await client.recv_until(reply_to("subscribe"))
        assert meta(subscribed)["ok"] is True, subscribed
        clients.append(client)
    for index, name in enumerate(names):
        url = f"/api/channels/{quote(name, safe='')}"
        await on_every_node(
            http, cluster.live_nodes, url, lambda c: (c["name"], c["subscribers"]), (name, 1)
        )
        response = await http.post(
            f"{cluster.node(index + 1).http_url}{url}/publish",
            json={"type": "json", "payload": {"tag": tag, "to": name}},
        )
        assert response.json() == {"recipients": 1}, name
    for name, client in zip(names, clients, strict=True):
        frame = await client.recv_until(tagged(tag))
        assert frame["channel"] == name
        assert frame["payload"]["to"] == name
    await quiet(clients, tagged(tag))


async def test_a_record_with_a_hostile_name_round_trips(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    """Explicit channels (created with PUT) keep their exact names on every node."""
    names = [f"{n}{uuid.uuid4().hex[:4]}" for n in ("a.*", ">", "x:y", "ünï ", "e\u0301")]
    for index, name in enumerate(names):
        response = await http.put(
            f"{cluster.node(index).http_url}/api/channels/{quote(name, safe='')}",
            json={"description": name},
        )
        assert response.status_code == 201, response.text
        assert response.json()["name"] == name

    def described(listing: dict[str, Any]) -> dict[str, str]:
        return {c["name"]: c["description"] for c in listing["channels"] if c["name"] in names}

    await on_every_node(
        http, cluster.live_nodes, "/api/channels", described, {n: n for n in names}
    )
