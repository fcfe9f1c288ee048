"""An OTLP/HTTP trace receiver on loopback, for tests (no collector binary).

:class:`OtlpReceiver` is a small threaded HTTP server that accepts
``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` (plain or
gzip), decodes it with ``opentelemetry-proto`` and keeps every span as a
:class:`CapturedSpan`. Point nodes at it with::

    env = receiver.env(service_name="rtforge-test")
    # {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:PORT",
    #  "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "50", ...}

Run it alone as a sink (the bench does, to measure tracing's cost)::

    python -m tests.support.otlp --port 4318
"""

from __future__ import annotations

import argparse
import gzip
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["SPAN_KINDS", "CapturedSpan", "OtlpReceiver"]

#: OTLP's ``Span.SpanKind`` numbers by name
SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER",
              5: "CONSUMER"}


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, which)


def _attributes(items: Iterable[KeyValue]) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


@dataclass(frozen=True)
class CapturedSpan:
    """One received span, ids as lower-case hex (as in ``traceparent``)."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)
    status_code: int = 0

    @property
    def service_instance(self) -> str:
        """The node id (``service.instance.id`` of the exporting process)."""
        return str(self.resource.get("service.instance.id", ""))

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


class OtlpReceiver:
    """``with OtlpReceiver() as receiver: ...`` — or ``start()``/``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._spans: list[CapturedSpan] = []
        self._lock = threading.Lock()
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, service_name: str = "rtforge-test", **extra: str) -> dict[str, str]:
        """``OTEL_*`` variables that send a node's spans here, quickly."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            **extra,
        }

    # -- spans -----------------------------------------------------------------
    def _add(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(CapturedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        resource=resource,
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        status_code=span.status.code,
                    ))
        with self._lock:
            self._spans.extend(found)
            self.requests += 1

    @property
    def spans(self) -> list[CapturedSpan]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def trace(self, trace_id: str) -> list[CapturedSpan]:
        """Every span of one trace received so far, by start time."""
        return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start_ns)

    def find(self, predicate: Callable[[CapturedSpan], bool]) -> list[CapturedSpan]:
        return [s for s in self.spans if predicate(s)]

    def wait_for(
        self,
        predicate: Callable[[list[CapturedSpan]], bool],
        *,
        timeout: float = 15.0,
        message: str = "spans",
    ) -> list[CapturedSpan]:
        """Poll until ``predicate(all spans)`` holds; return the spans."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans
            if predicate(spans):
                return spans
            if time.monotonic() >= deadline:
                shown = "\n".join(
                    f"  {s.service_instance} {s.kind} {s.name} trace={s.trace_id[:8]} "
                    f"span={s.span_id[:8]} parent={s.parent_span_id[:8]}"
                    for s in spans[-30:]
                )
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {message}; "
                    f"{len(spans)} spans received, last ones:\n{shown}"
                )
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description="OTLP/HTTP trace sink that counts spans")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    receiver = OtlpReceiver(args.host, args.port).start()
    print(f"OTLP receiver on {receiver.endpoint}/v1/traces", flush=True)
    try:
        while True:
            time.sleep(5)
            spans = receiver.spans
            receiver.clear()
            print(f"{len(spans)} spans in the last 5 s", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
