"""Redis transport (redis-py asyncio) for the cluster backplane.

Uses Redis pub/sub with exact-match ``SUBSCRIBE`` only (never patterns), on
the channels ``<cluster>:ctl``, ``<cluster>:all``, ``<cluster>:node:<id>``
and ``<cluster>:ch:<token>`` with the channel name as URL-safe base64. Two
connections: one for publishing, one for the subscriber. A reader task reads
the subscriber connection; when it fails, the transport reports the outage,
reconnects with backoff, subscribes again to everything and reports the
broker back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .base import BackplaneUnavailable
from .transport import Transport, safe_url

__all__ = ["RedisTransport"]

log = logging.getLogger("rtforge.backends.redis")

_TIMEOUT = 2.0
_SUBSCRIBE_TIMEOUT = 3.0
#: ping the subscriber connection after this many silent seconds
_PING_IDLE = 2.0
_BACKOFF_MIN, _BACKOFF_MAX = 0.2, 2.0
_NETWORK_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class RedisTransport(Transport):
    name = "redis"
    separator = ":"
    max_payload = 512 << 20

    def __init__(self, url: str, cluster: str, node_id: str) -> None:
        super().__init__(url, cluster, node_id)
        self._pub: Redis | None = None
        self._sub: Redis | None = None
        self._pubsub: PubSub | None = None
        self._subjects: set[str] = set()
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._up = False
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._up

    async def connect(self) -> None:
        self._closing = False
        options: dict[str, Any] = {"socket_connect_timeout": _TIMEOUT}
        pub = Redis.from_url(self.url, socket_timeout=_TIMEOUT, **options)
        sub = Redis.from_url(self.url, health_check_interval=5, **options)
        try:
            await asyncio.wait_for(pub.ping(), _TIMEOUT * 2)
            pubsub = sub.pubsub()
            await asyncio.wait_for(pubsub.ping(), _TIMEOUT * 2)
        except _NETWORK_ERRORS as exc:
            await _close_quietly(pub, sub)
            raise BackplaneUnavailable(
                f"cannot reach Redis at {safe_url(self.url)}: {exc!r}"
            ) from None
        self._pub, self._sub, self._pubsub = pub, sub, pubsub
        self._up = True
        self._reader = asyncio.get_running_loop().create_task(
            self._read_loop(), name="rtforge-redis-reader"
        )

    async def close(self) -> None:
        self._closing = True
        self._up = False
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await _close_quietly(self._pub, self._sub)
        self._pub = self._sub = self._pubsub = None

    async def publish(self, subject: str, data: bytes) -> None:
        if not self._up or self._pub is None:
            raise BackplaneUnavailable("Redis is not connected")
        try:
            await self._pub.publish(subject, data)
        except _NETWORK_ERRORS as exc:
            raise BackplaneUnavailable(f"Redis publish failed: {exc!r}") from None

    async def subscribe(self, subject: str) -> None:
        if subject in self._subjects:
            pending = self._confirmations.get(subject)
            if pending is not None:
                await asyncio.shield(pending)
            return
        if not self._up or self._pubsub is None:
            raise BackplaneUnavailable("Redis is not connected")
        self._subjects.add(subject)
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[subject] = confirmed
        try:
            await self._pubsub.subscribe(subject)
            await asyncio.wait_for(asyncio.shield(confirmed), _SUBSCRIBE_TIMEOUT)
        except _NETWORK_ERRORS as exc:
            self._subjects.discard(subject)
            raise BackplaneUnavailable(f"Redis subscribe failed: {exc!r}") from None
        finally:
            self._confirmations.pop(subject, None)

    async def unsubscribe(self, subject: str) -> None:
        if subject not in self._subjects:
            return
        self._subjects.discard(subject)
        if self._up and self._pubsub is not None:
            with contextlib.suppress(*_NETWORK_ERRORS):
                await self._pubsub.unsubscribe(subject)

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        heard = loop.time()  # anything read on the subscriber connection
        ping_sent: float | None = None
        while not self._closing:
            pubsub = self._pubsub
            try:
                if pubsub is None:
                    raise ConnectionError("no subscriber connection")
                message = await pubsub.get_message(timeout=1.0)
                # A hung broker (or a partition without a reset) keeps the
                # socket open and silent: ping when idle, give up without a pong.
                now = loop.time()
                if message is not None:
                    heard, ping_sent = now, None
                elif ping_sent is not None and now - ping_sent > _TIMEOUT:
                    raise ConnectionError(f"Redis did not answer a ping in {_TIMEOUT:g}s")
                elif ping_sent is None and now - heard > _PING_IDLE:
                    ping_sent = now
                    await pubsub.ping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # redis-py raises several unrelated types
                if self._closing:
                    return
                await self._recover(exc)
                heard, ping_sent = loop.time(), None
                continue
            if message is not None:
                try:
                    self._dispatch(message)
                except Exception:
                    # Never let one message end the reader: the node would go deaf.
                    log.exception("handling a Redis message failed")

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        subject = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "message":
            data = message.get("data")
            if isinstance(data, bytes):
                self.on_message(subject, data)
        elif kind == "subscribe":
            confirmed = self._confirmations.get(subject)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)

    async def _recover(self, exc: BaseException) -> None:
        if self._up:
            self._up = False
            log.warning("lost Redis connection to %s: %r", safe_url(self.url), exc)
            for confirmed in self._confirmations.values():
                if not confirmed.done():
                    confirmed.set_exception(ConnectionError("Redis connection lost"))
            self.on_down()
        delay = _BACKOFF_MIN
        while not self._closing:
            await asyncio.sleep(delay)
            try:
                await self._resubscribe()
            except _NETWORK_ERRORS as retry_exc:
                log.debug("Redis reconnect failed: %r", retry_exc)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            self._up = True
            log.warning("reconnected to Redis at %s", safe_url(self.url))
            self.on_up()
            return

    async def _resubscribe(self) -> None:
        assert self._pub is not None and self._sub is not None
        await asyncio.wait_for(self._pub.ping(), _TIMEOUT)
        old, self._pubsub = self._pubsub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()  # type: ignore[no-untyped-call]
        pubsub = self._sub.pubsub()
        if self._subjects:
            await asyncio.wait_for(pubsub.subscribe(*self._subjects), _TIMEOUT)
        else:
            await asyncio.wait_for(pubsub.ping(), _TIMEOUT)
        self._pubsub = pubsub


async def _close_quietly(*clients: Redis | None) -> None:
    for client in clients:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
