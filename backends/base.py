"""The contract every backplane implements.

A backplane is the part of rtforge that is shared between nodes. It knows
nothing about sockets, Litestar or the wire protocol: it keeps *membership*
(which connection lives on which node, which connection is subscribed to
which channel, which channels have been created) and *routes envelopes* to
the nodes that must deliver them. Each node hands the backplane a
:class:`BackplaneListener`; the backplane calls it for every envelope that
the node must deliver locally.

Guarantees every implementation gives (tests in ``tests/`` hold all three
backends to them):

* **At most once per connection.** An envelope published once is handed to
  each node's listener at most once, and a node never receives an envelope
  that none of its connections may need (a channel publish goes only to nodes
  holding subscribers of that channel; a targeted send only to the node that
  holds the connection; a broadcast to every live node once).
* **Per-publisher ordering.** Two envelopes published by the same node, one
  after the other, reach every listener in that order. Envelopes from
  different nodes have no mutual order.
* **No durability.** Envelopes are not stored. A node that is disconnected
  from the broker misses what is published meanwhile; membership is restored
  when it reconnects.
* **Counts are cluster-wide.** Every count and listing below covers all live
  nodes. On a shared broker these are eventually consistent: a change made on
  one node is visible on the others after one broker round trip.
* **Node-owned state expires.** Every connection and membership is owned by
  the node that holds the connection. When that node stops cleanly its state
  is removed at once; when it dies, its state leaves every count within
  ``lease_ttl`` seconds.

Listener callbacks are plain (non-async) functions: they run on the event
loop, must not block and must not await sockets. Delivery into socket queues
is the listener's business.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

__all__ = [
    "Backplane",
    "BackplaneError",
    "BackplaneListener",
    "BackplaneUnavailable",
    "ChannelInfo",
    "ChannelRecord",
    "Envelope",
    "Route",
    "count_recipients",
    "subject_of",
]


class BackplaneError(Exception):
    """Base class of errors raised by backplanes."""

    code = "backplane_error"


class BackplaneUnavailable(BackplaneError):
    """The broker cannot be reached; the operation was not carried out."""

    code = "backplane_unavailable"


class Route(IntEnum):
    """Where an envelope goes."""

    CHANNEL = 1
    """Every subscriber of ``Envelope.channel``."""
    BROADCAST = 2
    """Every connection in the cluster."""
    DIRECT = 3
    """The one connection ``Envelope.connection_id``."""


@dataclass(slots=True)
class Envelope:
    """The one thing that crosses nodes.

    ``frame`` is the server frame already encoded (UTF-8 JSON). Nodes never
    decode and re-encode it: every recipient gets the same bytes.
    ``only_to`` and ``exclude`` narrow the recipients (``None`` means no
    narrowing; an empty ``only_to`` means nobody). ``trace`` carries W3C
    trace context headers (``traceparent``, ``tracestate``) when tracing is on.
    """

    route: Route
    frame: bytes
    channel: str | None = None
    connection_id: str | None = None
    only_to: frozenset[str] | None = None
    exclude: frozenset[str] | None = None
    origin: str = ""
    trace: dict[str, str] | None = None


@dataclass(slots=True)
class ChannelRecord:
    """A channel that was created explicitly (``create_channel``).

    Channels also exist implicitly while they have subscribers; such
    channels have no record and are listed with empty description.
    """

    name: str
    description: str | None = None
    is_private: bool = False
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "is_private": self.is_private,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelRecord:
        return cls(
            name=str(data["name"]),
            description=data.get("description"),
            is_private=bool(data.get("is_private", False)),
            created_at=float(data.get("created_at", time.time())),
        )


@dataclass(slots=True)
class ChannelInfo:
    """A channel as listed: its record (explicit or implied) and its
    cluster-wide subscriber count."""

    record: ChannelRecord
    subscribers: int
    explicit: bool


class BackplaneListener(Protocol):
    """What a node gives its backplane. All methods run on the event loop."""

    def deliver(self, envelope: Envelope) -> None:
        """Deliver ``envelope`` to this node's matching connections."""

    def channel_deleted(self, channel: str) -> None:
        """``channel`` was deleted somewhere: drop local memberships of it."""

    def readiness_changed(self, ready: bool) -> None:
        """The broker connection went down (``False``) or came back."""


def count_recipients(
    candidates: AbstractSet[str],
    only_to: frozenset[str] | None,
    exclude: frozenset[str] | None,
) -> int:
    """How many of ``candidates`` pass the ``only_to`` / ``exclude`` filters."""
    selected = candidates & only_to if only_to is not None else candidates
    if exclude:
        return len(selected - exclude)
    return len(selected)


