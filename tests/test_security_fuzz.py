"""Fuzz a live node: thousands of random and mutated frames over many sockets.

20 sockets each send 300 frames (random bytes, random text, JSON of random
shape, valid commands and mutations of them: cut, byte flips, duplicated
spans, spliced garbage) while reading whatever comes back; a few more
sockets send what the node must close (an oversized frame, invalid UTF-8).
Afterwards every fuzz socket still answers a ping, the node serves a normal
client, holds no leaked connection or subscription once the sockets close,
and its log has no traceback. The random seed is fixed and printed."""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any

import httpx
import pytest
from support.client import WsClient
from support.nodes import NodeFactory, NodeProcess
from support.polling import eventually
from support.tokens import SECRET, hs256

SOCKETS = 20
FRAMES = 300
MAX_SIZE = 8192
SEED = int(os.environ.get("RTFORGE_FUZZ_SEED", "20261127"))

COMMANDS = ["subscribe", "unsubscribe", "list_channels", "publish", "presence", "ping"]
CHANNELS = ["fuzz:a", "fuzz:b", "public:x", "notifications:user-1", "", "a" * 300, "ü:ñ"]


@pytest.fixture(scope="module", params=["open", "jwt"])
def target(
    request: pytest.FixtureRequest, module_start_node: NodeFactory
) -> tuple[NodeProcess, str]:
    """The node, and the query string its clients connect with."""
    if request.param == "open":
        return module_start_node(max_message_size=MAX_SIZE, max_subscriptions=50), ""
    node = module_start_node(max_message_size=MAX_SIZE, max_subscriptions=50,
                             jwt_secret=SECRET, max_connections_per_user=SOCKETS + 5)
    return node, f"?token={hs256(sub='1', channels={'fuzz:*': '*'})}"


def _valid(rng: random.Random) -> dict[str, Any]:
    choice = rng.random()
    if choice < 0.6:
        payload: dict[str, Any] = {"command": rng.choice(COMMANDS),
                                   "channel": rng.choice(CHANNELS), "id": rng.randint(0, 9)}
        if rng.random() < 0.5:
            payload["data"] = rng.choice([None, 1, "x", [1, 2], {"k": "v"}])
        if rng.random() < 0.2:
            payload["event"] = rng.choice(["e", "", 5])
        return {"type": "system", "payload": payload}
    kind = rng.choice(["text", "json", "event", "system", "ping", "pong", "binary", "nope"])
    return {"type": kind, "payload": rng.choice(["hi", 1, None, {"event": "e", "data": 1},
                                                 "aGVsbG8=", [], {}])}


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice([None, True, False, 0, -1, 2**63, 1.5, "", "s", "\u0000", "🙂"])
    if roll < 0.7:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["type", "payload", "command", "channel", "id", "x"]):
            _random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _mutate(rng: random.Random, text: str) -> str:
    data = bytearray(text.encode())
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        at = rng.randrange(len(data))
        how = rng.randrange(4)
        if how == 0:
            del data[at:]
        elif how == 1:
            data[at] = rng.randrange(256)
        elif how == 2:
            data[at:at] = data[at:at + rng.randint(1, 16)]
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return data.decode("utf-8", errors="replace")  # a text frame must stay valid UTF-8


def frame(rng: random.Random) -> str | bytes:
    roll = rng.random()
    if roll < 0.1:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    if roll < 0.2:
        return "".join(chr(rng.randrange(1, 0x2FFF)) for _ in range(rng.randint(0, 64)))
    if roll < 0.35:
        return json.dumps(_random_json(rng))
    if roll < 0.55:
        return json.dumps(_valid(rng))
    return _mutate(rng, json.dumps(_valid(rng)))


async def fuzz_socket(url: str, rng: random.Random) -> int:
    """Send FRAMES fuzz frames, then a ping; read everything up to its pong.
    Returns the number of frames the server sent back."""
    async with await WsClient.connect(url) as client:
        for _ in range(FRAMES):
            await client.ws.send(frame(rng))
        await client.ws.send(json.dumps({"type": "system",
                                         "payload": {"command": "ping", "id": "final"}}))
        pong = await client.recv_until(
            lambda f: f.get("type") == "pong" and (f.get("metadata") or {}).get("id") == "final",
            timeout=15,
        )
        assert pong["metadata"]["ok"] is True
        return len(client.buffer) + 1


async def test_fuzzed_node_keeps_serving_and_leaks_nothing(
    target: tuple[NodeProcess, str], http: httpx.AsyncClient
) -> None:
    node, query = target
    url = node.ws_url + query
    print(f"fuzz seed {SEED} (set RTFORGE_FUZZ_SEED to replay)")
    rng = random.Random(SEED)
    seeds = [rng.randrange(2**32) for _ in range(SOCKETS)]
    received = await asyncio.gather(
        *(fuzz_socket(url, random.Random(seed)) for seed in seeds)
    )
    assert sum(received) > SOCKETS * FRAMES // 2  # the node answered most frames

    # frames the node must close on
    oversized = await WsClient.connect(url)
    await oversized.send_text("x" * (MAX_SIZE + 1))
    assert (await oversized.expect_close()).code == 1009
    invalid_utf8 = await WsClient.connect(url)
    await invalid_utf8.ws.send(b"\xff\xfe{", text=True)
    assert (await invalid_utf8.expect_close()).code == 1007

    # a normal client is served as ever
    async with await WsClient.connect(url) as normal:
        assert (await normal.command("subscribe", channel="fuzz:after"))["metadata"]["ok"]
        publish = await normal.command("publish", channel="fuzz:after", data="ok")
        assert publish["metadata"]["recipients"] == 1
        delivered = await normal.recv_until(lambda f: f.get("channel") == "fuzz:after")
        assert delivered["payload"] == "ok"

    async def nothing_left() -> dict[str, Any] | None:
        stats = (await http.get(f"{node.http_url}/api/stats")).json()
        clean = stats["connections"] == 0 and stats["subscriptions"] == 0
        clean = clean and stats["local"]["connections"] == 0
        return stats if clean else None

    await eventually(nothing_left, timeout=10, message="no connections or subscriptions left")
    node.assert_log_clean(("Traceback", "Exception in ASGI application", "ERROR"))
