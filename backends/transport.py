"""The broker transport under :class:`~backends.cluster.ClusterBackplane`.

A transport moves opaque byte messages on named subjects and nothing more:
NATS subjects or Redis pub/sub channels. All cluster logic (membership,
leases, routing decisions) lives in :mod:`backends.cluster`, once, for every
broker. A transport:

* names subjects: :meth:`Transport.subject` for the cluster's fixed subjects
  and :meth:`Transport.channel_subject` for channels. The channel mapping is
  injective and never lets a name act as syntax (wildcards, separators);
* delivers each message received on a subscribed subject to ``on_message``,
  in the order the broker delivers them for that subject;
* reconnects by itself after a broker outage, re-establishes every
  subscription, and then calls ``on_up``; it calls ``on_down`` when the
  broker is lost. ``publish`` raises :class:`~backends.base.BackplaneUnavailable`
  while it is down;
* returns from :meth:`subscribe` only once the broker has registered the
  interest, so that a message published afterwards by anyone is received.
"""

from __future__ import annotations

import abc
import base64
from collections.abc import Callable

__all__ = ["Transport", "decode_channel_token", "encode_channel_token", "safe_url"]

MessageCallback = Callable[[str, bytes], None]
StateCallback = Callable[[], None]


def encode_channel_token(channel: str) -> str:
    """The channel name as one token of ``[A-Za-z0-9_-]``: URL-safe base64
    of its UTF-8 bytes without padding. Injective, so no two names share a
    subject, and free of every broker's special characters."""
    return base64.urlsafe_b64encode(channel.encode("utf-8")).rstrip(b"=").decode("ascii")


def decode_channel_token(token: str) -> str:
    """Inverse of :func:`encode_channel_token`."""
    padded = token + "=" * (-len(token) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")


def safe_url(url: str) -> str:
    """``url`` with any credentials replaced by ``***``, for log lines."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"


class Transport(abc.ABC):
    """Publish/subscribe of bytes on subjects, with reconnects."""

    #: backend name used in settings and metrics
    name = "abstract"
    #: separator between subject parts on this broker
    separator = "."

    def __init__(self, url: str, cluster: str, node_id: str) -> None:
        self.url = url
        self.cluster = cluster
        self.node_id = node_id
        self.on_message: MessageCallback = lambda subject, data: None
        self.on_down: StateCallback = lambda: None
        self.on_up: StateCallback = lambda: None

    def subject(self, *parts: str) -> str:
        """A fixed subject of this cluster (parts are plain tokens)."""
        return self.separator.join((self.cluster, *parts))

    def channel_subject(self, channel: str) -> str:
        return self.subject("ch", encode_channel_token(channel))

    #: largest message the broker accepts, in bytes
    max_payload = 1 << 20

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True while the broker connection is up."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect once; raises :class:`~backends.base.BackplaneUnavailable`
        when the broker cannot be reached. After a successful connect the
        transport keeps reconnecting on its own until :meth:`close`."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush what was published, then disconnect for good."""

    @abc.abstractmethod
    async def publish(self, subject: str, data: bytes) -> None:
        """Send ``data`` on ``subject`` (fire and forget)."""

    @abc.abstractmethod
    async def subscribe(self, subject: str) -> None:
        """Receive ``subject`` from now on; idempotent."""

    @abc.abstractmethod
    async def unsubscribe(self, subject: str) -> None:
        """Stop receiving ``subject``; idempotent."""
