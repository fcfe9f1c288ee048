"""Tracing configuration from the standard ``OTEL_*`` variables, read once.

This is the one place in rtforge that reads OpenTelemetry's environment
variables (as :mod:`service.settings` is for ``RTFORGE_*``): the CLI calls
:meth:`TelemetryConfig.from_env` at start, next to building the settings,
and passes the result down to :func:`service.app.create_app`. A bad value
ends ``rtforge serve`` with one clear line, like a bad setting.

Tracing is **off by default**. It is on when

* ``OTEL_TRACES_EXPORTER`` is set to ``otlp`` and/or ``console``, or
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is
  set (the exporter is then ``otlp``),

and ``OTEL_SDK_DISABLED`` is not ``true`` and ``OTEL_TRACES_EXPORTER`` is not
``none``. Read here:

==========================================  ==========================================
``OTEL_SDK_DISABLED``                       ``true``: tracing off, whatever else is set
``OTEL_TRACES_EXPORTER``                    ``otlp``, ``console``, both (comma list) or ``none``
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``    collector URL; the generic one gets ``/v1/traces``
                                            appended for HTTP (as the specification says)
``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL``    ``http/protobuf`` (default) or ``grpc``
``OTEL_SERVICE_NAME``                       ``service.name`` (default ``rtforge``)
``OTEL_RESOURCE_ATTRIBUTES``                ``key=value,...`` added to the resource
``OTEL_TRACES_SAMPLER`` / ``_ARG``          ``parentbased_always_on`` (default), ``always_on``,
                                            ``always_off``, ``traceidratio``,
                                            ``parentbased_always_off``,
                                            ``parentbased_traceidratio``; the ratio in ``_ARG``
==========================================  ==========================================

The SDK objects built from this (:func:`start_tracing`) honour the remaining
standard variables themselves: ``OTEL_BSP_*`` (batching),
``OTEL_EXPORTER_OTLP_[TRACES_]HEADERS``, ``_TIMEOUT``, ``_COMPRESSION``,
``_CERTIFICATE`` and the span limits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .errors import SettingsError

if TYPE_CHECKING:
    from .settings import Settings
    from .tracing import Tracing

__all__ = ["PROTOCOLS", "SAMPLERS", "TelemetryConfig", "package_version", "start_tracing"]

PROTOCOLS = ("http/protobuf", "grpc")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
EXPORTERS = ("otlp", "console", "none")
_DEFAULT_ENDPOINTS = {"http/protobuf": "http://localhost:4318", "grpc": "http://localhost:4317"}
_TRUE = ("true", "1", "yes", "on")


def package_version() -> str:
    """rtforge's installed version (``service.version`` and ``rtforge_node_info``)."""
    try:
        return metadata.version("rtforge")
    except metadata.PackageNotFoundError:  # running from a bare source tree
        return "unknown"


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _bad(name: str, value: str, reason: str) -> SettingsError:
    return SettingsError(f"{name}={value!r}: {reason}")


def _parse_exporters(env: Mapping[str, str]) -> tuple[str, ...] | None:
    raw = _get(env, "OTEL_TRACES_EXPORTER")
    if raw is None:
        return None
    names = tuple(dict.fromkeys(n.strip().lower() for n in raw.split(",") if n.strip()))
    for name in names:
        if name not in EXPORTERS:
            raise _bad("OTEL_TRACES_EXPORTER", raw, f"must be {', '.join(EXPORTERS)} or a list")
    if "none" in names:
        return ()
    return names


def _parse_protocol(env: Mapping[str, str]) -> str:
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        raw = _get(env, name)
        if raw is None:
            continue
        value = raw.lower()
        if value == "http/json":
            raise _bad(name, raw, "http/json is not supported; use http/protobuf or grpc")
        if value not in PROTOCOLS:
            raise _bad(name, raw, f"must be one of {', '.join(PROTOCOLS)}")
        return value
    return "http/protobuf"


