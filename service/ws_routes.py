"""The WebSocket endpoints ``/ws`` and ``/ws/{channel}``.

Each socket's life: accept, register (the welcome frame goes out first),
optional subscription to the path's channel, then a receive loop that hands
frames to the :class:`~service.protocol.ClientProtocol` until the client
leaves or the server closes it; finally every membership is cleaned up.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from litestar import WebSocket, websocket
from litestar.handlers import WebsocketRouteHandler
from litestar.params import FromPath

from .channels import validate_channel_name
from .close_codes import CloseCode, close_reason
from .connection import Connection, ConnectionMetadata, DirectSocket
from .errors import RtforgeError
from .fastws import DIRECT_EXTENSION
from .messages import WebSocketMessage
from .node import Node, node_of

__all__ = ["websocket_routes"]

log = logging.getLogger("rtforge.ws")

#: how long a closing socket may take to flush its queue and close frame
_FLUSH_TIMEOUT = 5.0


def websocket_routes() -> list[WebsocketRouteHandler]:
    """The route handlers to merge into any Litestar app that runs a node."""

    @websocket("/ws", name="ws")
    async def ws_main(socket: WebSocket) -> None:  # type: ignore[type-arg]
        await serve_socket(socket, None)

    @websocket("/ws/{channel:str}", name="ws_channel")
    async def ws_channel(socket: WebSocket, channel: FromPath[str]) -> None:  # type: ignore[type-arg]
        await serve_socket(socket, channel)

    return [ws_main, ws_channel]


def _metadata(socket: WebSocket) -> ConnectionMetadata:  # type: ignore[type-arg]
    client = socket.client
    remote = f"{client.host}:{client.port}" if client else None
    return ConnectionMetadata(remote_addr=remote, user_agent=socket.headers.get("user-agent"))


async def serve_socket(socket: WebSocket, channel: str | None) -> None:  # type: ignore[type-arg]
    node: Node = node_of(socket.app.state)
    manager = node.manager
    if manager.draining:
        await socket.close(code=int(CloseCode.SERVICE_RESTART))
        return
    await socket.accept()
    if channel is not None:
        try:
            validate_channel_name(channel)
        except RtforgeError as exc:
            await _refuse(socket, exc)
            return
    welcome = f"Connected to channel: {channel}" if channel else "WebSocket connected"
    conn = await manager.register(socket.send, _metadata(socket), welcome, _direct(socket))
    reason = "client"
    try:
        if channel is not None:
            await node.protocol.run_command(conn, {"command": "subscribe", "channel": channel})
        reason = await _receive_loop(socket, conn, node)
    except Exception:
        log.exception("connection %s failed", conn.id)
        conn.close(CloseCode.INTERNAL_ERROR)
        reason = "error"
    finally:
        if reason == "client":
            conn.abort()  # the client left: nothing more can be sent
        else:
            await conn.wait_closed(_FLUSH_TIMEOUT)
        await manager.unregister(conn, reason)


def _direct(socket: WebSocket) -> DirectSocket | None:  # type: ignore[type-arg]
    """The socket's direct-write extension, when the server offers one."""
    extension: Any = (socket.scope.get("extensions") or {}).get(DIRECT_EXTENSION)
    return cast("DirectSocket | None", extension.get("socket")) if extension else None


async def _refuse(socket: WebSocket, exc: RtforgeError) -> None:  # type: ignore[type-arg]
    frame = WebSocketMessage.system(str(exc)).with_metadata({"ok": False, "error": exc.code})
    await socket.send_text(frame.to_json_string())
    await socket.close(int(CloseCode.POLICY_VIOLATION), close_reason(CloseCode.POLICY_VIOLATION))


async def _receive_loop(socket: WebSocket, conn: Connection, node: Node) -> str:  # type: ignore[type-arg]
    """Handle client frames until the socket ends; returns why it ended."""
    receive = socket.receive
    protocol = node.protocol
    max_size = node.settings.max_message_size
    max_chars = max_size // 4  # a str this short cannot exceed max_size in UTF-8
    metrics = node.manager.metrics
    while True:
        event = await receive()
        if event["type"] != "websocket.receive":
            return "client" if not conn.closed else "server"
        conn.last_seen = time.monotonic()
        if conn.closed:
            continue  # closing: drain input until the client acknowledges
        text = event.get("text")
        if text is not None:
            if len(text) > max_chars and len(text.encode()) > max_size:
                metrics.oversized_frames.inc()
                conn.close(CloseCode.MESSAGE_TOO_BIG)
                return "message_too_big"
            await protocol.handle_text(conn, text)
        else:
            data = event.get("bytes") or b""
            if len(data) > max_size:
                metrics.oversized_frames.inc()
                conn.close(CloseCode.MESSAGE_TOO_BIG)
                return "message_too_big"
            await protocol.handle_bytes(conn, data)
