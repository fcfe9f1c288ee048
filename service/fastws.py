"""uvicorn's sans-I/O WebSocket protocol with a direct-write extension.

:class:`RtforgeWebSocketProtocol` is what ``rtforge serve`` passes to uvicorn
as its WebSocket implementation (``uvicorn.Config(ws=...)``). It behaves
exactly like uvicorn's ``websockets-sansio`` protocol and adds the ASGI scope
extension ``"rtforge.direct"``, whose ``"socket"`` is the protocol itself
(see :class:`service.connection.DirectSocket`). Through it the application
writes prepared wire frames (:class:`service.frames.OutFrame`) straight to
the transport: no ``await``, no per-message task switch, no re-framing per
recipient. Any other ASGI server keeps working through the ordinary
``websocket.send`` path, since the extension is then simply absent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

__all__ = ["DIRECT_EXTENSION", "RtforgeWebSocketProtocol"]

DIRECT_EXTENSION = "rtforge.direct"


def _ignore() -> None:
    return None


class _InboxQueue:
    """The part of :class:`asyncio.Queue` uvicorn uses for a socket's
    incoming events, for one consumer: a list and at most one waiter.
    An :class:`asyncio.Queue` costs ~2.4 KiB per socket; this ~0.3 KiB."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return self._items.popleft()


class _WritableFlag:
    """The part of :class:`asyncio.Event` uvicorn uses for flow control,
    without the Event's per-instance waiter deque until someone waits."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


class RtforgeWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O protocol, plus direct writes of prepared frames."""

    on_shutdown: Callable[[], None] = staticmethod(_ignore)
    on_pause: Callable[[], None] = staticmethod(_ignore)
    on_resume: Callable[[], None] = staticmethod(_ignore)
    on_lost: Callable[[], None] = staticmethod(_ignore)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _InboxQueue()  # type: ignore[assignment]
        self.writable = _WritableFlag()  # type: ignore[assignment]

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][DIRECT_EXTENSION] = {"socket": self}

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake is done: its request and response are garbage now.
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
        elif message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # A denial response (HTTP 401/403/429/503 before the upgrade) ends
            # the handshake too; uvicorn's protocol would otherwise log "ASGI
            # callable returned without completing handshake" at error level.
            self.handshake_complete = True

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        conn = self.conn
        if conn.handshake_exc is not None and not self.handshake_initiated:
            # websockets refused the request before it became one (a request
            # line or header over 8 KiB, such as a huge ?token=, or no HTTP at
            # all) and queued its answer (414, 431 or EOF); uvicorn's protocol
            # never sends it and leaves the socket hanging. Send and close.
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            if not self.transport.is_closing():
                self.transport.write(b"".join(conn.data_to_send()))
                self.transport.close()

    # -- the DirectSocket interface --------------------------------------------
    @property
    def paused(self) -> bool:
        """True while the transport's write buffer is above its high-water mark."""
        return not self.writable.is_set()

    @property
    def open(self) -> bool:
        return self.handshake_complete and not (self.close_sent or self.disconnected)

    def force_close(self, code: int, reason: str) -> None:
        """Queue a close frame behind what the transport holds, without
        waiting for the client to read (uvicorn's own close waits)."""
        if not self.open or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # A client that never reads would keep a closing transport (and its
        # buffer) forever: abort if the close handshake has not ended in time.
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    # -- flow-control and loss notifications -------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        self.on_pause()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.on_resume()

    def shutdown(self) -> None:
        # Let the connection flush what it accepted and close with 1012
        # itself; uvicorn then only closes the transport behind it.
        self.on_shutdown()
        super().shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.on_lost()