def _check_url(name: str, raw: str) -> str:
    parts = urlsplit(raw)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise _bad(name, raw, "has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(name, raw, "must be a URL like http://host:port")
    return raw


def _parse_endpoint(env: Mapping[str, str], protocol: str) -> str:
    """The URL the exporter sends to: a signal-specific endpoint is used as
    is; the generic one gets ``/v1/traces`` for HTTP."""
    specific = _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if specific is not None:
        return _check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", specific)
    generic = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    base = (
        _check_url("OTEL_EXPORTER_OTLP_ENDPOINT", generic)
        if generic is not None
        else _DEFAULT_ENDPOINTS[protocol]
    )
    if protocol == "grpc":
        return base
    return base.rstrip("/") + "/v1/traces"


def _parse_sampler(env: Mapping[str, str]) -> tuple[str, float]:
    raw = _get(env, "OTEL_TRACES_SAMPLER")
    name = raw.lower() if raw is not None else "parentbased_always_on"
    if name not in SAMPLERS:
        raise _bad("OTEL_TRACES_SAMPLER", raw or "", f"must be one of {', '.join(SAMPLERS)}")
    ratio = 1.0
    arg = _get(env, "OTEL_TRACES_SAMPLER_ARG")
    if arg is not None and name.endswith("traceidratio"):
        try:
            ratio = float(arg)
        except ValueError:
            raise _bad("OTEL_TRACES_SAMPLER_ARG", arg, "must be a number from 0 to 1") from None
        if not 0.0 <= ratio <= 1.0:
            raise _bad("OTEL_TRACES_SAMPLER_ARG", arg, "must be a number from 0 to 1")
    return name, ratio


def _parse_resource(env: Mapping[str, str]) -> dict[str, str]:
    raw = _get(env, "OTEL_RESOURCE_ATTRIBUTES")
    attributes: dict[str, str] = {}
    if raw is None:
        return attributes
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise _bad("OTEL_RESOURCE_ATTRIBUTES", raw, "must be key=value pairs, comma-separated")
        attributes[key.strip()] = unquote(value.strip())
    return attributes


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    """What :func:`start_tracing` needs; ``exporters`` empty means off."""

    exporters: tuple[str, ...] = ()
    protocol: str = "http/protobuf"
    endpoint: str = "http://localhost:4318/v1/traces"
    service_name: str = "rtforge"
    resource_attributes: dict[str, str] = field(default_factory=dict)
    sampler: str = "parentbased_always_on"
    sampler_ratio: float = 1.0

    @property
    def enabled(self) -> bool:
        return bool(self.exporters)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TelemetryConfig:
        """Read the ``OTEL_*`` variables of ``env`` (default ``os.environ``).
        Raises :class:`SettingsError` naming the variable at fault."""
        env = os.environ if env is None else env
        disabled = _get(env, "OTEL_SDK_DISABLED")
        exporters = _parse_exporters(env)
        protocol = _parse_protocol(env)
        endpoint = _parse_endpoint(env, protocol)
        sampler, ratio = _parse_sampler(env)
        resource = _parse_resource(env)
        service_name = _get(env, "OTEL_SERVICE_NAME") or resource.get("service.name") or "rtforge"
        if exporters is None:
            has_endpoint = any(
                _get(env, n)
                for n in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            )
            exporters = ("otlp",) if has_endpoint else ()
        if disabled is not None and disabled.lower() in _TRUE:
            exporters = ()
        return cls(exporters, protocol, endpoint, service_name, resource, sampler, ratio)

    def effective(self) -> dict[str, Any]:
        """For display (``rtforge websocket:info``)."""
        if not self.enabled:
            return {"tracing": "off"}
        shown: dict[str, Any] = {"tracing": "on", "exporters": ",".join(self.exporters)}
        if "otlp" in self.exporters:
            shown["protocol"] = self.protocol
            shown["endpoint"] = self.endpoint
        shown["service_name"] = self.service_name
        shown["sampler"] = (
            f"{self.sampler}:{self.sampler_ratio:g}"
            if self.sampler.endswith("traceidratio")
            else self.sampler
        )
        return shown


def _sampler(config: TelemetryConfig) -> Any:
    from opentelemetry.sdk.trace import sampling  # noqa: PLC0415

    ratio = sampling.TraceIdRatioBased(config.sampler_ratio)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
        "parentbased_always_on": sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": sampling.ParentBased(ratio),
    }[config.sampler]


def _otlp_exporter(config: TelemetryConfig) -> Any:
    if config.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter(endpoint=config.endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=config.endpoint)


def start_tracing(config: TelemetryConfig, settings: Settings) -> Tracing | None:
    """Build the SDK pipeline (resource, sampler, batch processor, exporter)
    and return the node's :class:`~service.tracing.Tracing`; ``None`` when
    tracing is off. The provider is not made global: rtforge passes it
    explicitly to everything that traces."""
    if not config.enabled:
        return None
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
        BatchSpanProcessor,
        ConsoleSpanExporter,
    )
    from opentelemetry.sdk.version import __version__ as sdk_version  # noqa: PLC0415

    from .tracing import Tracing  # noqa: PLC0415

    version = package_version()
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "service.instance.id": settings.node_id,
        "service.namespace": settings.cluster_name,
        "service.version": version,
        "rtforge.backend": settings.backend,
        **config.resource_attributes,
        "service.name": config.service_name,
    }
    # No atexit hook: the app's lifespan shuts the provider down, with a deadline.
    provider = TracerProvider(
        resource=Resource(attributes), sampler=_sampler(config), shutdown_on_exit=False
    )
    for name in config.exporters:
        exporter = _otlp_exporter(config) if name == "otlp" else ConsoleSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, node_id=settings.node_id, backend=settings.backend, version=version)
