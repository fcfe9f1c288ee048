"""Tracing in-process: configuration from ``OTEL_*`` variables (off by
default), the spans of a publish, a fan-out and a command, and log lines
that carry the active span's ids. The cross-process trace (two nodes on a
real broker, a real OTLP receiver) is in ``test_tracing.py``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.nodes import REPO_ROOT, NodeFactory
from support.polling import eventually

from backends import Envelope, Route
from service import ConnectionMetadata, Settings, SettingsError, WebSocketManager, WebSocketMessage
from service.app import create_node
from service.connection import Connection
from service.logs import JsonFormatter, TraceContextFilter
from service.protocol import ClientProtocol
from service.telemetry import TelemetryConfig
from service.tracing import Tracing

# -- configuration -------------------------------------------------------------


def test_tracing_is_off_without_otel_variables() -> None:
    config = TelemetryConfig.from_env({"RTFORGE_PORT": "1", "OTEL_SERVICE_NAME": "x"})
    assert config.enabled is False
    assert config.effective() == {"tracing": "off"}


def test_an_otlp_endpoint_turns_tracing_on_with_the_http_traces_path() -> None:
    config = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert config.enabled and config.exporters == ("otlp",)
    assert config.protocol == "http/protobuf"
    assert config.endpoint == "http://collector:4318/v1/traces"
    assert config.service_name == "rtforge"
    assert config.sampler == "parentbased_always_on"


def test_a_traces_endpoint_is_used_as_given_and_grpc_keeps_the_base_url() -> None:
    specific = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:9999/custom"}
    )
    assert specific.endpoint == "http://c:9999/custom"
    grpc = TelemetryConfig.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert (grpc.protocol, grpc.endpoint) == ("grpc", "http://c:4317")


def test_the_exporter_variable_alone_turns_tracing_on_and_none_or_disabled_turn_it_off() -> None:
    assert TelemetryConfig.from_env({"OTEL_TRACES_EXPORTER": "console"}).exporters == ("console",)
    assert TelemetryConfig.from_env({"OTEL_TRACES_EXPORTER": "otlp,console"}).exporters == (
        "otlp", "console",
    )
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    assert not TelemetryConfig.from_env({**endpoint, "OTEL_TRACES_EXPORTER": "none"}).enabled
    assert not TelemetryConfig.from_env({**endpoint, "OTEL_SDK_DISABLED": "true"}).enabled


def test_service_name_sampler_and_resource_attributes_are_read() -> None:
    config = TelemetryConfig.from_env({
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,team=rt%20core",
        "OTEL_SERVICE_NAME": "edge",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    })
    assert config.service_name == "edge"
    assert config.resource_attributes == {"deployment.environment": "staging", "team": "rt core"}
    assert (config.sampler, config.sampler_ratio) == ("parentbased_traceidratio", 0.25)
    named = TelemetryConfig.from_env(
        {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_RESOURCE_ATTRIBUTES": "service.name=viaresource"}
    )
    assert named.service_name == "viaresource"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:99999"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
    ],
)
def test_a_bad_otel_variable_is_a_settings_error_naming_it(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        TelemetryConfig.from_env({"OTEL_TRACES_EXPORTER": "otlp", variable: value})


@pytest.mark.parametrize("ratio", ["1.5", "-0.1", "half"])
def test_a_bad_sampler_ratio_is_refused(ratio: str) -> None:
    with pytest.raises(SettingsError, match="OTEL_TRACES_SAMPLER_ARG"):
        TelemetryConfig.from_env(
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": ratio}
        )


def test_serve_with_a_bad_otel_variable_exits_2_with_one_line() -> None:
    env = {"PATH": "/usr/bin:/bin", "OTEL_TRACES_SAMPLER": "bogus"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "0"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "OTEL_TRACES_SAMPLER" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_node_without_telemetry_has_no_tracing() -> None:
    node = create_node(Settings(node_id="quiet"))
    assert node.manager.tracing is None


def test_a_node_with_tracing_on_says_so_in_node_info() -> None:
    config = TelemetryConfig.from_env({"OTEL_TRACES_EXPORTER": "console"})
    node = create_node(Settings(node_id="loud"), telemetry=config)
    assert node.manager.tracing is not None
    text = node.manager.metrics.render().decode()
    assert 'tracing="on"' in text and 'node_id="loud"' in text
    node.manager.tracing.shutdown()


# -- spans, in process -----------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def send(self, event: dict[str, Any]) -> None:
        if event["type"] == "websocket.send":
            self.texts.append(event["text"])


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def traced(exporter: InMemorySpanExporter) -> AsyncIterator[WebSocketManager]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider, node_id="unit", backend="memory")
    manager = WebSocketManager(Settings(node_id="unit"), tracing=tracing)
    await manager.start()
    yield manager
    await manager.stop(timeout=1.0)
    provider.shutdown()


async def _connect(manager: WebSocketManager) -> tuple[Connection, Sink]:
    sink = Sink()
    conn = await manager.register(sink.send, ConnectionMetadata(remote_addr="127.0.0.1:5555"))
    return conn, sink


def _named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_a_publish_is_one_producer_span_and_one_consumer_span_for_all_recipients(
    traced: WebSocketManager, exporter: InMemorySpanExporter
) -> None:
    conns = [await _connect(traced) for _ in range(5)]
    for conn, _ in conns:
        await traced.channel_manager().subscribe("room", conn.id)
    exporter.clear()

    assert await traced.send_to_channel("room", WebSocketMessage.text("hi")) == 5

    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == ["deliver channel", "publish channel"]
    (producer,) = _named(spans, "publish channel")
    (consumer,) = _named(spans, "deliver channel")
    assert producer.kind is SpanKind.PRODUCER and consumer.kind is SpanKind.CONSUMER
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert consumer.context.trace_id == producer.context.trace_id
    assert producer.attributes is not None and consumer.attributes is not None
    assert producer.attributes["messaging.system"] == "rtforge"
    assert producer.attributes["messaging.operation.type"] == "send"
    assert producer.attributes["messaging.destination.name"] == "room"
    assert producer.attributes["rtforge.recipients"] == 5
    assert consumer.attributes["messaging.operation.type"] == "process"
    assert consumer.attributes["rtforge.recipients.local"] == 5
    assert consumer.attributes["rtforge.frames.dropped"] == 0


async def test_the_envelope_carries_w3c_trace_context_only_while_tracing(
    traced: WebSocketManager,
) -> None:
    seen: list[Envelope] = []
    original = traced.backplane.publish

    async def spy(envelope: Envelope) -> int:
        seen.append(envelope)
        return await original(envelope)

    traced.backplane.publish = spy  # type: ignore[method-assign]
    await traced.broadcast(WebSocketMessage.text("x"))
    assert seen[0].trace is not None
    assert seen[0].trace["traceparent"].startswith("00-")

    untraced = WebSocketManager(Settings(node_id="plain"))
    await untraced.start()
    plain: list[Envelope] = []
    original_plain = untraced.backplane.publish

    async def spy_plain(envelope: Envelope) -> int:
        plain.append(envelope)
        return await original_plain(envelope)

    untraced.backplane.publish = spy_plain  # type: ignore[method-assign]
    await untraced.broadcast(WebSocketMessage.text("x"))
    await untraced.stop(timeout=1.0)
    assert plain[0].trace is None


async def test_a_remote_envelope_is_delivered_as_a_child_of_its_trace_context(
    traced: WebSocketManager, exporter: InMemorySpanExporter
) -> None:
    conn, _ = await _connect(traced)
    await traced.channel_manager().subscribe("far", conn.id)
    conn.close()  # a closing connection: its frame is counted as dropped
    exporter.clear()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    envelope = Envelope(
        Route.CHANNEL, b'{"type":"text","payload":"x","timestamp":1}', channel="far",
        origin="elsewhere", trace={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    traced.deliver(envelope)
    (span,) = exporter.get_finished_spans()
    assert span.name == "deliver channel"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    assert span.attributes is not None
    assert span.attributes["rtforge.origin_node"] == "elsewhere"
    assert span.attributes["rtforge.recipients.local"] == 0
    assert span.attributes["rtforge.frames.dropped"] == 1


async def test_commands_and_connections_get_spans_linked_to_the_socket(
    traced: WebSocketManager, exporter: InMemorySpanExporter
) -> None:
    protocol = ClientProtocol(traced)
    conn, _ = await _connect(traced)
    await protocol.run_command(conn, {"command": "subscribe", "channel": "c1"})
    await protocol.run_command(conn, {"command": "publish", "channel": "c1", "data": 1})
    await protocol.run_command(conn, {"command": "subscribe", "channel": ""})
    await traced.unregister(conn, "client")
    spans = exporter.get_finished_spans()
    (opened,) = _named(spans, "websocket open")
    (closed,) = _named(spans, "websocket close")
    assert opened.attributes is not None and closed.attributes is not None
    assert opened.attributes["rtforge.connection_id"] == conn.id
    assert opened.attributes["client.address"] == "127.0.0.1"
    assert closed.attributes["rtforge.close.reason"] == "client"
    assert [link.context.span_id for link in closed.links] == [opened.context.span_id]
    subscribes = _named(spans, "command subscribe")
    assert [s.attributes["rtforge.command.ok"] for s in subscribes if s.attributes] == [
        True, False,
    ]
    assert subscribes[1].attributes is not None
    assert subscribes[1].attributes["error.type"] == "invalid_channel"
    (publish,) = _named(spans, "command publish")
    assert [link.context.span_id for link in publish.links] == [opened.context.span_id]
    (producer,) = _named(spans, "publish channel")
    assert producer.parent is not None and producer.parent.span_id == publish.context.span_id


# -- logs --------------------------------------------------------------------------


def test_log_lines_carry_the_active_span_ids_and_the_node_id() -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    record_filter = TraceContextFilter("node-7")
    formatter = JsonFormatter()

    def line(message: str, **extra: Any) -> dict[str, Any]:
        record = logging.LogRecord("rtforge.test", logging.INFO, __file__, 1, message, (), None)
        for key, value in extra.items():
            setattr(record, key, value)
        record_filter.filter(record)
        parsed: dict[str, Any] = json.loads(formatter.format(record))
        return parsed

    outside = line("no span")
    assert outside["node_id"] == "node-7"
    assert "trace_id" not in outside and "span_id" not in outside
    with tracer.start_as_current_span("work") as span:
        inside = line("in a span", event="connection_opened", connection_id="c-1")
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["event"] == "connection_opened" and inside["connection_id"] == "c-1"


async def test_a_slow_consumer_warning_inside_a_delivery_names_its_trace(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    manager = WebSocketManager(
        Settings(node_id="slow", send_queue_size=2),
        tracing=Tracing(provider, node_id="slow", backend="memory"),
    )
    await manager.start()
    gate = asyncio.Event()

    async def stalled(event: dict[str, Any]) -> None:
        await gate.wait()

    conn = await manager.register(stalled, ConnectionMetadata())
    await manager.channel_manager().subscribe("slow", conn.id)
    handler_filter = TraceContextFilter("slow")
    caplog.handler.addFilter(handler_filter)
    try:
        for _ in range(4):
            await manager.send_to_channel("slow", WebSocketMessage.text("x"))
        await eventually(lambda: _closed(manager, conn), message="slow consumer dropped")
    finally:
        caplog.handler.removeFilter(handler_filter)
        gate.set()
        await manager.stop(timeout=1.0)
    warnings = [r for r in caplog.records if r.getMessage().startswith("slow consumer closed")]
    assert len(warnings) == 1
    delivers = [s for s in exporter.get_finished_spans() if s.name == "deliver channel"]
    span_ids = {format(s.context.span_id, "016x") for s in delivers}
    assert getattr(warnings[0], "span_id", None) in span_ids
    dropped = [s.attributes["rtforge.frames.dropped"] for s in delivers if s.attributes]
    assert sum(dropped) >= 1


async def _closed(manager: WebSocketManager, conn: Connection) -> bool:
    return conn.id not in manager.local.connections


async def test_a_node_whose_collector_is_down_still_serves_and_stops_in_time(
    start_node: NodeFactory,
) -> None:
    from support.client import WsClient  # noqa: PLC0415
    from support.nodes import free_port  # noqa: PLC0415

    nowhere = f"http://127.0.0.1:{free_port()}"
    node = start_node(env={"OTEL_EXPORTER_OTLP_ENDPOINT": nowhere, "OTEL_BSP_SCHEDULE_DELAY": "50"})
    async with await WsClient.connect(node.ws_url) as client:
        reply = await client.command("subscribe", channel="collector-down")
        assert reply["metadata"]["ok"] is True
    started = time.monotonic()
    code = node.stop()  # NodeProcess would SIGKILL (-9) after 15 s
    assert code in (0, -signal.SIGTERM), node.log_tail()  # uvicorn re-raises SIGTERM
    assert time.monotonic() - started < 10.0, node.log_tail()
    assert "not exported within" in node.log_text()
