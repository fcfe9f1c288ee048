"""A small real WebSocket test client around ``websockets``' asyncio API.

:class:`WsClient` reads JSON frames, keeps frames it was not looking for in
``buffer`` (in arrival order) and matches command replies by the ``id`` it
puts into every command::

    async with await WsClient.connect(node.ws_url) as client:
        reply = await client.command("subscribe", channel="chat:room1")
        assert reply["metadata"]["ok"] is True
        frame = await client.recv_until(in_channel("chat:room1"))
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "Frame",
    "Predicate",
    "WsClient",
    "WsClosed",
    "WsConnect",
    "in_channel",
    "of_type",
    "reply_to",
]

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]

#: close code used when the server dropped the TCP connection without a close frame
ABNORMAL_CLOSURE = 1006


class WsClosed(Exception):
    """The connection closed while a frame was expected."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"connection closed with code {code} ({reason!r})")
        self.code = code
        self.reason = reason


def _close_of(exc: ConnectionClosed) -> WsClosed:
    if exc.rcvd is not None:
        return WsClosed(exc.rcvd.code, exc.rcvd.reason)
    return WsClosed(ABNORMAL_CLOSURE, "no close frame received")


def of_type(kind: str) -> Predicate:
    """Frames whose ``type`` is ``kind``."""
    return lambda frame: frame.get("type") == kind


def in_channel(channel: str) -> Predicate:
    """Frames delivered through ``channel``."""
    return lambda frame: frame.get("channel") == channel


def reply_to(command: str) -> Predicate:
    """Replies to ``command`` (with or without an id)."""
    return lambda frame: (frame.get("metadata") or {}).get("command") == command


