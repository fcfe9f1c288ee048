"""Wire codec for :class:`~backends.base.Envelope`: a small versioned msgpack map.

Layout (keys are one letter to keep envelopes small)::

    {"v": 1, "r": route, "f": frame bytes, "c": channel?, "i": connection id?,
     "o": [only_to]?, "x": [exclude]?, "n": origin node, "t": {trace}?}

Readers accept any version up to their own and ignore unknown keys, so a
newer writer can add fields. An envelope that cannot be read raises
:class:`EnvelopeError`; callers log it and drop it.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .base import BackplaneError, Envelope, Route

ENVELOPE_VERSION = 1

__all__ = ["ENVELOPE_VERSION", "EnvelopeError", "decode_envelope", "encode_envelope"]


class EnvelopeError(BackplaneError):
    """Bytes that are not an envelope this node can read."""

    code = "bad_envelope"


def encode_envelope(envelope: Envelope) -> bytes:
    data: dict[str, Any] = {
        "v": ENVELOPE_VERSION,
        "r": int(envelope.route),
        "f": envelope.frame,
        "n": envelope.origin,
    }
    if envelope.channel is not None:
        data["c"] = envelope.channel
    if envelope.connection_id is not None:
        data["i"] = envelope.connection_id
    if envelope.only_to is not None:
        data["o"] = sorted(envelope.only_to)
    if envelope.exclude:
        data["x"] = sorted(envelope.exclude)
    if envelope.trace:
        data["t"] = envelope.trace
    return msgpack.packb(data, use_bin_type=True)


def _str_set(value: Any, key: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EnvelopeError(f"envelope field {key!r} must be a list of strings")
    return frozenset(value)


def _opt_str(value: Any, key: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise EnvelopeError(f"envelope field {key!r} must be a string")


def decode_envelope(raw: bytes) -> Envelope:
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise EnvelopeError(f"not msgpack: {exc}") from None
    if not isinstance(data, dict):
        raise EnvelopeError("envelope is not a map")
    version = data.get("v")
    if not isinstance(version, int) or not 1 <= version <= ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {version!r}")
    raw_route = data.get("r")
    try:
        if not isinstance(raw_route, int):
            raise ValueError
        route = Route(raw_route)
    except ValueError:
        raise EnvelopeError(f"unknown route {data.get('r')!r}") from None
    frame = data.get("f")
    if not isinstance(frame, bytes):
        raise EnvelopeError("envelope frame must be bytes")
    trace = data.get("t")
    if trace is not None and not (
        isinstance(trace, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in trace.items())
    ):
        raise EnvelopeError("envelope trace must map strings to strings")
    channel = _opt_str(data.get("c"), "c")
    connection_id = _opt_str(data.get("i"), "i")
    if route is Route.CHANNEL and channel is None:
        raise EnvelopeError("channel envelope without channel")
    if route is Route.DIRECT and connection_id is None:
        raise EnvelopeError("direct envelope without connection id")
    return Envelope(
        route=route,
        frame=frame,
        channel=channel,
        connection_id=connection_id,
        only_to=_str_set(data.get("o"), "o"),
        exclude=_str_set(data.get("x"), "x"),
        origin=_opt_str(data.get("n"), "n") or "",
        trace=trace,
    )
