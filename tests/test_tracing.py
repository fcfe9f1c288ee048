"""One trace across processes: two real nodes on a real NATS broker export
their spans over OTLP/HTTP to a receiver that this test runs in-process.

A publish through node A's HTTP API, delivered to clients on node B, is one
trace: A's HTTP server span, A's ``publish`` PRODUCER span, and exactly one
``deliver`` CONSUMER span on B (its parent taken from the envelope), whatever
the number of recipients there. The same holds for a client ``publish``
command, whose ``command publish`` span links to its socket's
``websocket open`` span. Logs (JSON) name the span they were written in.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support.brokers import Broker
from support.client import WsConnect
from support.cluster import Cluster, on_every_node, subscribe, tagged
from support.nodes import NodePool, NodeProcess
from support.otlp import CapturedSpan, OtlpReceiver

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SERVICE = "rtforge-trace-test"
#: time to let stray spans arrive before asserting that there are none
_SETTLE = 0.5


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def nodes(
    nats_broker: Broker, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    """Nodes A and B of one cluster on NATS, tracing into ``receiver``."""
    pool = NodePool(tmp_path_factory.mktemp("traced"))
    cluster = Cluster("nats", pool, broker=nats_broker, log_format="json")
    try:
        a, b = cluster.start_nodes(2, env=receiver.env(SERVICE))
        cluster.wait_formed()
        yield a, b
    finally:
        pool.close()


def _channel() -> str:
    return f"trace-{uuid.uuid4().hex[:10]}"


def _one(spans: list[CapturedSpan], **where: Any) -> CapturedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in where.items())]
    assert len(found) == 1, f"expected one span with {where}, found {len(found)}: {found}"
    return found[0]


def _has(spans: list[CapturedSpan], trace_id: str, kind: str, node: NodeProcess) -> bool:
    return any(
        s.trace_id == trace_id and s.kind == kind and s.service_instance == node.node_id
        for s in spans
    )


async def _subscribers_seen(
    http: httpx.AsyncClient, node: NodeProcess, channel: str, count: int
) -> None:
    await on_every_node(
        http, [node], f"/api/channels/{channel}", lambda body: body["subscribers"], count
    )


async def test_an_http_publish_on_node_a_is_one_trace_with_node_b_that_delivers_it(
    nodes: tuple[NodeProcess, NodeProcess],
    receiver: OtlpReceiver,
    ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    a, b = nodes
    channel = _channel()
    clients = [await ws_connect(b.ws_url) for _ in range(3)]
    for client in clients:
        await subscribe(client, channel)
    await _subscribers_seen(http, a, channel, 3)
    assert (await http.get(f"{a.http_url}/metrics")).status_code == 200  # never traced

    # The caller's own trace context is continued (W3C traceparent header).
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    tag = uuid.uuid4().hex
    response = await http.post(
        f"{a.http_url}/api/channels/{channel}/publish",
        json={"type": "json", "payload": {"tag": tag}},
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
    )
    assert response.status_code == 200 and response.json() == {"recipients": 3}
    for client in clients:
        await client.recv_until(tagged(tag))

    receiver.wait_for(
        lambda spans: _has(spans, trace_id, "SERVER", a) and _has(spans, trace_id, "CONSUMER", b),
        message="the HTTP span of A and the deliver span of B",
    )
    await asyncio.sleep(_SETTLE)
    spans = receiver.trace(trace_id)

    server = _one(spans, kind="SERVER")
    assert server.service_instance == a.node_id
    assert server.parent_span_id == caller_span
    assert server.name == "POST /api/channels/{channel}/publish"
    assert server.attributes["http.route"] == "/api/channels/{channel}/publish"

    producer = _one(spans, kind="PRODUCER")
    assert producer.service_instance == a.node_id
    assert producer.name == "publish channel"
    assert producer.parent_span_id == server.span_id
    assert producer.attributes["messaging.system"] == "rtforge"
    assert producer.attributes["messaging.operation.type"] == "send"
    assert producer.attributes["messaging.destination.name"] == channel
    assert producer.attributes["rtforge.recipients"] == 3

    # One span on B for three recipients, none on A (it has no subscriber).
    consumer = _one(spans, kind="CONSUMER")
    assert consumer.service_instance == b.node_id
    assert consumer.name == "deliver channel"
    assert consumer.parent_span_id == producer.span_id
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert consumer.attributes["rtforge.recipients.local"] == 3
    assert consumer.attributes["rtforge.frames.dropped"] == 0
    assert consumer.attributes["rtforge.origin_node"] == a.node_id
    assert len(spans) == 3, [s.name for s in spans]

    assert {s.resource["service.name"] for s in spans} == {SERVICE}
    assert {s.service_instance for s in spans} == {a.node_id, b.node_id}
    scraped = ("/metrics", "/readyz")
    assert not receiver.find(
        lambda s: s.attributes.get("http.target", s.attributes.get("url.path")) in scraped
    )


async def test_a_client_publish_command_is_one_trace_across_both_nodes(
    nodes: tuple[NodeProcess, NodeProcess],
    receiver: OtlpReceiver,
    ws_connect: WsConnect,
    http: httpx.AsyncClient,
) -> None:
    a, b = nodes
    channel = _channel()
    publisher = await ws_connect(a.ws_url)
    listener = await ws_connect(b.ws_url)
    await subscribe(publisher, channel)  # a local recipient on A as well
    await subscribe(listener, channel)
    await _subscribers_seen(http, a, channel, 2)

    tag = uuid.uuid4().hex
    reply = await publisher.command("publish", channel=channel, data={"tag": tag})
    assert reply["metadata"]["ok"] is True and reply["metadata"]["recipients"] == 2
    await listener.recv_until(tagged(tag))
    await publisher.recv_until(tagged(tag))

    def command_span(spans: list[CapturedSpan]) -> CapturedSpan | None:
        for span in spans:
            if (
                span.name == "command publish"
                and span.attributes.get("rtforge.channel") == channel
            ):
                return span
        return None

    spans = receiver.wait_for(
        lambda spans: (found := command_span(spans)) is not None
        and _has(spans, found.trace_id, "CONSUMER", b),
        message="the command span of A and the deliver span of B",
    )
    command = command_span(spans)
    assert command is not None
    await asyncio.sleep(_SETTLE)
    spans = receiver.trace(command.trace_id)

    assert command.kind == "SERVER" and command.service_instance == a.node_id
    assert command.attributes["rtforge.connection_id"] == publisher.connection_id
    assert command.attributes["rtforge.command.ok"] is True
    producer = _one(spans, kind="PRODUCER")
    assert producer.parent_span_id == command.span_id
    assert producer.service_instance == a.node_id
    consumers = sorted(
        (s for s in spans if s.kind == "CONSUMER"), key=lambda s: s.service_instance
    )
    assert [s.service_instance for s in consumers] == sorted([a.node_id, b.node_id])
    for consumer in consumers:
        assert consumer.parent_span_id == producer.span_id
        assert consumer.attributes["rtforge.recipients.local"] == 1

    # The command span links to the span in which the socket was opened.
    (opened,) = receiver.find(
        lambda s: s.name == "websocket open"
        and s.attributes.get("rtforge.connection_id") == publisher.connection_id
    )
    assert opened.service_instance == a.node_id
    assert (opened.trace_id, opened.span_id) in command.links


async def test_socket_spans_and_json_log_lines_share_ids(
    nodes: tuple[NodeProcess, NodeProcess], receiver: OtlpReceiver, ws_connect: WsConnect
) -> None:
    _, b = nodes
    client = await ws_connect(b.ws_url)
    connection_id = client.connection_id
    await client.close()

    def socket_spans(spans: list[CapturedSpan]) -> dict[str, CapturedSpan]:
        return {
            s.name: s for s in spans
            if s.attributes.get("rtforge.connection_id") == connection_id
        }

    receiver.wait_for(
        lambda spans: set(socket_spans(spans)) == {"websocket open", "websocket close"},
        message="websocket open and close spans",
    )
    found = socket_spans(receiver.spans)
    opened, closed = found["websocket open"], found["websocket close"]
    assert opened.kind == "SERVER" and opened.service_instance == b.node_id
    assert closed.attributes["rtforge.close.reason"] == "client"
    assert (opened.trace_id, opened.span_id) in closed.links

    def log_events() -> dict[str, dict[str, Any]]:
        events = {}
        for line in b.log_text().splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("connection_id") == connection_id:
                events[record["event"]] = record
        return events

    events = await _eventually(lambda: (e := log_events()) and len(e) == 2 and e)
    assert events["connection_opened"]["trace_id"] == opened.trace_id
    assert events["connection_opened"]["span_id"] == opened.span_id
    assert events["connection_closed"]["span_id"] == closed.span_id
    assert events["connection_closed"]["node_id"] == b.node_id
    assert events["connection_closed"]["reason"] == "client"


async def _eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if value:
            return value
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError("timed out waiting for the log lines")
        await asyncio.sleep(0.05)