class WsClient:
    """One client connection. Use :meth:`connect`, not the constructor."""

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.buffer: deque[Frame] = deque()
        self.welcome: Frame | None = None
        self._ids = itertools.count(1)
        self._tag = uuid.uuid4().hex[:6]

    @classmethod
    async def connect(
        cls, url: str, *, welcome: bool = True, timeout: float = 5.0, **options: Any
    ) -> WsClient:
        """Connect to ``url``; with ``welcome`` (default) read the welcome
        frame into :attr:`welcome`. ``options`` go to ``websockets``'
        ``connect`` (defaults here: no proxy, no compression, no client
        keepalive pings, so frame sizes and traffic are what the test sends)."""
        options.setdefault("proxy", None)
        options.setdefault("compression", None)
        options.setdefault("ping_interval", None)
        options.setdefault("open_timeout", timeout)
        options.setdefault("close_timeout", 2)
        options.setdefault("max_size", 16 * 1024 * 1024)
        ws = await connect(url, **options)
        client = cls(ws, url)
        if welcome:
            try:
                client.welcome = await client.recv_json(timeout)
            except BaseException:
                await ws.close()
                raise
        return client

    @property
    def connection_id(self) -> str:
        """The id the server announced in the welcome frame."""
        assert self.welcome is not None, "connected without reading the welcome frame"
        connection_id = (self.welcome.get("metadata") or {}).get("connection_id")
        assert isinstance(connection_id, str), f"welcome without connection_id: {self.welcome}"
        return connection_id

    # -- sending -----------------------------------------------------------
    async def send_json(self, data: Any) -> None:
        await self.ws.send(json.dumps(data))

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def send_bytes(self, data: bytes) -> None:
        await self.ws.send(data)

    def next_id(self, name: str = "req") -> str:
        return f"{name}-{self._tag}-{next(self._ids)}"

    async def send_command(self, name: str, **fields: Any) -> Any:
        """Send a command with a fresh id (unless ``id`` is given, of any
        JSON type); return the id."""
        request_id = fields.pop("id") if "id" in fields else self.next_id(name)
        await self.send_json(
            {"type": "system", "payload": {"command": name, "id": request_id, **fields}}
        )
        return request_id

    async def command(self, name: str, *, timeout: float = 5.0, **fields: Any) -> Frame:
        """Run a command and return its reply (matched by id); frames that
        arrive meanwhile stay in :attr:`buffer`."""
        request_id = await self.send_command(name, **fields)
        return await self.reply(request_id, timeout)

    async def reply(self, request_id: object, timeout: float = 5.0) -> Frame:
        """The reply carrying ``request_id`` in its metadata."""
        return await self.recv_until(
            lambda f: (f.get("metadata") or {}).get("id") == request_id, timeout
        )

    # -- receiving ---------------------------------------------------------
    async def _read(self, timeout: float) -> Frame:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), max(timeout, 0.0))
        except TimeoutError:
            raise AssertionError(
                f"no frame within {timeout:.2f}s; buffered: {list(self.buffer)[-5:]}"
            ) from None
        except ConnectionClosed as exc:
            raise _close_of(exc) from None
        assert isinstance(raw, str), f"server sent a binary frame: {raw[:80]!r}"
        frame = json.loads(raw)
        assert isinstance(frame, dict), f"server frame is not a JSON object: {raw[:200]}"
        return frame

    async def recv_json(self, timeout: float = 5.0) -> Frame:
        """The next frame (buffered ones first)."""
        if self.buffer:
            return self.buffer.popleft()
        return await self._read(timeout)

    async def recv_until(self, predicate: Predicate, timeout: float = 5.0) -> Frame:
        """The first frame (buffered or new) matching ``predicate``; others
        are kept in :attr:`buffer`."""
        for index, frame in enumerate(self.buffer):
            if predicate(frame):
                del self.buffer[index]
                return frame
        deadline = time.monotonic() + timeout
        while True:
            frame = await self._read(deadline - time.monotonic())
            if predicate(frame):
                return frame
            self.buffer.append(frame)

    async def recv_many(
        self, predicate: Predicate, count: int, timeout: float = 10.0
    ) -> list[Frame]:
        """``count`` frames matching ``predicate``, in arrival order."""
        deadline = time.monotonic() + timeout
        return [
            await self.recv_until(predicate, max(deadline - time.monotonic(), 0.0))
            for _ in range(count)
        ]

    def take(self, predicate: Predicate) -> list[Frame]:
        """Remove and return every buffered frame matching ``predicate``."""
        taken = [f for f in self.buffer if predicate(f)]
        self.buffer = deque(f for f in self.buffer if not predicate(f))
        return taken

    async def sync(self, timeout: float = 5.0) -> None:
        """A ``ping`` command round trip. On one node everything the server
        queued for this client before the reply has arrived (in
        :attr:`buffer`) once this returns, which makes "nothing else
        arrived" checkable without sleeping."""
        await self.command("ping", timeout=timeout)

    async def expect_no_frame(
        self, within: float = 0.3, predicate: Predicate | None = None
    ) -> None:
        """Fail if a frame (matching ``predicate``) is buffered or arrives
        within ``within`` seconds; other frames are buffered. Prefer
        :meth:`sync` plus :meth:`take` where one node is involved."""
        match = predicate or (lambda _frame: True)
        found = [f for f in self.buffer if match(f)]
        assert not found, f"unexpected frame(s): {found}"
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame = await self._read(remaining)
            except AssertionError:
                return
            assert not match(frame), f"unexpected frame: {frame}"
            self.buffer.append(frame)

    async def expect_close(self, timeout: float = 5.0) -> WsClosed:
        """Read (into :attr:`buffer`) until the connection closes; return
        the close code and reason. Fails when it stays open ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.buffer.append(await self._read(deadline - time.monotonic()))
            except WsClosed as closed:
                return closed

    # -- closing -----------------------------------------------------------
    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


WsConnect = Callable[..., Awaitable[WsClient]]
"""What the ``ws_connect`` fixture is: ``await ws_connect(url, **options)``."""
