"""The node's spans, after OpenTelemetry's messaging semantic conventions.

A :class:`Tracing` exists only while tracing is on (see
:mod:`service.telemetry`); the manager and the protocol hold ``None``
otherwise and pay one ``is None`` check per publish, fan-out, command or
connection event, nothing per recipient.

Spans of one message (a channel publish through the HTTP API of node A,
delivered to subscribers on A and B)::

    node A  POST /api/channels/{channel}/publish   SERVER    (Litestar's integration)
    node A  └─ publish channel                     PRODUCER  trace context → envelope
    node A     ├─ deliver channel                  CONSUMER  A's local recipients
    node B     └─ deliver channel                  CONSUMER  parent from the envelope

One ``deliver`` span per node that delivers, never one per recipient socket:
the number of local recipients and of dropped frames are its attributes.
A client command gets a ``command NAME`` span (the ``publish`` command then
parents the ``publish channel`` span); a socket gets ``websocket open`` and
``websocket close`` spans, and every command span links to its socket's
``websocket open`` span.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from litestar.config.app import AppConfig
from litestar.enums import ScopeType
from litestar.plugins import InitPlugin, InitPluginProtocol
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from backends import BackplaneError, Envelope, Route

from .errors import RtforgeError

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Receive, Scope, Send

    from .connection import Connection, ConnectionMetadata
    from .messages import WebSocketMessage

__all__ = ["Attr", "Tracing"]

log = logging.getLogger("rtforge.tracing")


class Attr:
    """Span attribute names: OpenTelemetry's where one fits, else ``rtforge.*``."""

    MESSAGING_SYSTEM = "messaging.system"
    OPERATION_TYPE = "messaging.operation.type"
    OPERATION_NAME = "messaging.operation.name"
    DESTINATION = "messaging.destination.name"
    BODY_SIZE = "messaging.message.body.size"
    ERROR_TYPE = "error.type"
    CLIENT_ADDRESS = "client.address"
    CLIENT_PORT = "client.port"
    USER_AGENT = "user_agent.original"
    PROTOCOL = "network.protocol.name"
    HTTP_ROUTE = "http.route"

    ROUTE = "rtforge.route"
    RECIPIENTS = "rtforge.recipients"
    LOCAL_RECIPIENTS = "rtforge.recipients.local"
    DROPPED = "rtforge.frames.dropped"
    ORIGIN = "rtforge.origin_node"
    ONLY_TO = "rtforge.only_to.count"
    EXCLUDE = "rtforge.exclude.count"
    CONNECTION_ID = "rtforge.connection_id"
    CHANNEL = "rtforge.channel"
    COMMAND = "rtforge.command"
    COMMAND_OK = "rtforge.command.ok"
    CLOSE_REASON = "rtforge.close.reason"
    CLOSE_CODE = "rtforge.close.code"
    CONNECTION_SECONDS = "rtforge.connection.duration_seconds"


_ROUTE_NAMES = {Route.CHANNEL: "channel", Route.BROADCAST: "broadcast", Route.DIRECT: "direct"}
#: an attribute value longer than this is left out (channel names are at most 255)
_MAX_NAME = 255
_PATH_PARAM_TYPE = re.compile(r"\{(\w+):\w+\}")


