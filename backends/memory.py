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
)
from .state import NodeState

__all__ = ["MemoryBackplane"]


class MemoryBackplane(Backplane):
    name = "memory"

    def __init__(self, node_id: str = "local", lease_ttl: float = 15.0) -> None:
        super().__init__(node_id, lease_ttl)
        self._listener: BackplaneListener | None = None
        self._state = NodeState()
        self._records: dict[str, ChannelRecord] = {}

    async def start(self, listener: BackplaneListener) -> None:
        self._listener = listener

    async def stop(self) -> None:
        self._state = NodeState()
        self._listener = None

    @property
    def ready(self) -> bool:
        return True

    # -- connections -------------------------------------------------------
    async def add_connection(self, connection_id: str, info: Mapping[str, Any]) -> None:
        self._state.add_connection(connection_id, {**info, "node_id": self.node_id})

    async def remove_connection(self, connection_id: str) -> list[str]:
        channels = sorted(self._state.channels_of.get(connection_id, ()))
        self._state.remove_connection(connection_id)
        return channels

    async def subject_connection_count(self, subject: str) -> int:
        return self._state.subjects.get(subject, 0)

    async def connection_count(self) -> int:
        return len(self._state.connections)

    async def connection_ids(self) -> list[str]:
        return list(self._state.connections)

    async def connection_info(self, connection_id: str) -> dict[str, Any] | None:
        info = self._state.connections.get(connection_id)
        return dict(info) if info is not None else None

    # -- membership --------------------------------------------------------
    async def subscribe(self, channel: str, connection_id: str) -> bool:
        return self._state.subscribe(channel, connection_id)

    async def unsubscribe(self, channel: str, connection_id: str) -> bool:
        return self._state.unsubscribe(channel, connection_id)

    async def subscribers(self, channel: str) -> set[str]:
        return set(self._state.members.get(channel, ()))

    async def subscriber_count(self, channel: str) -> int:
        return len(self._state.members.get(channel, ()))

    async def channels_of(self, connection_id: str) -> list[str]:
        return sorted(self._state.channels_of.get(connection_id, ()))

    # -- channel records ---------------------------------------------------
    async def create_channel(self, record: ChannelRecord) -> bool:
        existed = record.name in self._records
        if existed:
            record.created_at = self._records[record.name].created_at
        self._records[record.name] = record
        return not existed

    async def delete_channel(self, channel: str) -> bool:
        had_record = self._records.pop(channel, None) is not None
        members = self._state.drop_channel(channel)
        if self._listener is not None:
            self._listener.channel_deleted(channel)
        return had_record or bool(members)

    async def get_channel(self, channel: str) -> ChannelInfo | None:
        return self._info(channel)

    def _info(self, channel: str) -> ChannelInfo | None:
        record = self._records.get(channel)
        count = len(self._state.members.get(channel, ()))
        if record is None:
            if count == 0:
                return None
            return ChannelInfo(ChannelRecord(channel, created_at=0.0), count, explicit=False)
        return ChannelInfo(record, count, explicit=True)

    async def list_channels(self) -> list[ChannelInfo]:
        names = sorted(self._records.keys() | self._state.members.keys())
        return [info for name in names if (info := self._info(name)) is not None]

    # -- routing -----------------------------------------------------------
    async def publish(self, envelope: Envelope) -> int:
        state = self._state
        if envelope.route is Route.CHANNEL:
            assert envelope.channel is not None
            members = state.members.get(envelope.channel)
            if not members:
                return 0
            recipients = count_recipients(members, envelope.only_to, envelope.exclude)
        elif envelope.route is Route.BROADCAST:
            recipients = count_recipients(
                state.connections.keys(), envelope.only_to, envelope.exclude
            )
        else:
            if envelope.connection_id not in state.connections:
                return 0
            recipients = 1
        if recipients and self._listener is not None:
            self._listener.deliver(envelope)
        return recipients
