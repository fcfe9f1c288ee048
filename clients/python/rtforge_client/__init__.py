"""An asyncio client for rtforge, with the abilities of ``clients/js/rtforge.js``.

::

    from rtforge_client import RtforgeClient

    async with RtforgeClient(["ws://node-a:3000/ws", "ws://node-b:3000/ws"]) as client:
        await client.subscribe("chat:general", lambda frame: print(frame["payload"]))
        await client.publish("chat:general", {"text": "hi"}, event="chat.message")
        print(await client.presence("chat:general"))

* :meth:`RtforgeClient.connect` reads the welcome frame (:attr:`connection_id`).
* Commands (``subscribe``, ``unsubscribe``, ``publish``, ``presence``,
  ``list_channels``, ``ping``) are coroutines matched to their replies by id,
  each with a timeout; a refused one raises :class:`RtforgeError` with the
  server's error code.
* Channel frames go to the handlers of their channel (plain functions or
  coroutine functions).
* The server's ``ping`` frames are answered with ``pong``.
* When the connection ends the client reconnects by itself with jittered
  exponential backoff, to the next URL of its list each time, at once when the
  server closed with 1012 (node restarting), and subscribes again to every
  channel it had. Commands issued while it reconnects wait for the new
  connection within their timeout.

Events (``client.on(name, fn)``, which returns a function removing ``fn``):
``open`` (:class:`ConnectionInfo`), ``close`` (:class:`CloseInfo`),
``reconnecting`` (:class:`RetryInfo`), ``frame`` and ``message`` (a frame no
reply or channel handler took), ``channel_deleted`` (the channel name),
``error`` (an exception).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

__all__ = [
    "CloseInfo",
    "ConnectionInfo",
    "Frame",
    "Handler",
    "RetryInfo",
    "RtforgeClient",
    "RtforgeError",
]

__version__ = "0.1.0"

log = logging.getLogger("rtforge_client")

Frame = dict[str, Any]
Handler = Callable[[Frame], Any]
Listener = Callable[[Any], Any]

SERVICE_RESTART = 1012
ABNORMAL = 1006
IDLE = 4000


class RtforgeError(Exception):
    """A command failed. ``code`` is the server's error code, or ``timeout``,
    ``connection_lost`` or ``closed``; ``reply`` the server's reply frame."""

    def __init__(self, message: str, code: str, reply: Frame | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reply = reply


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    connection_id: str | None
    url: str
    reconnected: bool = False


@dataclass(frozen=True, slots=True)
class CloseInfo:
    code: int
    reason: str
    url: str | None
    will_reconnect: bool


@dataclass(frozen=True, slots=True)
class RetryInfo:
    attempt: int
    delay: float
    url: str


_CONNECT_ERRORS = (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed)


class RtforgeClient:
    """One logical connection to an rtforge cluster that survives node loss."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        request_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect: bool = True,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        backoff_factor: float = 2.0,
        jitter: float = 0.5,
        idle_timeout: float = 0.0,
        rng: Callable[[], float] = random.random,
        connect_options: dict[str, Any] | None = None,
        token: str | Callable[[], str] | None = None,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else [u for u in urls if u]
        if not self.urls:
            raise ValueError("RtforgeClient needs at least one URL")
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_factor = backoff_factor
        self.jitter = jitter
        self.idle_timeout = idle_timeout
        self._rng = rng
        self._connect_options = {
            "proxy": None, "compression": None, "ping_interval": None, "close_timeout": 2,
            "max_size": 16 * 1024 * 1024, **(connect_options or {}),
        }
        #: JWT sent as ``Authorization: Bearer`` on every connect (a callable is
        #: called each time, so a refreshed token is used after a reconnect)
        self.token = token
        self.state = "idle"  # idle | connecting | open | reconnecting | closed
        self.connection_id: str | None = None
        self.url: str | None = None
        self.attempt = 0
        self.connects = 0
        self._url_index = 0
        self._ws: ClientConnection | None = None
        self._listeners: dict[str, list[Listener]] = {}
        self._channels: dict[str, list[Handler]] = {}
        self._pending: dict[str, asyncio.Future[Frame]] = {}
        self._opened = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._ids = itertools.count(1)
        self._prefix = f"py{uuid.uuid4().hex[:6]}"

    # -- events ------------------------------------------------------------
    def on(self, event: str, fn: Listener) -> Callable[[], None]:
        """Call ``fn(value)`` on ``event``; returns a function that removes it."""
        self._listeners.setdefault(event, []).append(fn)
        return lambda: self.off(event, fn)

    def off(self, event: str, fn: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.get(event, []).remove(fn)

    def _emit(self, event: str, value: Any) -> None:
        for fn in list(self._listeners.get(event, ())):
            self._call(fn, value, event)

    def _call(self, fn: Callable[[Any], Any], value: Any, what: str) -> None:
        try:
            result = fn(value)
        except Exception as exc:
            if what != "error":
                self._emit("error", exc)
            else:
                log.exception("error listener failed")
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._emit("error", task.exception())

    # -- connection --------------------------------------------------------
    async def connect(self) -> ConnectionInfo:
        """Start (if not yet) and wait until the connection is open."""
        if self.state == "closed":
            raise RtforgeError("client closed", "closed")
        self._start()
        await self.ready(None)
        assert self.url is not None
        return ConnectionInfo(self.connection_id, self.url, self.connects > 1)

    async def ready(self, timeout: float | None = None) -> None:
        """Wait until the connection is open (``timeout`` seconds; ``None``: no limit)."""
        if self.state == "open":
            return
        if self.state == "closed":
            raise RtforgeError("client closed", "closed")
        try:
            await asyncio.wait_for(self._opened.wait(), timeout)
        except TimeoutError:
            raise RtforgeError(f"not connected within {timeout:g} s", "timeout") from None
        if self.state == "closed":
            raise RtforgeError("client closed", "closed")

    async def close(self) -> None:
        """Close for good: no reconnect; pending commands raise ``closed``."""
        if self.state == "closed":
            return
        self.state = "closed"
        self._opened.set()  # wake waiters, who see "closed"
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        self._fail_pending("client closed", "closed")
        for task in list(self._tasks):
            task.cancel()
        self._emit("close", CloseInfo(1000, "", self.url, False))

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (0-based): exponential,
        capped, the last ``jitter`` fraction random."""
        base: float = min(self.backoff_max, self.backoff_initial * self.backoff_factor**attempt)
        return base * (1 - self.jitter) + base * self.jitter * self._rng()

    def _start(self) -> None:
        if self._runner is None:
            self.state = "connecting"
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="rtforge-client"
            )

    async def _run(self) -> None:
        while self.state != "closed":
            url = self.urls[self._url_index % len(self.urls)]
            self.url = url
            code, reason = await self._session(url)
            self._ws = None
            self.connection_id = None
            self._opened.clear()
            self._fail_pending(f"connection lost ({code})", "connection_lost")
            if self.state == "closed":
                return
            self._emit("close", CloseInfo(code, reason, url, self.reconnect))
            if not self.reconnect:
                self.state = "closed"
                self._opened.set()
                return
            self.state = "reconnecting"
            self._url_index = (self._url_index + 1) % len(self.urls)
            delay = 0.0 if code == SERVICE_RESTART else self.backoff(self.attempt)
            self.attempt += 1
            self._emit("reconnecting", RetryInfo(self.attempt, delay, self.urls[self._url_index]))
            await asyncio.sleep(delay)

    def _auth_headers(self) -> dict[str, Any]:
        token = self.token() if callable(self.token) else self.token
        if not token:
            return {}
        headers = dict(self._connect_options.get("additional_headers") or {})
        headers["Authorization"] = f"Bearer {token}"
        return {"additional_headers": headers}

    async def _session(self, url: str) -> tuple[int, str]:
        """One connection's life; returns its close code and reason."""
        try:
            options = {**self._connect_options, **self._auth_headers()}
            ws = await connect(url, open_timeout=self.connect_timeout, **options)
        except _CONNECT_ERRORS as exc:
            return ABNORMAL, f"connect failed: {exc!r}"
        self._ws = ws
        try:
            try:
                raw = await asyncio.wait_for(ws.recv(), self.connect_timeout)
            except (TimeoutError, ConnectionClosed) as exc:
                return ABNORMAL, f"no welcome: {exc!r}"
            welcome = self._decode(raw)
            reader = asyncio.get_running_loop().create_task(self._read(ws))
            # a lost connection fails the commands in flight at once (the
            # re-subscribes of _welcome among them)
            reader.add_done_callback(
                lambda _task: self._fail_pending("connection lost", "connection_lost")
            )
            if welcome is not None:
                await self._welcome(welcome)
                if not _is_welcome(welcome):
                    await self._dispatch(welcome)
            return await reader
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _welcome(self, frame: Frame) -> None:
        self.connection_id = (frame.get("metadata") or {}).get("connection_id")
        reconnected = self.connects > 0
        for channel in list(self._channels):
            try:
                await self._request("subscribe", {"channel": channel}, internal=True)
            except RtforgeError as exc:
                if exc.code in ("connection_lost", "closed"):
                    return
                self._channels.pop(channel, None)
                self._emit("error", RtforgeError(
                    f"re-subscribe to {channel} failed: {exc}", exc.code, exc.reply
                ))
        if self.state == "closed":
            return
        self.state = "open"
        self.attempt = 0
        self.connects += 1
        assert self.url is not None
        self._opened.set()
        self._emit("open", ConnectionInfo(self.connection_id, self.url, reconnected))

    async def _read(self, ws: ClientConnection) -> tuple[int, str]:
        while True:
            try:
                if self.idle_timeout > 0:
                    raw = await asyncio.wait_for(ws.recv(), self.idle_timeout)
                else:
                    raw = await ws.recv()
            except TimeoutError:
                return IDLE, "idle timeout"
            except ConnectionClosed as exc:
                received = exc.rcvd
                if received is None:
                    return ABNORMAL, "no close frame received"
                return received.code, received.reason
            frame = self._decode(raw)
            if frame is not None:
                await self._dispatch(frame)

    def _decode(self, raw: str | bytes) -> Frame | None:
        try:
            frame = json.loads(raw)
        except ValueError as exc:
            self._emit("error", RtforgeError(f"frame is not JSON: {exc}", "bad_frame"))
            return None
        return frame if isinstance(frame, dict) else None

    async def _dispatch(self, frame: Frame) -> None:
        self._emit("frame", frame)
        if frame.get("type") == "ping":
            await self.send({"type": "pong"})
            return
        meta = frame.get("metadata") or {}
        request_id = meta.get("id")
        if isinstance(request_id, str) and request_id in self._pending:
            future = self._pending.pop(request_id)
            if not future.done():
                if meta.get("ok") is False:
                    future.set_exception(RtforgeError(
                        str(frame.get("payload")), str(meta.get("error") or "error"), frame
                    ))
                else:
                    future.set_result(frame)
            return
        channel = frame.get("channel")
        if isinstance(channel, str) and channel in self._channels:
            for handler in list(self._channels[channel]):
                self._call(handler, frame, "handler")
            if frame.get("type") == "system" and meta.get("event") == "channel_deleted":
                self._channels.pop(channel, None)
                self._emit("channel_deleted", channel)
            return
        self._emit("message", frame)

    async def send(self, frame: Frame | str) -> bool:
        """Send a raw frame; False when not connected."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
        except ConnectionClosed:
            return False
        return True

    # -- commands ----------------------------------------------------------
    async def command(self, name: str, *, timeout: float | None = None, **fields: Any) -> Frame:
        """Run any command; returns the reply frame or raises :class:`RtforgeError`."""
        return await self._request(name, fields, timeout=timeout)

    async def _request(
        self,
        name: str,
        fields: dict[str, Any],
        *,
        timeout: float | None = None,
        internal: bool = False,
    ) -> Frame:
        limit = self.request_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        if not internal and self.state != "open":
            self._start()
            await self.ready(limit)
        request_id = f"{self._prefix}-{next(self._ids)}"
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            payload = {"command": name, "id": request_id, **fields}
            if not await self.send({"type": "system", "payload": payload}):
                raise RtforgeError(f"{name}: not connected", "connection_lost")
            try:
                return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise RtforgeError(f"{name}: no reply within {limit:g} s", "timeout") from None
        finally:
            self._pending.pop(request_id, None)

    def _fail_pending(self, message: str, code: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(RtforgeError(message, code))

    async def subscribe(
        self, channel: str, handler: Handler | None = None, *, timeout: float | None = None
    ) -> Frame:
        """Subscribe to ``channel``; ``handler(frame)`` gets every frame
        delivered through it, also after reconnects. Returns the reply."""
        fresh = channel not in self._channels
        handlers = self._channels.setdefault(channel, [])
        if handler is not None:
            handlers.append(handler)
        try:
            return await self._request("subscribe", {"channel": channel}, timeout=timeout)
        except RtforgeError as exc:
            if exc.code not in ("timeout", "connection_lost"):
                if handler is not None:
                    with contextlib.suppress(ValueError):
                        handlers.remove(handler)
                if fresh:
                    self._channels.pop(channel, None)
            raise

    async def unsubscribe(
        self, channel: str, handler: Handler | None = None, *, timeout: float | None = None
    ) -> Frame | None:
        """Remove ``handler`` (or all); when none is left, unsubscribe."""
        handlers = self._channels.get(channel)
        if handlers is not None and handler is not None:
            with contextlib.suppress(ValueError):
                handlers.remove(handler)
            if handlers:
                return None
        self._channels.pop(channel, None)
        return await self._request("unsubscribe", {"channel": channel}, timeout=timeout)

    def channels(self) -> list[str]:
        """The channels this client is subscribed to (and re-subscribes to)."""
        return list(self._channels)

    async def publish(
        self, channel: str, data: Any, *, event: str | None = None, timeout: float | None = None
    ) -> int:
        """Publish ``data`` to ``channel`` (an ``event`` frame when ``event``
        is given); returns the number of recipients cluster-wide."""
        fields: dict[str, Any] = {"channel": channel, "data": data}
        if event:
            fields["event"] = event
        reply = await self._request("publish", fields, timeout=timeout)
        return int((reply.get("metadata") or {}).get("recipients", 0))

    async def presence(self, channel: str, *, timeout: float | None = None) -> int:
        """Connections subscribed to ``channel``, cluster-wide."""
        reply = await self._request("presence", {"channel": channel}, timeout=timeout)
        return int((reply.get("payload") or {}).get("count", 0))

    async def list_channels(self, *, timeout: float | None = None) -> list[str]:
        reply = await self._request("list_channels", {}, timeout=timeout)
        return list((reply.get("payload") or {}).get("channels", []))

    async def ping(self, *, timeout: float | None = None) -> float:
        """A command round trip; returns the seconds it took."""
        started = time.perf_counter()
        await self._request("ping", {}, timeout=timeout)
        return time.perf_counter() - started

    async def wait_for_event(
        self,
        event: str,
        predicate: Callable[[Any], bool] = lambda _value: True,
        timeout: float | None = None,
    ) -> Any:
        """The next ``event`` value matching ``predicate``."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def listener(value: Any) -> None:
            if not future.done() and predicate(value):
                future.set_result(value)

        remove = self.on(event, listener)
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            remove()


def _is_welcome(frame: Frame) -> bool:
    metadata = frame.get("metadata") or {}
    return frame.get("type") == "system" and bool(metadata.get("connection_id"))

