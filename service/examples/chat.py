"""Real-time chat rooms on channels: the seed's ``ChatService`` example.

A room ``general`` is the channel ``chat:general``; everything the service
sends is an ``event`` frame on that channel, so a browser joins a room by
subscribing to the channel and tells frames apart by event name::

    chat = ChatService(manager)
    await chat.create_room("general", "General Discussion")
    await chat.send_message("general", ChatMessage.new("Alice", "Hello everyone!"))
    await chat.notify_user_joined("general", "Bob")
    await chat.notify_user_left("general", "Alice")
    count = await chat.room_user_count("general")
    rooms = await chat.list_rooms()

Frames (``docs/examples.md``)::

    {"type": "event", "channel": "chat:general", "timestamp": 1764000000,
     "payload": {"event": "chat.message",
                 "data": {"room": "general", "id": "…", "user": "Alice",
                          "text": "Hello everyone!", "sent_at": 1764000000.25}}}
    {"type": "event", "channel": "chat:general", "timestamp": 1764000000,
     "payload": {"event": "chat.user_joined", "data": {"room": "general", "user": "Bob"}}}

``chat.user_left`` is like ``chat.user_joined``. Clients may publish the same
events themselves with the ``publish`` command (the demo app does), so Python
services and browsers share one format.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

from ..channels import Channel, validate_channel_name
from ..errors import MessageInvalid
from ..manager import WebSocketManager
from ..messages import WebSocketMessage

__all__ = [
    "EVENT_MESSAGE",
    "EVENT_USER_JOINED",
    "EVENT_USER_LEFT",
    "MAX_TEXT_LENGTH",
    "MAX_USER_LENGTH",
    "ROOM_PREFIX",
    "ChatMessage",
    "ChatRoom",
    "ChatService",
    "room_channel",
]

ROOM_PREFIX = "chat:"
EVENT_MESSAGE = "chat.message"
EVENT_USER_JOINED = "chat.user_joined"
EVENT_USER_LEFT = "chat.user_left"
MAX_USER_LENGTH = 64
MAX_TEXT_LENGTH = 4000


def room_channel(room: str, prefix: str = ROOM_PREFIX) -> str:
    """The channel of ``room`` (``general`` → ``chat:general``)."""
    if not isinstance(room, str) or not room:
        raise MessageInvalid("room name must be a non-empty string")
    return validate_channel_name(prefix + room)


def _check_user(user: object) -> str:
    if not isinstance(user, str) or not user.strip():
        raise MessageInvalid("user must be a non-empty string")
    if len(user) > MAX_USER_LENGTH:
        raise MessageInvalid(f"user is longer than {MAX_USER_LENGTH} characters")
    return user


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat message: who wrote what, with an id and the time it was sent."""

    user: str
    text: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sent_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        _check_user(self.user)
        if not isinstance(self.text, str) or not self.text:
            raise MessageInvalid("text must be a non-empty string")
        if len(self.text) > MAX_TEXT_LENGTH:
            raise MessageInvalid(f"text is longer than {MAX_TEXT_LENGTH} characters")

    @classmethod
    def new(cls, user: str, text: str) -> Self:
        """``ChatMessage::new("Alice", "Hello everyone!")`` of the seed."""
        return cls(user, text)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "text": self.text, "sent_at": self.sent_at}

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Parse the ``data`` of a ``chat.message`` event (``room`` is ignored)."""
        if not isinstance(data, dict):
            raise MessageInvalid("a chat message must be an object")
        sent_at = data.get("sent_at", time.time())
        if not isinstance(sent_at, int | float) or isinstance(sent_at, bool):
            raise MessageInvalid("sent_at must be a number")
        message_id = data.get("id") or uuid.uuid4().hex
        return cls(data.get("user"), data.get("text"), str(message_id), float(sent_at))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class ChatRoom:
    """A room as :meth:`ChatService.list_rooms` lists it."""

    name: str
    channel: str
    description: str | None
    user_count: int


class ChatService:
    """Chat rooms over the manager's channels; works on any backplane."""

    def __init__(self, manager: WebSocketManager, *, prefix: str = ROOM_PREFIX) -> None:
        self.manager = manager
        self.channels = manager.channel_manager()
        self.prefix = prefix

    @classmethod
    def new(cls, manager: WebSocketManager) -> Self:
        return cls(manager)

    def channel(self, room: str) -> str:
        return room_channel(room, self.prefix)

    async def create_room(self, room: str, description: str | None = None) -> bool:
        """Create ``room`` (its channel, with a description) cluster-wide;
        True when it did not exist yet. Sending needs no created room."""
        return await self.channels.create_channel(Channel(self.channel(room), description))

    async def delete_room(self, room: str) -> bool:
        """Delete ``room``: every member everywhere is unsubscribed and gets
        a ``system`` frame "Channel deleted: chat:ROOM"."""
        return await self.channels.delete_channel(self.channel(room))

    async def send_message(self, room: str, message: ChatMessage) -> int:
        """Send ``message`` to everyone in ``room``; returns the number of
        recipients cluster-wide."""
        data = {"room": room, **message.to_dict()}
        return await self._send(room, EVENT_MESSAGE, data)

    async def notify_user_joined(self, room: str, user: str) -> int:
        """Tell ``room`` that ``user`` joined; returns the number of recipients."""
        return await self._send(room, EVENT_USER_JOINED, {"room": room, "user": _check_user(user)})

    async def notify_user_left(self, room: str, user: str) -> int:
        """Tell ``room`` that ``user`` left; returns the number of recipients."""
        return await self._send(room, EVENT_USER_LEFT, {"room": room, "user": _check_user(user)})

    async def room_user_count(self, room: str) -> int:
        """Connections in ``room``, cluster-wide."""
        return await self.channels.subscriber_count(self.channel(room))

    async def list_rooms(self) -> list[ChatRoom]:
        """Every room that was created or has members, by name."""
        rooms = [
            ChatRoom(c.name[len(self.prefix):], c.name, c.description, c.subscriber_count)
            for c in await self.channels.list_channels()
            if c.name.startswith(self.prefix) and len(c.name) > len(self.prefix)
        ]
        return sorted(rooms, key=lambda r: r.name)

    async def _send(self, room: str, event: str, data: dict[str, Any]) -> int:
        channel = self.channel(room)
        return await self.manager.send_to_channel(channel, WebSocketMessage.event(event, data))
