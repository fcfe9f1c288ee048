"""The WebSocket endpoints ``/ws`` and ``/ws/{channel}``.

Each socket's life: accept, register (the welcome frame goes out first),
optional subscription to the path's channel, then a receive loop that hands
frames to the :class:`~service.protocol.ClientProtocol` until the client
leaves or the server closes it; finally every membership is cleaned up.

It is all one coroutine over raw ASGI (:func:`serve_websocket`), because an
idle socket keeps its whole call chain alive: ``rtforge serve`` puts
:class:`WebSocketFrontApp` in front of Litestar, so that sockets on these two
paths never pass through Litestar's routing and connection objects (HTTP
still does). :func:`websocket_routes` offers the same endpoints as Litestar
route handlers for applications that embed a node in their own app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from litestar import Litestar, WebSocket, websocket
from litestar.enums import ScopeType
from litestar.handlers import WebsocketRouteHandler
from litestar.params import FromPath
from litestar.types import Receive, Scope, Send

from .channels import validate_channel_name
from .close_codes import CloseCode, close_reason
from .connection import Connection, ConnectionMetadata, DirectSocket
from .errors import RtforgeError
from .fastws import DIRECT_EXTENSION
from .limits import TokenBucket, rate_limited_reply
from .manager import WebSocketManager
from .messages import WebSocketMessage, json_encode
from .node import Node, node_of
from .security import Refusal

__all__ = ["WebSocketFrontApp", "serve_websocket", "websocket_routes"]

log = logging.getLogger("rtforge.ws")

#: how long a closing socket may take to flush its queue and close frame
_FLUSH_TIMEOUT = 5.0
_CHANNEL_PREFIX = "/ws/"

#: ASGI send, typed loosely: the events below are plain dicts
AnySend = Callable[[Any], Awaitable[None]]


def websocket_routes() -> list[WebsocketRouteHandler]:
    """The route handlers to merge into any Litestar app that runs a node."""

    @websocket("/ws", name="ws")
    async def ws_main(socket: WebSocket) -> None:  # type: ignore[type-arg]
        node = node_of(socket.app.state)
        await serve_websocket(socket.scope, socket.receive, socket.send, node, None)

    @websocket("/ws/{channel:str}", name="ws_channel")
    async def ws_channel(socket: WebSocket, channel: FromPath[str]) -> None:  # type: ignore[type-arg]
        node = node_of(socket.app.state)
        await serve_websocket(socket.scope, socket.receive, socket.send, node, channel)

    return [ws_main, ws_channel]


class WebSocketFrontApp:
    """ASGI app that serves ``/ws`` and ``/ws/{channel}`` itself and hands
    everything else (HTTP, lifespan, other WebSocket paths) to Litestar."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        self.node: Node = node_of(app.state)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            path: str = scope["path"]
            if path == "/ws":
                await serve_websocket(scope, receive, send, self.node, None)
                return
            if path.startswith(_CHANNEL_PREFIX) and len(path) > len(_CHANNEL_PREFIX):
                channel = path[len(_CHANNEL_PREFIX):]
                await serve_websocket(scope, receive, send, self.node, channel)
                return
        await self.app(scope, receive, send)


