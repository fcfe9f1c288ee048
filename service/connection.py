"""One client socket: its identity, metadata, bounded send queue and writer.

Fan-out calls :meth:`Connection.push` with an already-encoded frame: an
append to a deque and, when the writer sleeps, waking it. Nothing in
``push`` awaits. A single writer task per connection drains the queue to
the socket. When the queue is full the client is a slow consumer: its
pending frames are dropped and it is closed with 1013, so that nobody else
ever waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .close_codes import CloseCode, close_reason

__all__ = ["Connection", "ConnectionId", "ConnectionMetadata"]

log = logging.getLogger("rtforge.connection")

#: the ASGI ``send`` of the socket (typed loosely: servers differ in event types)
SendFn = Callable[[Any], Awaitable[None]]

#: how long a close frame may take to leave before the socket is given up
_CLOSE_TIMEOUT = 5.0


class ConnectionId(str):
    """A connection's id: a UUID4 string."""

    __slots__ = ()

    @classmethod
    def new(cls) -> ConnectionId:
        return cls(uuid.uuid4())


@dataclass(slots=True)
class ConnectionMetadata:
    """What is known about a client when it connects."""

    connected_at: float = field(default_factory=time.time)
    remote_addr: str | None = None
    user_agent: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "connected_at": self.connected_at,
            "remote_addr": self.remote_addr,
            "user_agent": self.user_agent,
            "custom": self.custom,
        }


class Connection:
    """A local socket. Created by the manager when a client connects."""

    __slots__ = (
        "_close_reason",
        "_closed",
        "_queue",
        "_queue_limit",
        "_send",
        "_waiter",
        "_writer",
        "channels",
        "close_code",
        "frames_sent",
        "id",
        "last_seen",
        "metadata",
        "on_overflow",
    )

    def __init__(
        self,
        connection_id: ConnectionId,
        metadata: ConnectionMetadata,
        send: SendFn,
        queue_limit: int,
        on_overflow: Callable[[Connection], None],
    ) -> None:
        self.id = connection_id
        self.metadata = metadata
        self.channels: set[str] = set()
        self.last_seen = time.monotonic()
        self.close_code: CloseCode | None = None
        self.frames_sent = 0
        self.on_overflow = on_overflow
        self._send = send
        self._queue: deque[str] = deque()
        self._queue_limit = queue_limit
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._close_reason: str | None = None

    # -- hot path ----------------------------------------------------------
    def push(self, frame: str) -> bool:
        """Queue ``frame`` for sending; False when it was not queued (the
        connection is closing, or its queue just overflowed)."""
        if self._closed:
            return False
        queue = self._queue
        if len(queue) >= self._queue_limit:
            self.close(CloseCode.SLOW_CONSUMER)
            self.on_overflow(self)
            return False
        queue.append(frame)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return True

    # -- lifecycle ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start_writer(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"rtforge-writer-{self.id}"
        )

    def close(self, code: CloseCode = CloseCode.NORMAL, reason: str | None = None) -> None:
        """Ask the writer to close the socket with ``code``. Frames already
        queued are sent first, except for a slow consumer, whose queue is
        dropped. Idempotent: the first close code wins."""
        if self._closed:
            return
        self._closed = True
        self.close_code = code
        if code is CloseCode.SLOW_CONSUMER:
            self._queue.clear()
            # The writer may be stuck on a full socket: stop it and close
            # from a fresh task so the close frame goes out behind whatever
            # the transport already buffered.
            if self._writer is not None:
                self._writer.cancel()
            self._writer = asyncio.get_running_loop().create_task(
                self._send_close(code, reason), name=f"rtforge-close-{self.id}"
            )
            return
        self._close_reason = reason if reason is not None else close_reason(code)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(None)

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the writer has finished (queue flushed, close sent)."""
        writer = self._writer
        if writer is None:
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(writer), timeout)

    def abort(self) -> None:
        """Stop the writer without sending anything (the socket is gone)."""
        self._closed = True
        self._queue.clear()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    async def _write_loop(self) -> None:
        queue = self._queue
        send = self._send
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    await send({"type": "websocket.send", "text": queue.popleft()})
                    self.frames_sent += 1
                if self._closed:
                    break
                waiter = loop.create_future()
                self._waiter = waiter
                await waiter
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket went away under us
            log.debug("writer for %s stopped: %r", self.id, exc)
            self._closed = True
            queue.clear()
            return
        code = self.close_code or CloseCode.NORMAL
        await self._send_close(code, self._close_reason)

    async def _send_close(self, code: CloseCode, reason: str | None) -> None:
        text = reason if reason is not None else close_reason(code)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": int(code), "reason": text}),
                _CLOSE_TIMEOUT,
            )
