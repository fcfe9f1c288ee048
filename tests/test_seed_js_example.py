"""The seed document's JavaScript client example, unchanged, in Chromium.

The two snippets are copied verbatim from the seed ("Client-Verbindung" and
"Client-seitig (System Commands)"). The node runs on the seed's own address,
``localhost:3000``, when that port is free; otherwise (a busy machine) the
only edit made to the snippet is the port.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from support.nodes import NodeFactory

SEED_CONNECT = """
// Hauptverbindung
const ws = new WebSocket('ws://localhost:3000/ws');

// Channel-spezifisch
const chatWs = new WebSocket('ws://localhost:3000/ws/chat:room1');

ws.onopen = () => {
    console.log('Connected!');
};

ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    console.log('Received:', message);
};
"""

SEED_COMMANDS = """
// Channel abonnieren
ws.send(JSON.stringify({
    type: "system",
    payload: {
        command: "subscribe",
        channel: "chat:room1"
    }
}));

// Channel deabonnieren
ws.send(JSON.stringify({
    type: "system",
    payload: {
        command: "unsubscribe",
        channel: "chat:room1"
    }
}));

// Channels auflisten
ws.send(JSON.stringify({
    type: "system",
    payload: {
        command: "list_channels"
    }
}));
"""


def _port_3000_free() -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 3000))
        except OSError:
            return False
        return True


async def test_the_seed_javascript_example_runs_unchanged(
    start_node: NodeFactory, browser: Any
) -> None:
    port = 3000 if _port_3000_free() else None
    node = start_node(port=port)
    connect, commands = SEED_CONNECT, SEED_COMMANDS
    if node.port != 3000:
        connect = connect.replace("localhost:3000", f"localhost:{node.port}")
    page = await browser.new_page()
    logged: list[tuple[str, Any]] = []
    arrived = asyncio.Event()

    async def on_console(message: Any) -> None:
        values = [await arg.json_value() for arg in message.args]
        logged.append((values[0], values[1] if len(values) > 1 else None))
        arrived.set()

    page.on("console", on_console)
    await page.goto(f"{node.http_url}/healthz")
    # Top-level const bindings of one script are visible to the next one.
    await page.add_script_tag(content=connect)

    async def wait_for(count: int) -> None:
        async with asyncio.timeout(10):
            while len([x for x in logged if x[0] == "Received:"]) < count:
                arrived.clear()
                await arrived.wait()

    await wait_for(1)  # the welcome on /ws
    assert ("Connected!", None) in logged
    await page.add_script_tag(content=commands)
    await wait_for(4)  # welcome + three replies
    received = [m for tag, m in logged if tag == "Received:"]
    welcome, subscribed, unsubscribed, listed = received[:4]
    assert welcome["type"] == "system" and welcome["payload"] == "WebSocket connected"
    assert welcome["metadata"]["connection_id"]
    assert subscribed["payload"] == "Subscribed to channel: chat:room1"
    assert subscribed["metadata"]["ok"] is True
    assert unsubscribed["payload"] == "Unsubscribed from channel: chat:room1"
    # chatWs, connected to /ws/chat:room1, keeps the channel alive.
    assert listed["type"] == "json" and "chat:room1" in listed["payload"]["channels"]
    await page.close()
