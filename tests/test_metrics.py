"""``/metrics``: Prometheus text that a Prometheus parser reads, names after
Prometheus conventions, no unbounded label values, and counters that move by
exactly what a scripted exchange of frames, commands and publishes does."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.client import WsConnect, in_channel, of_type, reply_to
from support.metrics import Samples, metric_value, parse_metrics, scrape
from support.nodes import NodeFactory, NodeProcess
from support.polling import eventually

#: every metric the issue asks for, as sample names in the exposition
REQUIRED = (
    "rtforge_connections",
    "rtforge_channels",
    "rtforge_subscriptions",
    "rtforge_connections_opened_total",
    "rtforge_frames_received_total",
    "rtforge_frames_sent_total",
    "rtforge_deliveries_total",
    "rtforge_frames_dropped_total",
    "rtforge_slow_consumer_disconnects_total",
    "rtforge_heartbeat_timeouts_total",
    "rtforge_backplane_publish_seconds_bucket",
    "rtforge_backplane_publish_seconds_count",
    "rtforge_backplane_errors_total",
    "rtforge_backplane_up",
    "rtforge_node_info",
)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@pytest.fixture
def quiet_node(start_node: NodeFactory) -> NodeProcess:
    """A node of its own (no other test moves its counters), no pings."""
    return start_node(heartbeat_interval=600, heartbeat_timeout=1200)


async def test_metrics_parse_and_follow_prometheus_conventions(
    node: NodeProcess, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{node.http_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    names = {sample.name for family in families for sample in family.samples}
    missing = [name for name in REQUIRED if name not in names]
    assert not missing, f"/metrics lacks {missing}"
    for family in families:
        if not family.name.startswith("rtforge_"):
            continue
        assert _NAME.match(family.name), family.name
        assert family.documentation, f"{family.name} has no help text"
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            if family.type == "histogram":
                assert family.name.endswith("_seconds"), f"{family.name}: unit in the name"
    info = [s for f in families if f.name == "rtforge_node_info" for s in f.samples]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["node_id"] == node.node_id
    assert info[0].labels["backend"] == "memory"
    assert info[0].labels["tracing"] == "off"
    assert info[0].labels["version"]


async def test_counters_move_by_exactly_what_a_scripted_exchange_does(
    quiet_node: NodeProcess,
    http: httpx.AsyncClient,
    ws_connect: WsConnect,
    channel_name: str,
) -> None:
    node = quiet_node
    before = await scrape(http, node.http_url)

    listener = await ws_connect(node.ws_channel_url(channel_name))  # welcome + subscribe reply
    await listener.recv_until(reply_to("subscribe"))
    talker = await ws_connect(node.ws_url)  # welcome
    assert (await talker.command("subscribe", channel=channel_name))["metadata"]["ok"]
    reply = await talker.command("publish", channel=channel_name, data={"n": 1})
    assert reply["metadata"]["recipients"] == 2
    response = await http.post(
        f"{node.http_url}/api/broadcast",
        json={"message": {"type": "json", "payload": {"n": 2}}, "channel": channel_name},
    )
    assert response.json() == {"recipients": 2}
    for client in (listener, talker):
        await client.recv_many(in_channel(channel_name), 2)
    await listener.send_json({"type": "ping"})
    await listener.recv_until(of_type("pong"))
    assert (await listener.command("no_such_command"))["metadata"]["error"] == "unknown_command"
    await listener.send_text("hello, not JSON")
    await listener.recv_until(lambda f: f.get("payload") == "Message received")
    sent = await http.post(
        f"{node.http_url}/api/connections/{talker.connection_id}/send",
        json={"type": "text", "payload": "direct"},
    )
    assert sent.status_code == 200
    await talker.recv_until(lambda f: f.get("payload") == "direct")
    await talker.close()

    async def closed() -> Samples | None:
        samples = await scrape(http, node.http_url)
        done = metric_value(samples, "rtforge_connections_closed_total", reason="client")
        return samples if done > metric_value(
            before, "rtforge_connections_closed_total", reason="client"
        ) else None

    after = await eventually(closed, message="the closed connection in /metrics")

    def moved(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    expected = {
        ("rtforge_connections_opened_total", ()): 2,
        ("rtforge_connections_closed_total", (("reason", "client"),)): 1,
        ("rtforge_frames_received_total", (("kind", "command"),)): 3,
        ("rtforge_frames_received_total", (("kind", "ping"),)): 1,
        ("rtforge_frames_received_total", (("kind", "text"),)): 1,
        ("rtforge_commands_total", (("command", "subscribe"), ("outcome", "ok"))): 2,
        ("rtforge_commands_total", (("command", "publish"), ("outcome", "ok"))): 1,
        ("rtforge_commands_total", (("command", "unknown"), ("outcome", "error"))): 1,
        ("rtforge_publishes_total", (("route", "channel"),)): 2,
        ("rtforge_envelopes_delivered_total", (("route", "channel"),)): 2,
        ("rtforge_deliveries_total", ()): 5,
        ("rtforge_frames_sent_total", (("kind", "delivery"),)): 5,
        ("rtforge_frames_sent_total", (("kind", "reply"),)): 5,
        ("rtforge_frames_sent_total", (("kind", "pong"),)): 1,
        ("rtforge_frames_sent_total", (("kind", "system"),)): 2,
        ("rtforge_frames_sent_total", (("kind", "ping"),)): 0,
        ("rtforge_frames_dropped_total", ()): 0,
        ("rtforge_slow_consumer_disconnects_total", ()): 0,
        ("rtforge_heartbeat_timeouts_total", ()): 0,
        ("rtforge_backplane_publish_seconds_count", ()): 2,
        ("rtforge_backplane_errors_total", ()): 0,
    }
    actual = {key: moved(key[0], **dict(key[1])) for key in expected}
    assert actual == expected
    assert metric_value(after, "rtforge_connections") == 1
    assert metric_value(after, "rtforge_subscriptions") == 1
    assert metric_value(after, "rtforge_channels") == 1
    assert metric_value(after, "rtforge_backplane_up") == 1

    # No label carries a channel name or a connection id.
    text = (await http.get(f"{node.http_url}/metrics")).text
    for unbounded in (channel_name, listener.connection_id, talker.connection_id):
        assert unbounded not in text


def test_the_text_parser_reads_what_the_helper_reads(node: NodeProcess) -> None:
    text = httpx.get(f"{node.http_url}/metrics", trust_env=False).text
    samples = parse_metrics(text)
    assert metric_value(samples, "rtforge_backplane_up") == 1
