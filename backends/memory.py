"""The in-memory backplane: the whole cluster is this one process.

It is the default for a single node and a full implementation of
:class:`~backends.base.Backplane`, not a test double: membership, channel
records and routing behave exactly as on a shared broker, with counts that
are exact at every moment. Delivery is synchronous: ``publish`` has called
the listener before it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    Backplane,
    BackplaneListener,
    ChannelInfo,
    ChannelRecord,
    Envelope,
    Route,
    count_recipients,
    subject_of,
)

__all__ = ["MemoryBackplane"]


class MemoryBackplane(Backplane):
    name = "memory"

    def __init__(self, node_id: str = "local", lease_ttl: float = 15.0) -> None:
        super().__init__(node_id, lease_ttl)
        self._listener: BackplaneListener | None = None
        self._connections: dict[str, dict[str, Any]] = {}
        self._members: dict[str, set[str]] = {}
        self._channels_of: dict[str, set[str]] = {}
        self._records: dict[str, ChannelRecord] = {}
        self._subjects: dict[str, int] = {}

    async def start(self, listener: BackplaneListener) -> None:
        self._listener = listener

    async def stop(self) -> None:
        self._connections.clear()
        self._subjects.clear()
        self._members.clear()
        self._channels_of.clear()
        self._listener = None

    @property
    def ready(self) -> bool:
        return True

    # -- connections -------------------------------------------------------
    async def add_connection(self, connection_id: str, info: Mapping[str, Any]) -> None:
        self._forget_subject(self._connections.get(connection_id))
        self._connections[connection_id] = {**info, "node_id": self.node_id}
        subject = subject_of(info)
        if subject is not None:
            self._subjects[subject] = self._subjects.get(subject, 0) + 1

    async def remove_connection(self, connection_id: str) -> list[str]:
        self._forget_subject(self._connections.pop(connection_id, None))
        channels = self._channels_of.pop(connection_id, set())
        for channel in channels:
            self._discard_member(channel, connection_id)
        return sorted(channels)

    def _forget_subject(self, info: dict[str, Any] | None) -> None:
        subject = subject_of(info) if info is not None else None
        if subject is not None:
            left = self._subjects.get(subject, 0) - 1
            if left > 0:
                self._subjects[subject] = left
            else:
                self._subjects.pop(subject, None)

    async def subject_connection_count(self, subject: str) -> int:
        return self._subjects.get(subject, 0)

    async def connection_count(self) -> int:
        return len(self._connections)

    async def connection_ids(self) -> list[str]:
        return list(self._connections)

    async def connection_info(self, connection_id: str) -> dict[str, Any] | None:
        info = self._connections.get(connection_id)
        return dict(info) if info is not None else None

    # -- membership --------------------------------------------------------
    async def subscribe(self, channel: str, connection_id: str) -> bool:
        members = self._members.setdefault(channel, set())
        if connection_id in members:
            return False
        members.add(connection_id)
        self._channels_of.setdefault(connection_id, set()).add(channel)
        return True

    async def unsubscribe(self, channel: str, connection_id: str) -> bool:
        if not self._discard_member(channel, connection_id):
            return False
        channels = self._channels_of.get(connection_id)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self._channels_of[connection_id]
        return True

    def _discard_member(self, channel: str, connection_id: str) -> bool:
        members = self._members.get(channel)
        if members is None or connection_id not in members:
            return False
        members.discard(connection_id)
        if not members:
            del self._members[channel]
        return True

    async def subscribers(self, channel: str) -> set[str]:
        return set(self._members.get(channel, ()))

    async def subscriber_count(self, channel: str) -> int:
        return len(self._members.get(channel, ()))

    async def channels_of(self, connection_id: str) -> list[str]:
        return sorted(self._channels_of.get(connection_id, ()))

    # -- channel records ---------------------------------------------------
    async def create_channel(self, record: ChannelRecord) -> bool:
        existed = record.name in self._records
        if existed:
            record.created_at = self._records[record.name].created_at
        self._records[record.name] = record
        return not existed

    async def delete_channel(self, channel: str) -> bool:
        had_record = self._records.pop(channel, None) is not None
        members = self._members.pop(channel, set())
        for connection_id in members:
            channels = self._channels_of.get(connection_id)
            if channels is not None:
                channels.discard(channel)
                if not channels:
                    del self._channels_of[connection_id]
        if self._listener is not None:
            self._listener.channel_deleted(channel)
        return had_record or bool(members)

    async def get_channel(self, channel: str) -> ChannelInfo | None:
        return self._info(channel)

    def _info(self, channel: str) -> ChannelInfo | None:
        record = self._records.get(channel)
        count = len(self._members.get(channel, ()))
        if record is None:
            if count == 0:
                return None
            return ChannelInfo(ChannelRecord(channel, created_at=0.0), count, explicit=False)
        return ChannelInfo(record, count, explicit=True)

    async def list_channels(self) -> list[ChannelInfo]:
        names = sorted(self._records.keys() | self._members.keys())
        return [info for name in names if (info := self._info(name)) is not None]

    # -- routing -----------------------------------------------------------
    async def publish(self, envelope: Envelope) -> int:
        if envelope.route is Route.CHANNEL:
            assert envelope.channel is not None
            members = self._members.get(envelope.channel)
            if not members:
                return 0
            recipients = count_recipients(members, envelope.only_to, envelope.exclude)
        elif envelope.route is Route.BROADCAST:
            recipients = count_recipients(
                self._connections.keys(),
                envelope.only_to,
                envelope.exclude,
            )
        else:
            if envelope.connection_id not in self._connections:
                return 0
            recipients = 1
        if recipients and self._listener is not None:
            self._listener.deliver(envelope)
        return recipients