def subject_of(info: Mapping[str, Any]) -> str | None:
    """The authenticated subject in a connection's info (``custom.sub``,
    set by the node for connections that presented a token), if any."""
    custom = info.get("custom")
    subject = custom.get("sub") if isinstance(custom, Mapping) else None
    return subject if isinstance(subject, str) else None


class Backplane(abc.ABC):
    """Membership and routing shared by all nodes of a cluster.

    Lifecycle: construct, ``await start(listener)``, use, ``await stop()``.
    ``stop`` removes this node's state from the cluster at once. Methods that
    change shared state raise :class:`BackplaneUnavailable` while the broker
    is unreachable; read methods then answer from the last known view.
    """

    #: short name used in settings and metrics (``memory``, ``nats``, ``redis``)
    name: str = "abstract"

    def __init__(self, node_id: str, lease_ttl: float = 15.0) -> None:
        self.node_id = node_id
        self.lease_ttl = lease_ttl

    # -- lifecycle -------------------------------------------------------
    @abc.abstractmethod
    async def start(self, listener: BackplaneListener) -> None:
        """Connect to the broker and begin routing to ``listener``.

        Raises :class:`BackplaneUnavailable` when the broker cannot be
        reached at start."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Remove this node's connections and memberships, then disconnect."""

    @property
    @abc.abstractmethod
    def ready(self) -> bool:
        """True while the broker is reachable and routing works."""

    # -- connections -------------------------------------------------------
    @abc.abstractmethod
    async def add_connection(self, connection_id: str, info: Mapping[str, Any]) -> None:
        """Record that this node holds ``connection_id``; ``info`` is a small
        JSON-able mapping returned by :meth:`connection_info`."""

    @abc.abstractmethod
    async def remove_connection(self, connection_id: str) -> list[str]:
        """Forget ``connection_id`` and all its memberships; returns the
        channels it was subscribed to."""

    @abc.abstractmethod
    async def connection_count(self) -> int:
        """Connections held by all live nodes."""

    @abc.abstractmethod
    async def connection_ids(self) -> list[str]:
        """Ids of the connections held by all live nodes."""

    @abc.abstractmethod
    async def connection_info(self, connection_id: str) -> dict[str, Any] | None:
        """The ``info`` given to :meth:`add_connection`, plus ``node_id``;
        ``None`` when no live node holds ``connection_id``."""

    async def subject_connection_count(self, subject: str) -> int:
        """Connections held by all live nodes whose info carries ``subject``
        (see :func:`subject_of`). This default scans every connection;
        the built-in backplanes keep a count per subject."""
        count = 0
        for connection_id in await self.connection_ids():
            info = await self.connection_info(connection_id)
            if info is not None and subject_of(info) == subject:
                count += 1
        return count

    # -- membership --------------------------------------------------------
    @abc.abstractmethod
    async def subscribe(self, channel: str, connection_id: str) -> bool:
        """Add ``connection_id`` to ``channel``; True when it was not a member."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str, connection_id: str) -> bool:
        """Remove ``connection_id`` from ``channel``; True when it was a member."""

    @abc.abstractmethod
    async def subscribers(self, channel: str) -> set[str]:
        """Connection ids subscribed to ``channel`` on all live nodes."""

    @abc.abstractmethod
    async def subscriber_count(self, channel: str) -> int:
        """``len(await subscribers(channel))``, possibly cheaper."""

    @abc.abstractmethod
    async def channels_of(self, connection_id: str) -> list[str]:
        """Channels ``connection_id`` is subscribed to, sorted."""

    # -- channel records ---------------------------------------------------
    @abc.abstractmethod
    async def create_channel(self, record: ChannelRecord) -> bool:
        """Create or update ``record``; True when the channel had no record."""

    @abc.abstractmethod
    async def delete_channel(self, channel: str) -> bool:
        """Delete the record and every membership of ``channel`` on every
        node (each node's listener gets ``channel_deleted``). True when the
        channel existed (had a record or subscribers)."""

    @abc.abstractmethod
    async def get_channel(self, channel: str) -> ChannelInfo | None:
        """The channel, or ``None`` when it has neither record nor subscribers."""

    @abc.abstractmethod
    async def list_channels(self) -> list[ChannelInfo]:
        """Every channel with a record or at least one subscriber, by name."""

    # -- routing -----------------------------------------------------------
    @abc.abstractmethod
    async def publish(self, envelope: Envelope) -> int:
        """Route ``envelope`` to every node that must deliver it; returns
        the cluster-wide number of intended recipients (after ``only_to`` /
        ``exclude``). A ``DIRECT`` envelope to an id no live node holds
        returns 0 and is not sent."""

    # -- introspection -----------------------------------------------------
    async def node_ids(self) -> list[str]:
        """Live nodes of the cluster (this one included)."""
        return [self.node_id]
