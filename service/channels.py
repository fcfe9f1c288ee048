"""Channels: :class:`Channel` records, name rules and :class:`ChannelManager`.

Channels exist explicitly (created with :meth:`ChannelManager.create_channel`,
with a description and privacy flag) or implicitly while they have
subscribers. Membership lives in the backplane, so every count and listing is
cluster-wide; the manager also keeps the local index that fan-out reads.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from backends import Backplane, ChannelInfo, ChannelRecord, MemoryBackplane

from .connection import ConnectionId
from .errors import ChannelNameInvalid

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["MAX_CHANNEL_NAME_LENGTH", "Channel", "ChannelManager", "validate_channel_name"]

MAX_CHANNEL_NAME_LENGTH = 255


def validate_channel_name(name: object) -> str:
    """``name`` if it is a valid channel name, else :class:`ChannelNameInvalid`.

    A name is 1 to 255 characters with no control, surrogate or unassigned
    code points. Everything else (``.``, ``*``, ``>``, ``:``, ``/``, spaces,
    any script) is allowed: names are data, never syntax.
    """
    if not isinstance(name, str):
        raise ChannelNameInvalid("channel must be a string")
    if not name:
        raise ChannelNameInvalid("channel name must not be empty")
    if len(name) > MAX_CHANNEL_NAME_LENGTH:
        raise ChannelNameInvalid(
            f"channel name is longer than {MAX_CHANNEL_NAME_LENGTH} characters"
        )
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cs", "Cn", "Zl", "Zp"):
            raise ChannelNameInvalid(
                f"channel name contains a forbidden character U+{ord(char):04X}"
            )
    return name


@dataclass(slots=True)
class Channel:
    """A channel as users see it."""

    name: str
    description: str | None = None
    is_private: bool = False
    created_at: float = field(default_factory=time.time)
    subscriber_count: int = 0

    def with_description(self, description: str) -> Self:
        self.description = description
        return self

    def make_private(self) -> Self:
        self.is_private = True
        return self

    def to_record(self) -> ChannelRecord:
        return ChannelRecord(self.name, self.description, self.is_private, self.created_at)

    @classmethod
    def from_info(cls, info: ChannelInfo) -> Channel:
        record = info.record
        return cls(
            record.name, record.description, record.is_private, record.created_at,
            info.subscribers,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "is_private": self.is_private,
            "created_at": self.created_at,
            "subscribers": self.subscriber_count,
        }


class LocalIndex:
    """This node's sockets and which local sockets are in which channel.

    Fan-out reads it; the channel manager keeps it in step with the
    backplane's membership for local connections."""

    __slots__ = ("channels", "connections")

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.channels: dict[str, set[Connection]] = {}

    def join(self, channel: str, connection_id: str) -> None:
        conn = self.connections.get(connection_id)
        if conn is not None:
            self.channels.setdefault(channel, set()).add(conn)
            conn.channels.add(channel)

    def leave(self, channel: str, connection_id: str) -> None:
        conn = self.connections.get(connection_id)
        if conn is None:
            return
        conn.channels.discard(channel)
        members = self.channels.get(channel)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.channels[channel]

    def drop_channel(self, channel: str) -> set[Connection]:
        members = self.channels.pop(channel, set())
        for conn in members:
            conn.channels.discard(channel)
        return members


class ChannelManager:
    """Create, join, leave, count, list and delete channels.

    ``ChannelManager()`` on its own works on a private in-memory backplane,
    as in the seed's examples; a :class:`~service.manager.WebSocketManager`
    hands out one bound to its node via ``channel_manager()``."""

    def __init__(self, backplane: Backplane | None = None, local: LocalIndex | None = None):
        self.backplane = backplane if backplane is not None else MemoryBackplane()
        self.local = local if local is not None else LocalIndex()

    async def create_channel(self, channel: Channel) -> bool:
        """Create (or update) ``channel``; True when it had no record."""
        validate_channel_name(channel.name)
        return await self.backplane.create_channel(channel.to_record())

    async def subscribe(self, channel: str, connection_id: str) -> bool:
        """Subscribe; True when the connection was not yet a member."""
        validate_channel_name(channel)
        added = await self.backplane.subscribe(channel, connection_id)
        self.local.join(channel, connection_id)
        return added

    async def unsubscribe(self, channel: str, connection_id: str) -> bool:
        """Unsubscribe; True when the connection was a member."""
        self.local.leave(channel, connection_id)
        return await self.backplane.unsubscribe(channel, connection_id)

    async def unsubscribe_all(self, connection_id: str) -> list[str]:
        """Leave every channel; returns the channels left."""
        channels = await self.backplane.channels_of(connection_id)
        for channel in channels:
            self.local.leave(channel, connection_id)
            await self.backplane.unsubscribe(channel, connection_id)
        return channels

    async def get_subscribers(self, channel: str) -> set[ConnectionId]:
        return {ConnectionId(c) for c in await self.backplane.subscribers(channel)}

    async def get_subscribed_channels(self, connection_id: str) -> list[str]:
        return await self.backplane.channels_of(connection_id)

    async def subscriber_count(self, channel: str) -> int:
        return await self.backplane.subscriber_count(channel)

    async def list_channels(self) -> list[Channel]:
        return [Channel.from_info(info) for info in await self.backplane.list_channels()]

    async def get_channel_metadata(self, channel: str) -> Channel | None:
        info = await self.backplane.get_channel(channel)
        return Channel.from_info(info) if info is not None else None

    async def delete_channel(self, channel: str) -> bool:
        """Delete ``channel`` and unsubscribe everyone, cluster-wide."""
        return await self.backplane.delete_channel(channel)

    async def channel_exists(self, channel: str) -> bool:
        return await self.backplane.get_channel(channel) is not None
