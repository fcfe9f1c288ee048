"""NATS transport (nats-py) for the cluster backplane.

Subjects: ``<cluster>.ctl`` (membership gossip), ``<cluster>.all``
(broadcasts), ``<cluster>.node.<node_id>`` (targeted sends) and
``<cluster>.ch.<token>`` per channel, where the token is the channel name in
URL-safe base64: no name can contain ``.``, ``*`` or ``>`` as syntax.

The client runs with ``no_echo`` (a node never receives its own publishes:
it delivers to its local sockets directly), pings the server every few
seconds to notice a silent broker, and reconnects forever; nats-py restores
every subscription on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .base import BackplaneUnavailable
from .transport import Transport, safe_url

__all__ = ["NatsTransport"]

log = logging.getLogger("rtforge.backends.nats")

_CONNECT_TIMEOUT = 3.0
_FLUSH_TIMEOUT = 2.0


class NatsTransport(Transport):
    name = "nats"
    separator = "."

    def __init__(self, url: str, cluster: str, node_id: str) -> None:
        super().__init__(url, cluster, node_id)
        self._nc: Client | None = None
        self._subs: dict[str, Subscription] = {}
        #: subjects whose subscription is being confirmed by a flush
        self._flushing: dict[str, asyncio.Future[None]] = {}
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        self._closing = False
        await self._probe()
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    servers=[self.url],
                    name=f"rtforge-{self.node_id}",
                    no_echo=True,
                    allow_reconnect=False,  # fail fast at start; see below
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,  # type: ignore[arg-type]  # accepts float
                    connect_timeout=2,
                    # A hung broker (or a silent partition) is noticed after
                    # about ping_interval * (max_outstanding_pings + 1) seconds.
                    ping_interval=2,
                    max_outstanding_pings=2,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                    closed_cb=self._closed,
                ),
                _CONNECT_TIMEOUT,
            )
        except Exception as exc:  # nats-py raises many types here
            with contextlib.suppress(Exception):
                await nc.close()
            raise BackplaneUnavailable(
                f"cannot reach NATS at {safe_url(self.url)}: {exc!r}"
            ) from None
        # Once connected, never give up: reconnect until close().
        nc.options["allow_reconnect"] = True
        self._nc = nc
        self.max_payload = nc.max_payload or self.max_payload

    async def _probe(self) -> None:
        """Fail fast when nothing listens: nats-py's connect retries on its own."""
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        try:
            opening = asyncio.open_connection(host, port)
            _, writer = await asyncio.wait_for(opening, _CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            raise BackplaneUnavailable(
                f"cannot reach NATS at {safe_url(self.url)}: {exc!r}"
            ) from None
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def close(self) -> None:
        self._closing = True
        nc, self._nc = self._nc, None
        self._subs.clear()
        if nc is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.flush(), _FLUSH_TIMEOUT)
        with contextlib.suppress(Exception):
            await nc.close()

    def _client(self) -> Client:
        nc = self._nc
        if nc is None or not nc.is_connected:
            raise BackplaneUnavailable("NATS is not connected")
        return nc

    async def publish(self, subject: str, data: bytes) -> None:
        try:
            await self._client().publish(subject, data)
        except BackplaneUnavailable:
            raise
        except Exception as exc:
            raise BackplaneUnavailable(f"NATS publish failed: {exc!r}") from None

    async def subscribe(self, subject: str) -> None:
        # A concurrent caller's flush is this caller's barrier too: returning
        # before it completes would let a publish overtake the interest.
        while (pending := self._flushing.get(subject)) is not None:
            await asyncio.shield(pending)
        if subject in self._subs:
            return
        nc = self._client()
        flushed = asyncio.get_running_loop().create_future()
        self._flushing[subject] = flushed
        try:
            self._subs[subject] = await nc.subscribe(subject, cb=self._receive)
            # After the flush the server has registered the interest.
            await nc.flush(_FLUSH_TIMEOUT)  # type: ignore[arg-type]
        except Exception as exc:
            raise BackplaneUnavailable(f"NATS subscribe failed: {exc!r}") from None
        finally:
            del self._flushing[subject]
            flushed.set_result(None)

    async def unsubscribe(self, subject: str) -> None:
        sub = self._subs.pop(subject, None)
        if sub is None:
            return
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def _receive(self, msg: Msg) -> None:
        self.on_message(msg.subject, msg.data)

    async def _disconnected(self) -> None:
        if not self._closing and self._nc is not None:
            log.warning("lost NATS connection to %s", safe_url(self.url))
            self.on_down()

    async def _reconnected(self) -> None:
        log.warning("reconnected to NATS at %s", safe_url(self.url))
        self.on_up()

    async def _error(self, exc: Exception) -> None:
        if self._closing or self._nc is None:
            return
        # While disconnected every failed reconnect attempt lands here.
        log.log(logging.WARNING if self.connected else logging.DEBUG, "NATS error: %r", exc)

    async def _closed(self) -> None:
        if not self._closing and self._nc is not None:
            log.warning("NATS connection closed")
