"""Outgoing frames, encoded once per message for every recipient.

An :class:`OutFrame` holds one server frame in the two forms a socket may
need: the JSON text (for the portable ASGI ``websocket.send`` path) and the
complete WebSocket wire frame, header included (for sockets served by
:mod:`service.fastws`, which write it to the transport as is). Server frames
are never masked, so the wire bytes are the same for every recipient.
"""

from __future__ import annotations

import struct

__all__ = ["OutFrame", "close_frame", "text_frame"]

_FIN_TEXT = 0x81
_FIN_CLOSE = 0x88


def _header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((opcode, length))
    if length < 65536:
        return struct.pack("!BBH", opcode, 126, length)
    return struct.pack("!BBQ", opcode, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, unfragmented text frame carrying ``payload``."""
    return _header(_FIN_TEXT, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A complete close frame (the reason is cut to fit 123 bytes)."""
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    return _header(_FIN_CLOSE, len(body)) + body


class OutFrame:
    """One server frame as JSON text and as wire bytes."""

    __slots__ = ("text", "wire")

    def __init__(self, payload: bytes) -> None:
        self.text = payload.decode("utf-8")
        self.wire = text_frame(payload)

    @classmethod
    def from_text(cls, text: str) -> OutFrame:
        return cls(text.encode("utf-8"))
