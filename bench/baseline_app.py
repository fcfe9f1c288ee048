"""The baseline: a bare ASGI WebSocket broadcast app on the same uvicorn.

A set of sockets; every WebSocket connection (any path) is accepted, gets
one welcome frame and joins the set. ``POST /publish`` (or rtforge's path
``POST /api/channels/{c}/publish``) takes the same JSON body rtforge's API
does, encodes the frame once (``{"type","payload","timestamp","channel"}``,
the shape rtforge sends) and awaits ``websocket.send`` of that one string
for each socket in turn. ``GET /healthz`` answers 200. Nothing else: no
queues, no metrics, no logging — the cheapest broadcast a Python app on
uvicorn can do without touching the server's internals.

Run it as ``python -m bench.baseline_app --port P --ws wsproto``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["app", "main"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CHANNEL = "bench"
_WELCOME = json.dumps(
    {"type": "system", "payload": f"Subscribed to channel: {CHANNEL}", "timestamp": 0},
    separators=(",", ":"),
)
_JSON = [(b"content-type", b"application/json")]

sockets: set[Send] = set()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    kind = scope["type"]
    if kind == "websocket":
        await _websocket(receive, send)
    elif kind == "http":
        await _http(scope, receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _websocket(receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    try:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": _WELCOME})
    except Exception:  # the client gave up during the handshake
        return
    sockets.add(send)
    try:
        while (await receive())["type"] != "websocket.disconnect":
            pass  # client frames (pongs) are only activity
    finally:
        sockets.discard(send)


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    path, method = scope["path"], scope["method"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if method == "POST" and (path == "/publish" or path.endswith("/publish")):
        recipients = await broadcast(body)
        await _respond(send, 200, b'{"recipients":%d}' % recipients)
    elif path == "/healthz":
        await _respond(send, 200, b'{"status":"ok"}')
    else:
        await _respond(send, 404, b'{"error":"not_found"}')


async def broadcast(body: bytes) -> int:
    """Send one frame built from ``body`` (``{"type", "payload"}``) to every
    socket; returns how many sends succeeded."""
    frame = (
        body.rstrip()[:-1].decode()
        + f',"timestamp":{int(time.time())},"channel":"{CHANNEL}"}}'
    )
    event = {"type": "websocket.send", "text": frame}
    sent = 0
    for socket_send in list(sockets):
        try:
            await socket_send(event)
        except Exception:
            sockets.discard(socket_send)
        else:
            sent += 1
    return sent


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description="bare ASGI WebSocket broadcast baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws", default="websockets-sansio",
                        help="uvicorn WebSocket implementation")
    parser.add_argument("--ping-interval", type=float, default=None,
                        help="protocol-level ping interval in seconds (default: off)")
    parser.add_argument("--ping-timeout", type=float, default=None)
    parser.add_argument("--max-size", type=int, default=65536,
                        help="largest client frame, as rtforge's default")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()

    import uvicorn  # noqa: PLC0415 - not needed to import the app

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        ws=args.ws,
        ws_max_size=args.max_size,
        ws_ping_interval=args.ping_interval,
        ws_ping_timeout=args.ping_timeout,
        lifespan="on",
        log_level=args.log_level,
        access_log=False,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
