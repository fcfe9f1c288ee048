"""One node's connections and channel memberships, with their indexes.

The in-memory backplane keeps the whole (one-node) cluster in one
:class:`NodeState`; the cluster backplane keeps one for its own node and one
per peer, replicated over the broker. All methods are plain and synchronous.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import subject_of

__all__ = ["ROW_CHANNELS", "NodeState"]

#: channels per snapshot row: 100 names of 255 characters (up to 4 bytes each)
#: stay near 100 KiB, far below any broker's message limit
ROW_CHANNELS = 100


class NodeState:
    """One node's connections and memberships, as owned or as replicated."""

    __slots__ = ("channels_of", "connections", "members", "subjects")

    def __init__(self) -> None:
        self.connections: dict[str, dict[str, Any]] = {}
        self.channels_of: dict[str, set[str]] = {}
        self.members: dict[str, set[str]] = {}
        #: connections per authenticated subject (``custom.sub`` of the info)
        self.subjects: dict[str, int] = {}

    def add_connection(self, connection_id: str, info: dict[str, Any]) -> None:
        self._count_subject(self.connections.get(connection_id), -1)
        self.connections[connection_id] = info
        self._count_subject(info, 1)

    def _count_subject(self, info: dict[str, Any] | None, delta: int) -> None:
        subject = subject_of(info) if info is not None else None
        if subject is not None:
            count = self.subjects.get(subject, 0) + delta
            if count > 0:
                self.subjects[subject] = count
            else:
                self.subjects.pop(subject, None)

    def remove_connection(self, connection_id: str) -> list[str]:
        """Remove and return the channels that lost their last member here."""
        self._count_subject(self.connections.pop(connection_id, None), -1)
        emptied = []
        for channel in self.channels_of.pop(connection_id, ()):
            members = self.members.get(channel)
            if members is not None:
                members.discard(connection_id)
                if not members:
                    del self.members[channel]
                    emptied.append(channel)
        return emptied

    def subscribe(self, channel: str, connection_id: str) -> bool:
        members = self.members.setdefault(channel, set())
        if connection_id in members:
            return False
        members.add(connection_id)
        self.channels_of.setdefault(connection_id, set()).add(channel)
        return True

    def unsubscribe(self, channel: str, connection_id: str) -> bool:
        members = self.members.get(channel)
        if members is None or connection_id not in members:
            return False
        members.discard(connection_id)
        if not members:
            del self.members[channel]
        channels = self.channels_of.get(connection_id)
        if channels is not None:
            channels.discard(channel)
            if not channels:
                del self.channels_of[connection_id]
        return True

    def drop_channel(self, channel: str) -> set[str]:
        members = self.members.pop(channel, set())
        for connection_id in members:
            channels = self.channels_of.get(connection_id)
            if channels is not None:
                channels.discard(channel)
                if not channels:
                    del self.channels_of[connection_id]
        return members

    def apply(self, op: list[Any]) -> None:
        kind, connection_id = op[0], op[1]
        if kind == "+c":
            self.add_connection(connection_id, dict(op[2]) if isinstance(op[2], dict) else {})
        elif kind == "-c":
            self.remove_connection(connection_id)
        elif kind == "+s":
            self.subscribe(op[2], connection_id)
        elif kind == "-s":
            self.unsubscribe(op[2], connection_id)

    def snapshot_rows(self) -> Iterator[list[Any]]:
        """``[connection id, info, [channels]]`` for every connection, and
        for memberships of ids that are not connections of this node. A
        connection with many channels spreads over several rows (the info in
        the first only), so that no row outgrows a broker message."""
        for connection_id, info in self.connections.items():
            channels = sorted(self.channels_of.get(connection_id, ()))
            yield [connection_id, info, channels[:ROW_CHANNELS]]
            for start in range(ROW_CHANNELS, len(channels), ROW_CHANNELS):
                yield [connection_id, None, channels[start:start + ROW_CHANNELS]]
        for connection_id, channel_set in self.channels_of.items():
            if connection_id not in self.connections:
                channels = sorted(channel_set)
                for start in range(0, len(channels), ROW_CHANNELS):
                    yield [connection_id, None, channels[start:start + ROW_CHANNELS]]

    @classmethod
    def from_rows(cls, rows: list[list[Any]]) -> NodeState:
        state = cls()
        for connection_id, info, channels in rows:
            if info is not None:
                state.add_connection(connection_id, dict(info))
            for channel in channels:
                state.subscribe(channel, connection_id)
        return state
