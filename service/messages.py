"""Server and client frames: :class:`WebSocketMessage` and its JSON form.

Every frame is a JSON object::

    {"type": ..., "payload": ..., "timestamp": <int>, "metadata": {...}?, "channel": "..."?}

``payload`` is omitted for ``ping``/``pong``; ``metadata`` when empty;
``channel`` unless the frame was delivered through a channel. A message is
encoded once per publish (:meth:`WebSocketMessage.encode`) and the same bytes
go to every recipient.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Self

import msgspec

from .errors import MessageInvalid
from .frames import OutFrame

__all__ = ["MessageType", "WebSocketMessage", "json_decode", "json_encode"]

def _encode_other(value: Any) -> Any:
    if isinstance(value, str):  # str subclasses such as ConnectionId
        return str(value)
    raise TypeError(f"Encoding objects of type {type(value).__name__} is unsupported")


_encoder = msgspec.json.Encoder(enc_hook=_encode_other)
_decoder = msgspec.json.Decoder()

json_encode = _encoder.encode
json_decode = _decoder.decode


class MessageType(StrEnum):
    TEXT = "text"
    JSON = "json"
    EVENT = "event"
    SYSTEM = "system"
    PING = "ping"
    PONG = "pong"
    BINARY = "binary"


_NO_PAYLOAD = frozenset({MessageType.PING, MessageType.PONG})


@dataclass(slots=True, frozen=True)
class WebSocketMessage:
    """One frame. Build it with the constructors (``text``, ``json``, …)."""

    type: MessageType
    payload: Any = None
    timestamp: int = field(default_factory=lambda: int(time.time()))
    metadata: dict[str, Any] | None = None
    channel: str | None = None

    # -- constructors ------------------------------------------------------
    @classmethod
    def text(cls, text: str) -> Self:
        if not isinstance(text, str):
            raise MessageInvalid("text payload must be a string")
        return cls(MessageType.TEXT, text)

    @classmethod
    def json(cls, data: Any) -> Self:
        """A ``json`` message; raises :class:`MessageInvalid` when ``data``
        cannot be represented as JSON."""
        try:
            json_encode(data)
        except (TypeError, UnicodeEncodeError, msgspec.EncodeError) as exc:
            raise MessageInvalid(f"payload is not JSON-serialisable: {exc}") from None
        return cls(MessageType.JSON, data)

    @classmethod
    def event(cls, name: str, data: Any = None) -> Self:
        if not isinstance(name, str) or not name:
            raise MessageInvalid("event name must be a non-empty string")
        return cls(MessageType.EVENT, {"event": name, "data": data})

    @classmethod
    def system(cls, text: str) -> Self:
        return cls(MessageType.SYSTEM, text)

    @classmethod
    def ping(cls) -> Self:
        return cls(MessageType.PING)

    @classmethod
    def pong(cls) -> Self:
        return cls(MessageType.PONG)

    @classmethod
    def binary(cls, data: bytes) -> Self:
        """Binary data; on the wire its payload is base64 text."""
        return cls(MessageType.BINARY, bytes(data))

    # -- derived messages --------------------------------------------------
    def with_metadata(self, metadata: dict[str, Any]) -> Self:
        merged = {**self.metadata, **metadata} if self.metadata else dict(metadata)
        return replace(self, metadata=merged)

    def with_channel(self, channel: str | None) -> Self:
        return replace(self, channel=channel)

    # -- encoding ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type.value}
        if self.type not in _NO_PAYLOAD:
            payload = self.payload
            if isinstance(payload, bytes | bytearray | memoryview):
                payload = base64.b64encode(bytes(payload)).decode("ascii")
            data["payload"] = payload
        data["timestamp"] = self.timestamp
        if self.metadata:
            data["metadata"] = self.metadata
        if self.channel is not None:
            data["channel"] = self.channel
        return data

    def encode(self) -> bytes:
        """UTF-8 JSON bytes of this frame."""
        try:
            return json_encode(self.to_dict())
        except (TypeError, UnicodeEncodeError, msgspec.EncodeError) as exc:  # lone surrogates
            raise MessageInvalid(f"message is not JSON-serialisable: {exc}") from None

    def frame(self) -> OutFrame:
        """This message ready to send (see :class:`~service.frames.OutFrame`)."""
        return OutFrame(self.encode())

    def to_json_string(self) -> str:
        return self.encode().decode()

    @classmethod
    def from_json_string(cls, text: str | bytes) -> Self:
        """Parse a frame; raises :class:`MessageInvalid` on anything that is
        not a frame of a known type with a payload of the right kind."""
        try:
            data = json_decode(text)
        except msgspec.DecodeError as exc:
            raise MessageInvalid(f"not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        if not isinstance(data, dict):
            raise MessageInvalid("a frame must be a JSON object")
        raw_type = data.get("type")
        try:
            kind = MessageType(str(raw_type)) if isinstance(raw_type, str) else None
        except ValueError:
            kind = None
        if kind is None:
            raise MessageInvalid(f"unknown message type {raw_type!r}") from None
        payload = data.get("payload")
        _check_payload(kind, payload)
        metadata = data.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise MessageInvalid("metadata must be an object")
        timestamp = data.get("timestamp")
        if timestamp is None:
            timestamp = int(time.time())
        elif not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise MessageInvalid("timestamp must be an integer")
        channel = data.get("channel")
        if channel is not None and not isinstance(channel, str):
            raise MessageInvalid("channel must be a string")
        if kind is MessageType.BINARY:
            payload = _decode_base64(str(payload))
        return cls(kind, None if kind in _NO_PAYLOAD else payload, timestamp, metadata, channel)


def _check_payload(kind: MessageType, payload: Any) -> None:
    if kind in (MessageType.TEXT, MessageType.BINARY) and not isinstance(payload, str):
        raise MessageInvalid(f"{kind.value} payload must be a string")
    if kind is MessageType.EVENT and not (
        isinstance(payload, dict) and isinstance(payload.get("event"), str) and payload["event"]
    ):
        raise MessageInvalid('event payload must be {"event": name, "data": value}')


def _decode_base64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise MessageInvalid("binary payload must be base64") from None
