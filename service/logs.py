"""Logging setup: plain text or one JSON object per line.

Every line carries the node id and, while a span is active (tracing on),
its ``trace_id`` and ``span_id`` (:class:`TraceContextFilter`), so that a log
line leads to its trace and back. Lifecycle events (node started, connection
opened and closed, slow consumer, backplane up and down) are one line each,
with an ``event`` field in JSON; nothing is logged per delivered frame.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from opentelemetry import trace

__all__ = ["ClientInputFilter", "JsonFormatter", "TraceContextFilter", "configure_logging"]

#: ``extra={...}`` keys that JSON lines carry as fields of their own
EXTRA_FIELDS = (
    "event", "connection_id", "reason", "close_code", "remote_addr", "backend", "channel",
)


class TraceContextFilter(logging.Filter):
    """Add ``node_id`` and, inside an active span, ``trace_id``/``span_id``
    (lower-case hex, as W3C ``traceparent`` writes them) to every record."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        if self.node_id and not getattr(record, "node_id", None):
            record.node_id = self.node_id
        return True


class TextFormatter(logging.Formatter):
    """The plain format, with ``trace_id=… span_id=…`` appended inside a span."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            text += f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
        return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("trace_id", "span_id", "node_id"):
            value = getattr(record, key, None)
            if value:
                data[key] = value
        for key in EXTRA_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class ClientInputFilter(logging.Filter):
    """Keep bad client input to one warning line.

    uvicorn logs a text frame with invalid UTF-8 with a traceback at error
    level, although it is the client's fault and the connection is already
    closed with 1007. Strip the traceback and log it as a warning."""

    _MESSAGES = ("Invalid UTF-8 sequence received from client",)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith(self._MESSAGES):
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True


class SocketNoiseFilter(logging.Filter):
    """Drop uvicorn's (and websockets') own info lines for every accepted
    socket: rtforge logs one ``connection opened`` / ``connection closed``
    line per socket itself, with the connection id and reason."""

    _MESSAGES = frozenset(
        {'%s - "WebSocket %s" [accepted]', "connection open", "connection closed"}
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.msg in self._MESSAGES)


def configure_logging(level: str = "info", fmt: str = "text", node_id: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(TraceContextFilter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    uvicorn_error = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, ClientInputFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(ClientInputFilter())
    if not any(isinstance(f, SocketNoiseFilter) for f in uvicorn_error.filters):
        uvicorn_error.addFilter(SocketNoiseFilter())
