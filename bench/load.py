"""The load side: many client connections, publishers, and bookkeeping.

Everything here runs in the bench process, which is pinned to the load
cores and runs uvloop when it is installed. A :class:`Hub` is the sink of
every client of one run: it counts subscribed clients and lost
connections; a :class:`TrackingHub` also counts every delivery per message
id and per client (exactly-once check) and records publish-to-receive
latencies from the send timestamp embedded in each payload.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from .httpclient import HttpError, HttpPool
from .wsclient import WsClient, handshake_request

__all__ = [
    "ConnectResult",
    "Hub",
    "PublishStats",
    "TrackingHub",
    "close_all",
    "open_clients",
    "publish_paced",
    "publish_windowed",
]

_MESSAGE = re.compile(rb'"i":(\d+),"t":(\d+)')


class Hub:
    """Counts subscribed and lost clients."""

    def __init__(self, marker: bytes, expected: int) -> None:
        self.marker = marker
        self.expected = expected
        self.ready = 0
        self.lost = 0
        self.close_codes: Counter[int] = Counter()
        self.all_ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_text(self, client: WsClient, payload: bytes, now_ns: int) -> None:
        if client.ready:
            self.on_message(client, payload, now_ns)
        elif self.marker in payload:
            client.ready = True
            self.on_ready(client)
            self.ready += 1
            if self.ready >= self.expected and not self.all_ready.done():
                self.all_ready.set_result(None)

    def on_ready(self, client: WsClient) -> None:
        """A client is subscribed."""

    def on_message(self, client: WsClient, payload: bytes, now_ns: int) -> None:
        """A frame after the subscription was confirmed."""

    def on_lost(self, client: WsClient) -> None:
        if not client.aborted:
            self.lost += 1
            self.close_codes[client.close_code or 1006] += 1


class TrackingHub(Hub):
    """Counts deliveries per message id and per client; records latencies
    (in ns) of messages with id >= ``record_from``."""

    def __init__(
        self, marker: bytes, expected: int, messages: int, record_from: int | None
    ) -> None:
        super().__init__(marker, expected)
        self.messages = messages
        self.counts = [0] * messages
        self.duplicates = 0
        self.unknown = 0
        self.received = 0
        self.record_from = record_from
        self.latencies_ns: array[int] = array("q")
        self._complete: dict[int, asyncio.Future[None]] = {}
        self._all: asyncio.Future[None] | None = None
        self._cache: dict[bytes, tuple[int, int]] = {}

    def on_ready(self, client: WsClient) -> None:
        client.seen = bytearray(self.messages)

    def on_message(self, client: WsClient, payload: bytes, now_ns: int) -> None:
        # Every subscriber of one message gets the same bytes: parse once.
        info = self._cache.get(payload)
        if info is None:
            match = _MESSAGE.search(payload)
            if match is None or int(match[1]) >= self.messages:
                self.unknown += 1
                return
            info = (int(match[1]), int(match[2]))
            self._cache[payload] = info
        index, sent_ns = info
        seen = client.seen
        assert seen is not None
        if seen[index]:
            self.duplicates += 1
            return
        seen[index] = 1
        self.received += 1
        count = self.counts[index] + 1
        self.counts[index] = count
        if self.record_from is not None and index >= self.record_from:
            self.latencies_ns.append(now_ns - sent_ns)
        if count >= self.expected:
            waiter = self._complete.pop(index, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            done = self._all
            total = self.expected * self.messages
            if done is not None and not done.done() and self.received >= total:
                done.set_result(None)

    def all_delivered(self) -> asyncio.Future[None]:
        """Resolves once every message reached every subscriber."""
        self._all = asyncio.get_running_loop().create_future()
        if self.received >= self.expected * self.messages:
            self._all.set_result(None)
        return self._all

    def completion(self, index: int) -> asyncio.Future[None]:
        """Resolves once message ``index`` reached every subscriber."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.counts[index] >= self.expected:
            future.set_result(None)
        else:
            self._complete[index] = future
        return future

    def missing(self, upto: int | None = None) -> int:
        """Deliveries still missing for messages ``0 .. upto-1``."""
        end = self.messages if upto is None else upto
        return sum(max(self.expected - c, 0) for c in self.counts[:end])

    def incomplete_messages(self, upto: int | None = None) -> int:
        end = self.messages if upto is None else upto
        return sum(1 for c in self.counts[:end] if c < self.expected)


@dataclass
class ConnectResult:
    clients: list[WsClient]
    failures: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    last_open: float = 0.0
    all_ready: float | None = None

    @property
    def opened(self) -> int:
        return len(self.clients)

    @property
    def open_seconds(self) -> float:
        return max(self.last_open - self.started, 1e-9)