class Tracing:
    """Creates the node's spans and carries trace context through envelopes."""

    def __init__(
        self,
        provider: TracerProvider,
        *,
        node_id: str,
        backend: str,
        version: str = "",
    ) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("rtforge", version or None)
        self.node_id = node_id
        self.backend = backend
        self._propagator = TraceContextTextMapPropagator()
        #: each open socket's ``websocket open`` span, for links from its commands
        self._opened: dict[str, SpanContext] = {}

    def shutdown(self, timeout: float = 3.0) -> bool:
        """Export what is still buffered and stop the exporters, waiting at
        most ``timeout`` seconds: an unreachable collector must not hold up
        the node's exit (the SDK would retry for up to 30 s). False when the
        export did not finish in time (its spans are lost)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is None:
            return True
        finished = threading.Event()

        def run() -> None:
            try:
                shutdown()
            finally:
                finished.set()

        threading.Thread(target=run, name="rtforge-tracing-shutdown", daemon=True).start()
        if finished.wait(timeout):
            return True
        log.warning("tracing: spans not exported within %gs of shutdown, dropped", timeout)
        return False

    # -- messages ------------------------------------------------------------
    def _message_attributes(self, envelope: Envelope, operation: str, kind: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            Attr.MESSAGING_SYSTEM: "rtforge",
            Attr.OPERATION_TYPE: kind,
            Attr.OPERATION_NAME: operation,
            Attr.ROUTE: _ROUTE_NAMES[envelope.route],
            Attr.BODY_SIZE: len(envelope.frame),
        }
        if envelope.channel is not None and len(envelope.channel) <= _MAX_NAME:
            attributes[Attr.DESTINATION] = envelope.channel
        if envelope.connection_id is not None:
            attributes[Attr.CONNECTION_ID] = envelope.connection_id
        if envelope.only_to is not None:
            attributes[Attr.ONLY_TO] = len(envelope.only_to)
        if envelope.exclude:
            attributes[Attr.EXCLUDE] = len(envelope.exclude)
        return attributes

    async def publish(self, envelope: Envelope, send: Callable[[Envelope], Awaitable[int]]) -> int:
        """``send(envelope)`` inside a PRODUCER span whose context travels
        in ``envelope.trace`` to every node that delivers it."""
        route = _ROUTE_NAMES[envelope.route]
        with self.tracer.start_as_current_span(
            f"publish {route}",
            kind=SpanKind.PRODUCER,
            attributes=self._message_attributes(envelope, "publish", "send"),
        ) as span:
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier)
            envelope.trace = carrier or None
            recipients = await send(envelope)
            span.set_attribute(Attr.RECIPIENTS, recipients)
            return recipients

    def deliver(self, envelope: Envelope, fan_out: Callable[[Envelope], tuple[int, int]]) -> None:
        """``fan_out(envelope)`` inside one CONSUMER span for this node, the
        child of the publishing node's PRODUCER span. ``fan_out`` returns
        (frames queued, frames dropped)."""
        parent = self._propagator.extract(envelope.trace) if envelope.trace else None
        attributes = self._message_attributes(envelope, "deliver", "process")
        if envelope.origin:
            attributes[Attr.ORIGIN] = envelope.origin
        with self.tracer.start_as_current_span(
            f"deliver {_ROUTE_NAMES[envelope.route]}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ) as span:
            delivered, dropped = fan_out(envelope)
            span.set_attribute(Attr.LOCAL_RECIPIENTS, delivered)
            span.set_attribute(Attr.DROPPED, dropped)

    # -- sockets -------------------------------------------------------------
    @contextmanager
    def connection_open(self, metadata: ConnectionMetadata) -> Iterator[Span]:
        """The ``websocket open`` span: registration and welcome frame."""
        attributes: dict[str, Any] = {Attr.PROTOCOL: "websocket"}
        if metadata.remote_addr:
            host, _, port = metadata.remote_addr.rpartition(":")
            attributes[Attr.CLIENT_ADDRESS] = host or metadata.remote_addr
            if port.isdigit():
                attributes[Attr.CLIENT_PORT] = int(port)
        if metadata.user_agent:
            attributes[Attr.USER_AGENT] = metadata.user_agent[:_MAX_NAME]
        with self.tracer.start_as_current_span(
            "websocket open", kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            yield span

    def connection_opened(self, span: Span, conn: Connection) -> None:
        span.set_attribute(Attr.CONNECTION_ID, str(conn.id))
        context = span.get_span_context()
        if context.is_valid:
            self._opened[conn.id] = context

    @contextmanager
    def connection_close(self, conn: Connection, reason: str) -> Iterator[Span]:
        """The ``websocket close`` span: cleanup of memberships, linked to
        the socket's ``websocket open`` span."""
        opened = self._opened.pop(conn.id, None)
        attributes: dict[str, Any] = {
            Attr.PROTOCOL: "websocket",
            Attr.CONNECTION_ID: str(conn.id),
            Attr.CLOSE_REASON: reason,
            Attr.CONNECTION_SECONDS: round(time.time() - conn.metadata.connected_at, 3),
        }
        if conn.close_code is not None:
            attributes[Attr.CLOSE_CODE] = int(conn.close_code)
        with self.tracer.start_as_current_span(
            "websocket close",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=[Link(opened)] if opened is not None else None,
        ) as span:
            yield span

    async def run_command(
        self,
        name: str,
        conn: Connection,
        payload: dict[str, Any],
        command: Callable[[Connection, dict[str, Any]], Awaitable[WebSocketMessage]],
    ) -> WebSocketMessage:
        """``command(conn, payload)`` inside a ``command NAME`` span. A
        refused command (a client error) is marked by ``error.type``; a
        backplane failure also sets the span's status to error."""
        attributes: dict[str, Any] = {
            Attr.COMMAND: name,
            Attr.CONNECTION_ID: str(conn.id),
            Attr.PROTOCOL: "websocket",
        }
        channel = payload.get("channel")
        if isinstance(channel, str) and len(channel) <= _MAX_NAME:
            attributes[Attr.CHANNEL] = channel
        opened = self._opened.get(conn.id)
        with self.tracer.start_as_current_span(
            f"command {name}",
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=[Link(opened)] if opened is not None else None,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                reply = await command(conn, payload)
            except RtforgeError as exc:
                span.set_attributes({Attr.COMMAND_OK: False, Attr.ERROR_TYPE: exc.code})
                raise
            except BackplaneError as exc:
                span.set_attributes({Attr.COMMAND_OK: False, Attr.ERROR_TYPE: exc.code})
                span.set_status(StatusCode.ERROR, str(exc))
                raise
            except BaseException as exc:
                span.record_exception(exc)
                span.set_attribute(Attr.ERROR_TYPE, type(exc).__qualname__)
                span.set_status(StatusCode.ERROR, str(exc))
                raise
            span.set_attribute(Attr.COMMAND_OK, True)
            return reply

    # -- HTTP API --------------------------------------------------------------
    def litestar_plugins(self) -> list[InitPluginProtocol]:
        """Litestar's own OpenTelemetry integration for the HTTP API (server
        spans; a caller's ``traceparent`` header continues its trace), plus
        span names from the matched route template (``POST
        /api/channels/{channel}/publish``, never the raw path)."""
        from litestar.plugins.opentelemetry import (  # noqa: PLC0415
            OpenTelemetryConfig,
            OpenTelemetryPlugin,
        )

        config = OpenTelemetryConfig(
            tracer_provider=self.provider,
            scope_span_details_extractor=_unrouted_span_details,
            exclude=["^/metrics$", "^/healthz$", "^/readyz$"],
            exclude_spans=["receive", "send"],
            scopes={ScopeType.HTTP},
        )
        return [OpenTelemetryPlugin(config), _RouteSpanNames()]


def _unrouted_span_details(scope: Any) -> tuple[str, dict[str, Any]]:
    """Name the HTTP span ``{method}`` until routing tells the template."""
    return str(scope.get("method") or "HTTP"), {}


def _name_span_after_route(app: ASGIApp) -> ASGIApp:
    """App-level middleware (it runs after routing): rename the current HTTP
    server span ``{method} {route template}`` and set ``http.route``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            span = trace.get_current_span()
            template = scope.get("path_template")
            if template and span.is_recording():
                route = _PATH_PARAM_TYPE.sub(r"{\1}", template)
                span.update_name(f"{scope.get('method', '')} {route}")
                span.set_attribute(Attr.HTTP_ROUTE, route)
        await app(scope, receive, send)

    return middleware


class _RouteSpanNames(InitPlugin):
    """Litestar init plugin that installs :func:`_name_span_after_route`."""

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.middleware.append(_name_span_after_route)
        return app_config