def _header(scope: Any, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return cast(bytes, value).decode("latin-1")
    return None


def _direct(scope: Any) -> DirectSocket | None:
    """The socket's direct-write extension, when the server offers one."""
    extension: Any = (scope.get("extensions") or {}).get(DIRECT_EXTENSION)
    return cast("DirectSocket | None", extension.get("socket")) if extension else None


async def serve_websocket(
    scope: Any, receive: Receive, send: Send, node: Node, channel: str | None
) -> None:
    """Serve one WebSocket from handshake to cleanup.

    Deliberately one flat loop: while a socket idles, this frame is all
    rtforge keeps on its call stack."""
    conn = await _open(scope, receive, cast(AnySend, send), node, channel)
    if conn is None:
        return
    manager = node.manager
    protocol = node.protocol
    max_size = node.settings.max_message_size
    bucket = protocol.security.bucket()  # None without --rate-limit
    reason = "client"
    try:
        if channel is not None:
            await protocol.run_command(conn, {"command": "subscribe", "channel": channel})
        while True:
            event = await receive()
            if event["type"] != "websocket.receive":
                reason = "client" if not conn.closed else "server"
                if event.get("code") == CloseCode.MESSAGE_TOO_BIG and not conn.closed:
                    _count_oversized(manager)  # refused by the server's protocol
                break
            conn.last_seen = time.monotonic()
            if conn.closed:
                continue  # closing: drain input until the client acknowledges
            if _too_big(event, max_size):
                _count_oversized(manager)
                conn.close(CloseCode.MESSAGE_TOO_BIG)
                reason = "message_too_big"
                break
            text = event.get("text")
            if bucket is not None and not bucket.take():
                if _throttle(conn, bucket, text, manager):
                    reason = "rate_limited"
                    break
                continue
            if text is not None:
                await protocol.handle_text(conn, text)
            else:
                await protocol.handle_bytes(conn, event.get("bytes") or b"")
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


async def _open(
    scope: Any, receive: Receive, send: AnySend, node: Node, channel: str | None
) -> Connection | None:
    """Handshake and register; None when the socket was refused."""
    if (await receive())["type"] != "websocket.connect":
        return None
    if node.manager.draining:
        await send({"type": "websocket.close", "code": int(CloseCode.SERVICE_RESTART)})
        return None
    security = node.protocol.security
    try:
        identity = await security.admit(scope)  # origin, capacity, token, per-user limit
    except Refusal as refusal:
        await _reject(scope, send, refusal)
        return None
    try:
        await send({"type": "websocket.accept"})
        if channel is not None:
            try:
                validate_channel_name(channel)
            except RtforgeError as exc:
                await _refuse(send, exc)
                return None
        client = scope.get("client")
        metadata = ConnectionMetadata(
            remote_addr=f"{client[0]}:{client[1]}" if client else None,
            user_agent=_header(scope, b"user-agent"),
            custom=identity.custom(),
        )
        welcome = f"Connected to channel: {channel}" if channel else "WebSocket connected"
        conn = await node.manager.register(send, metadata, welcome, _direct(scope))
    finally:
        security.release(identity)
    security.registered(conn, identity)
    return conn


def _count_oversized(manager: WebSocketManager) -> None:
    manager.metrics.oversized_frames.inc()
    manager.metrics.limit_hits.labels("frame_size").inc()


def _throttle(conn: Connection, bucket: TokenBucket, text: str | None,
              manager: WebSocketManager) -> bool:
    """A frame over the rate limit: reply ``rate_limited``, or, after
    ``--rate-burst`` refusals in a row, close with 1008. True when closed."""
    manager.metrics.limit_hits.labels("rate").inc()
    if bucket.refused >= bucket.burst:  # sustained abuse
        conn.close(CloseCode.POLICY_VIOLATION, "rate limit exceeded")
        return True
    conn.push(rate_limited_reply(text).frame())
    return False


def _too_big(event: Any, max_size: int) -> bool:
    text = event.get("text")
    if text is None:
        return len(event.get("bytes") or b"") > max_size
    # A str of at most max_size // 4 characters cannot exceed max_size in UTF-8.
    return len(text) > max_size // 4 and len(text.encode()) > max_size


async def _reject(scope: Any, send: AnySend, refusal: Refusal) -> None:
    """Refuse a handshake: an HTTP response before the upgrade when the
    server supports it (ASGI ``websocket.http.response``), else accept, one
    ``system`` frame with the error and a close with the fallback code."""
    body = json_encode({"error": refusal.error, "detail": refusal.detail})
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [(b"content-type", b"application/json"), *refusal.headers]
        await send({"type": "websocket.http.response.start", "status": refusal.status,
                    "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.accept"})
    frame = WebSocketMessage.system(refusal.detail).with_metadata(
        {"ok": False, "error": refusal.error}
    )
    await send({"type": "websocket.send", "text": frame.to_json_string()})
    reason = refusal.error.replace("_", " ")
    await send({"type": "websocket.close", "code": refusal.close_code, "reason": reason})


async def _refuse(send: AnySend, exc: RtforgeError) -> None:
    frame = WebSocketMessage.system(str(exc)).with_metadata({"ok": False, "error": exc.code})
    await send({"type": "websocket.send", "text": frame.to_json_string()})
    code = CloseCode.POLICY_VIOLATION
    await send({"type": "websocket.close", "code": int(code), "reason": close_reason(code)})
