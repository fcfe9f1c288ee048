"""One client socket: its identity, metadata and bounded outbound path.

Fan-out calls :meth:`Connection.push` with an :class:`~service.frames.OutFrame`
encoded once for all recipients. ``push`` never awaits. Two ways out:

* **direct** (sockets served by :mod:`service.fastws`): the prepared wire
  frames a socket receives during one event-loop iteration are *corked* and
  written to its transport in one ``write`` at the start of the next
  iteration (:class:`Corker`): a loopback ``send()`` costs more than all the
  Python around it, so a burst of N messages costs one syscall per socket,
  not N. While the transport's buffer is above its high-water mark (the
  protocol paused us), frames wait in a backlog, flushed in one write when
  the transport drains. No task per connection, no ``await`` per frame.
* **ASGI** (any other server): frames wait in a queue that one writer task
  drains through ``websocket.send``.

Either way the backlog is bounded (``send_queue_size`` frames). A client
whose backlog overflows is a slow consumer: its pending frames are dropped
and it is closed with 1013, so that nobody else ever waits for it.
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
from typing import Any, Protocol

from .close_codes import CloseCode, close_reason
from .frames import OutFrame

__all__ = ["Connection", "ConnectionId", "ConnectionMetadata", "Corker", "DirectSocket"]

log = logging.getLogger("rtforge.connection")

#: the ASGI ``send`` of the socket (typed loosely: servers differ in event types)
SendFn = Callable[[Any], Awaitable[None]]

#: how long a close frame may take to leave on the ASGI path
_CLOSE_TIMEOUT = 5.0
#: frames corked for one socket before they are written without waiting
_CORK_LIMIT = 64


class DirectSocket(Protocol):
    """What :class:`service.fastws.RtforgeWebSocketProtocol` offers."""

    transport: asyncio.Transport
    on_shutdown: Callable[[], None]
    on_pause: Callable[[], None]
    on_resume: Callable[[], None]
    on_lost: Callable[[], None]

    def force_close(self, code: int, reason: str) -> None: ...


class Corker:
    """Collects the sockets that got frames in this loop iteration and
    flushes each of them with one write in a single callback."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self) -> None:
        self._dirty: list[Connection] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn._uncork()


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
        "_backlog",
        "_close_reason",
        "_closed",
        "_cork",
        "_corked",
        "_direct",
        "_limit",
        "_send",
        "_waiter",
        "_write",
        "_writer",
        "channels",
        "close_code",
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
        *,
        direct: DirectSocket | None = None,
        cork: Corker | None = None,
    ) -> None:
        self.id = connection_id
        self.metadata = metadata
        self.channels: set[str] = set()
        self.last_seen = time.monotonic()
        self.close_code: CloseCode | None = None
        self.on_overflow = on_overflow
        self._send = send
        self._limit = queue_limit
        self._closed = False
        self._close_reason: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._direct = direct
        self._cork = cork if cork is not None else Corker()
        self._corked: list[bytes] | None = None
        # direct mode: None while the transport takes writes, a deque while paused;
        # ASGI mode: the queue of frames waiting for the writer task.
        self._backlog: deque[Any] | None
        if direct is not None:
            self._backlog = None
            self._write: Callable[[bytes], object] = direct.transport.write
            direct.on_shutdown = self._drain
            direct.on_pause = self._pause
            direct.on_resume = self._resume
            direct.on_lost = self.abort
        else:
            self._backlog = deque()
            self._write = _no_write
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name=f"rtforge-writer-{connection_id}"
            )

    # -- hot path ------------------------------------------------------------
    def push(self, frame: OutFrame) -> bool:
        """Send or queue ``frame``; False when it was not accepted (the
        connection is closing, or its backlog just overflowed)."""
        if self._closed:
            return False
        backlog = self._backlog
        if backlog is None:
            corked = self._corked
            if corked is None:
                self._corked = [frame.wire]
                self._cork.add(self)
            else:
                corked.append(frame.wire)
                if len(corked) >= _CORK_LIMIT:
                    self._uncork()
            return True
        if len(backlog) >= self._limit:
            self.close(CloseCode.SLOW_CONSUMER)
            self.on_overflow(self)
            return False
        if self._direct is not None:
            backlog.append(frame.wire)
            return True
        backlog.append(frame.text)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        return True

    # -- direct-mode flow control ----------------------------------------------
    def _uncork(self) -> None:
        corked = self._corked
        if corked is None:
            return
        self._corked = None
        if self._closed:
            return
        if self._backlog is not None:  # paused since: keep the order
            self._backlog.extend(corked)
        else:
            self._write(corked[0] if len(corked) == 1 else b"".join(corked))

    def _pause(self) -> None:
        if self._backlog is None:
            self._backlog = deque()

    def _resume(self) -> None:
        backlog = self._backlog
        if backlog is None or self._direct is None:
            return
        # Reset first: the write below may pause us again with a new backlog.
        self._backlog = None
        if backlog and not self._closed:
            self._write(b"".join(backlog))

    def _drain(self) -> None:
        self.close(CloseCode.SERVICE_RESTART)

    # -- lifecycle -------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def direct(self) -> bool:
        return self._direct is not None

    @property
    def queued(self) -> int:
        return len(self._backlog or ()) + len(self._corked or ())

    def close(self, code: CloseCode = CloseCode.NORMAL, reason: str | None = None) -> None:
        """Close with ``code``. Frames already accepted are sent first,
        except for a slow consumer, whose backlog is dropped. Idempotent:
        the first close code wins."""
        if self._closed:
            return
        self._closed = True
        self.close_code = code
        text = reason if reason is not None else close_reason(code)
        if self._direct is not None:
            corked, self._corked = self._corked, None
            backlog, self._backlog = self._backlog, None
            if code is not CloseCode.SLOW_CONSUMER:
                pending = [*(backlog or ()), *(corked or ())]
                if pending:
                    self._write(b"".join(pending))
            self._direct.force_close(int(code), text)
            return
        self._close_reason = text
        if code is CloseCode.SLOW_CONSUMER:
            if self._backlog is not None:
                self._backlog.clear()
            # The writer may be stuck on a full socket: stop it and close
            # from a fresh task so the close frame goes out behind whatever
            # the transport already buffered.
            if self._writer is not None:
                self._writer.cancel()
            self._writer = asyncio.get_running_loop().create_task(
                self._send_close(code, text), name=f"rtforge-close-{self.id}"
            )
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(None)

    async def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until queued frames and the close frame have been handed to
        the server (ASGI mode; direct mode hands them over at once)."""
        writer = self._writer
        if writer is None:
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(writer), timeout)

    def abort(self) -> None:
        """Stop sending without a close frame (the socket is gone)."""
        self._closed = True
        if self._direct is not None:
            self._backlog = None
            self._corked = None
        elif self._backlog is not None:
            self._backlog.clear()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    # -- ASGI mode ---------------------------------------------------------------
    async def _write_loop(self) -> None:
        queue = self._backlog
        assert queue is not None
        send = self._send
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    await send({"type": "websocket.send", "text": queue.popleft()})
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
        await self._send_close(self.close_code or CloseCode.NORMAL, self._close_reason)

    async def _send_close(self, code: CloseCode, reason: str | None) -> None:
        text = reason if reason is not None else close_reason(code)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": int(code), "reason": text}),
                _CLOSE_TIMEOUT,
            )


def _no_write(data: bytes) -> None:  # pragma: no cover - never called in ASGI mode
    raise RuntimeError("direct write on an ASGI connection")
