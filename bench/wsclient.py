"""A minimal, lean WebSocket client protocol for load generation.

One :class:`WsClient` is an :class:`asyncio.Protocol` for one connection: it
writes the HTTP upgrade request, checks the ``101`` answer and its
``Sec-WebSocket-Accept``, then parses server frames (unmasked; 7-, 16- and
64-bit lengths; fragmented messages reassembled). Control frames are
answered: ``ping`` with ``pong``, ``close`` with ``close``. rtforge's
application-level ``{"type":"ping"}`` text frames are answered with
``{"type":"pong"}``. Every other complete text message goes to the
connection's :class:`FrameSink` with one ``perf_counter_ns`` taken per read.

Client frames are masked, as RFC 6455 requires.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from time import perf_counter_ns
from typing import Protocol, cast

__all__ = [
    "FrameSink",
    "HandshakeError",
    "WsClient",
    "encode_client_frame",
    "handshake_request",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_APP_PING = b'{"type":"ping"'
_APP_PONG = b'{"type":"pong"}'
_MAX_HANDSHAKE = 16384


class HandshakeError(Exception):
    """The server did not upgrade the connection."""


class FrameSink(Protocol):
    """Where a client's events go (a scenario's hub)."""

    def on_text(self, client: WsClient, payload: bytes, now_ns: int) -> None: ...

    def on_lost(self, client: WsClient) -> None: ...


def handshake_request(host: str, port: int, path: str) -> tuple[bytes, bytes]:
    """The upgrade request for ``path`` and the ``Sec-WebSocket-Accept``
    value the server must answer with."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"User-Agent: rtforge-bench\r\nSec-WebSocket-Key: {key.decode()}\r\n\r\n"
    ).encode()
    return request, accept


def encode_client_frame(opcode: int, payload: bytes) -> bytes:
    """A single masked, final client frame."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    mask = os.urandom(4)
    if not size:
        return head + mask
    keystream = (mask * (size // 4 + 1))[:size]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")
    return head + mask + masked.to_bytes(size, "big")


class WsClient(asyncio.Protocol):
    """One client connection. ``opened`` resolves when the server answered
    ``101``; ``ready``, ``seen`` and ``idx`` belong to the scenario."""

    __slots__ = (
        "_accept",
        "_buffer",
        "_fragments",
        "_handshake",
        "_request",
        "aborted",
        "app_pings",
        "close_code",
        "closed",
        "control_pings",
        "idx",
        "opened",
        "ready",
        "seen",
        "sink",
        "transport",
    )

    def __init__(
        self,
        idx: int,
        sink: FrameSink,
        request: bytes,
        accept: bytes,
        opened: asyncio.Future[None],
    ) -> None:
        self.idx = idx
        self.sink = sink
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.ready = False
        self.seen: bytearray | None = None
        self.closed = False
        self.aborted = False
        self.close_code: int | None = None
        self.control_pings = 0
        self.app_pings = 0
        self._request = request
        self._accept = accept
        self._handshake: bytes | None = b""
        self._buffer = b""
        self._fragments: list[bytes] | None = None

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(
                HandshakeError(f"connection lost during handshake: {exc!r}")
            )
            return
        self.sink.on_lost(self)

    def data_received(self, data: bytes) -> None:
        if self._handshake is not None:
            data = self._finish_handshake(data)
            if not data:
                return
        buf = self._buffer + data if self._buffer else data
        now = perf_counter_ns()
        end = len(buf)
        pos = 0
        while end - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            stop = start + length
            if stop > end:
                break
            payload = buf[start:stop]
            pos = stop
            opcode = b0 & 0x0F
            if opcode == OP_TEXT and b0 & 0x80:
                self._text(payload, now)
            else:
                self._other(opcode, bool(b0 & 0x80), payload, now)
        self._buffer = buf[pos:] if pos < end else b""

    # -- frames ----------------------------------------------------------------
    def _text(self, payload: bytes, now: int) -> None:
        if payload.startswith(_APP_PING):
            self.app_pings += 1
            self.send(OP_TEXT, _APP_PONG)
            return
        self.sink.on_text(self, payload, now)

    def _other(self, opcode: int, fin: bool, payload: bytes, now: int) -> None:
        if opcode == OP_PING:
            self.control_pings += 1
            self.send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closed:
                self.send(OP_CLOSE, payload[:2])
                self.closed = True
        elif opcode in (OP_TEXT, OP_BINARY):  # first fragment of a message
            self._fragments = [payload]
        elif opcode == OP_CONT and self._fragments is not None:
            self._fragments.append(payload)
            if fin:
                message = b"".join(self._fragments)
                self._fragments = None
                self._text(message, now)

    def _finish_handshake(self, data: bytes) -> bytes:
        """Collect the upgrade answer; returns the bytes that follow it."""
        head = (self._handshake or b"") + data
        split = head.find(b"\r\n\r\n")
        if split < 0:
            if len(head) > _MAX_HANDSHAKE:
                self._fail(HandshakeError("oversized handshake answer"))
            else:
                self._handshake = head
            return b""
        self._handshake = None
        answer, rest = head[:split], head[split + 4 :]
        if not answer.startswith(b"HTTP/1.1 101") or self._accept not in answer:
            status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
            self._fail(HandshakeError(f"no upgrade: {status}"))
            return b""
        if not self.opened.done():
            self.opened.set_result(None)
        return rest

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        self.abort()

    # -- sending ---------------------------------------------------------------
    def send(self, opcode: int, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(encode_client_frame(opcode, payload))

    def abort(self) -> None:
        """Drop the connection at once (no closing handshake)."""
        self.aborted = True
        if self.transport is not None:
            self.transport.abort()