async def open_clients(
    host: str,
    port: int,
    path: str,
    hub: Hub,
    count: int,
    *,
    concurrency: int,
    timeout: float = 30.0,
    ready_timeout: float = 60.0,
    deadline: float = 120.0,
    on_progress: Callable[[int], None] | None = None,
) -> ConnectResult:
    """Open ``count`` clients, at most ``concurrency`` handshakes at a time,
    and wait until all that opened are subscribed (or ``ready_timeout``).
    No new connection is started ``deadline`` seconds after the first: the
    ones not started count as failures."""
    loop = asyncio.get_running_loop()
    result = ConnectResult([], started=time.perf_counter())
    next_index = iter(range(count))

    give_up = result.started + deadline

    async def worker() -> None:
        for idx in next_index:
            if time.perf_counter() > give_up:
                result.failures[f"not started: connect phase over {deadline:g} s"] += 1
                continue
            request, accept = handshake_request(host, port, path)
            opened: asyncio.Future[None] = loop.create_future()
            client = WsClient(idx, hub, request, accept, opened)
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: client, host, port),  # noqa: B023
                    timeout,
                )
                await asyncio.wait_for(opened, timeout)
            except Exception as exc:  # refused, reset, timed out, no upgrade
                client.abort()
                result.failures[f"{type(exc).__name__}: {exc}"[:120]] += 1
                continue
            result.clients.append(client)
            result.last_open = time.perf_counter()

    async def report() -> None:
        while True:
            await asyncio.sleep(0.2)
            if on_progress is not None:
                on_progress(hub.ready)

    reporter = loop.create_task(report())
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
        hub.expected = result.opened
        if hub.ready >= hub.expected and not hub.all_ready.done():
            hub.all_ready.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(hub.all_ready), ready_timeout)
            result.all_ready = time.perf_counter()
        except TimeoutError:
            pass
    finally:
        reporter.cancel()
    if on_progress is not None:
        on_progress(hub.ready)
    return result


async def close_all(clients: list[WsClient]) -> None:
    """Abort every client connection and let the loop process it."""
    for client in clients:
        client.abort()
    await asyncio.sleep(0.2)


@dataclass
class PublishStats:
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    recipient_mismatches: int = 0
    max_lag_ms: float = 0.0  # how far paced sends fell behind schedule
    max_pool_wait_ms: float = 0.0  # longest wait for a free HTTP connection
    drained: bool = True  # everything arrived before the drain timeout


def publish_body(index: int, pad: str) -> bytes:
    """The API message for id ``index`` with the send time embedded (ns,
    ``perf_counter_ns`` of this process)."""
    return (
        b'{"type":"json","payload":{"i":%d,"t":%d,"p":"%s"}}'
        % (index, time.perf_counter_ns(), pad.encode())
    )


async def _publish_one(
    pool: HttpPool, path: str, index: int, *, pad: str, expected: int, stats: PublishStats
) -> None:
    waited = time.perf_counter()
    conn = await pool.acquire()
    stats.max_pool_wait_ms = max(stats.max_pool_wait_ms, (time.perf_counter() - waited) * 1000)
    try:
        response = await conn.request("POST", path, publish_body(index, pad))
    except HttpError as exc:
        stats.errors[str(exc)[:120]] += 1
        return
    finally:
        pool.release(conn)
    if response.status != 200:
        stats.errors[f"HTTP {response.status}: {response.body[:100]!r}"] += 1
        return
    try:
        recipients = int(json.loads(response.body)["recipients"])
    except (ValueError, KeyError, TypeError):
        stats.errors[f"bad answer {response.body[:100]!r}"] += 1
        return
    if recipients != expected:
        stats.recipient_mismatches += 1


async def publish_windowed(
    pool: HttpPool,
    path: str,
    hub: TrackingHub,
    ids: range,
    *,
    window: int,
    pad: str,
    message_timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> PublishStats:
    """Publish ``ids`` with at most ``window`` messages not yet received by
    every subscriber; returns once all arrived or one timed out."""
    stats = PublishStats()
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    try:
        for index in ids:
            if index - ids.start >= window:
                await asyncio.wait_for(hub.completion(index - window), message_timeout)
            tasks.append(loop.create_task(
                _publish_one(pool, path, index, pad=pad, expected=hub.expected, stats=stats)
            ))
            stats.sent += 1
            if on_progress is not None and index % 10 == 0:
                on_progress(index - ids.start)
        for index in range(max(ids.start, ids.stop - window), ids.stop):
            await asyncio.wait_for(hub.completion(index), message_timeout)
    except TimeoutError:
        stats.errors["timed out waiting for a message to reach every subscriber"] += 1
    finally:
        if tasks:
            await asyncio.wait(tasks, timeout=message_timeout)
    return stats


async def publish_paced(
    pool: HttpPool,
    path: str,
    hub: TrackingHub,
    count: int,
    *,
    rate: float,
    pad: str,
    drain_timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> PublishStats:
    """Publish ids ``0 .. count-1`` at ``rate`` per second on a fixed
    schedule (a slow answer does not delay later sends while the pool has
    a free connection), then wait up to ``drain_timeout`` for delivery."""
    stats = PublishStats()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    interval = 1.0 / rate
    start = time.perf_counter()
    for index in range(count):
        due = start + index * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            stats.max_lag_ms = max(stats.max_lag_ms, -delay * 1000)
        tasks.append(loop.create_task(
            _publish_one(pool, path, index, pad=pad, expected=hub.expected, stats=stats)
        ))
        stats.sent += 1
        if on_progress is not None and index % 20 == 0:
            on_progress(index)
    deadline = time.perf_counter() + drain_timeout
    try:
        await asyncio.wait_for(hub.all_delivered(), drain_timeout)
    except TimeoutError:
        stats.drained = False
    await asyncio.wait(tasks, timeout=max(deadline - time.perf_counter(), 0.1))
    return stats
