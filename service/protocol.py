"""What the server does with each frame a client sends.

* ``{"type": "ping"}`` is answered with ``pong``; ``{"type": "pong"}`` only
  counts as activity.
* ``{"type": "system", "payload": {"command": NAME, ...}}`` runs a command
  and is answered with a ``system`` (or ``json``) reply whose metadata holds
  ``command``, ``ok``, the echoed ``id`` and, on failure, ``error``.
* Every other frame — a well-formed ``text``/``json``/``event``/``system``
  message, JSON of an unknown shape, or not JSON at all — goes to the
  application's message handler (default: reply "Message received").

Nothing a client sends raises out of this module: bad input gets a reply.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from backends import BackplaneError

from .channels import validate_channel_name
from .connection import Connection
from .errors import CommandInvalid, LimitReached, RtforgeError, UnknownCommand
from .manager import MessageContext, WebSocketManager
from .messages import MessageType, WebSocketMessage, json_decode
from .security import Security

__all__ = ["COMMANDS", "ClientProtocol"]

log = logging.getLogger("rtforge.protocol")

Reply = WebSocketMessage
CommandFn = Callable[[Connection, dict[str, Any]], Awaitable[Reply]]

_HANDLED_TYPES = frozenset(
    {MessageType.TEXT, MessageType.JSON, MessageType.EVENT, MessageType.SYSTEM,
     MessageType.BINARY}
)


class ClientProtocol:
    """Turns client frames into actions on a :class:`WebSocketManager`."""

    def __init__(self, manager: WebSocketManager) -> None:
        self.manager = manager
        self.channels = manager.channel_manager()
        #: authentication, channel policy and limits (service/security.py)
        self.security = Security(manager)
        self._commands: dict[str, CommandFn] = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "list_channels": self._list_channels,
            "publish": self._publish,
            "presence": self._presence,
            "ping": self._ping,
        }
        for command_name in self._commands:  # series exist from the start (dashboards)
            manager.metrics.commands.labels(command_name, "ok")

    # -- frames --------------------------------------------------------------
    async def handle_text(self, conn: Connection, text: str) -> None:
        try:
            data = json_decode(text)
        except msgspec.DecodeError:
            self.manager.metrics.frames_in.labels("text").inc()
            await self._to_handler(conn, WebSocketMessage.text(text))
            return
        if isinstance(data, dict):
            kind = data.get("type")
            if kind == "ping":
                self.manager.metrics.frames_in.labels("ping").inc()
                conn.push(WebSocketMessage.pong().frame())
                self.manager.metrics.frames_sent.labels("pong").inc()
                return
            if kind == "pong":
                self.manager.metrics.frames_in.labels("pong").inc()
                return
            payload = data.get("payload")
            if kind == "system" and isinstance(payload, dict) and "command" in payload:
                self.manager.metrics.frames_in.labels("command").inc()
                await self.run_command(conn, payload)
                return
            try:
                message = WebSocketMessage.from_dict(data)
            except RtforgeError:
                message = None
            if message is not None and message.type in _HANDLED_TYPES:
                self.manager.metrics.frames_in.labels(message.type.value).inc()
                await self._to_handler(conn, message)
                return
        self.manager.metrics.frames_in.labels("text").inc()
        await self._to_handler(conn, WebSocketMessage.text(text))

    async def handle_bytes(self, conn: Connection, data: bytes) -> None:
        self.manager.metrics.frames_in.labels("binary").inc()
        await self._to_handler(conn, WebSocketMessage.binary(data))

    async def _to_handler(self, conn: Connection, message: WebSocketMessage) -> None:
        context = MessageContext(self.manager, conn.id, conn.metadata)
        try:
            reply = await self.manager.message_handler(message, context)
        except Exception:
            log.exception("message handler failed for connection %s", conn.id)
            reply = WebSocketMessage.system("Message could not be handled").with_metadata(
                {"ok": False, "error": "handler_error"}
            )
        if reply is not None:
            conn.push(reply.frame())
            self.manager.metrics.frames_sent.labels("reply").inc()

    # -- commands ------------------------------------------------------------
    async def run_command(self, conn: Connection, payload: dict[str, Any]) -> None:
        name = payload.get("command")
        request_id = payload.get("id")
        shown_name = name if isinstance(name, str) else None
        try:
            if not isinstance(name, str):
                raise CommandInvalid("command must be a string")
            command = self._commands.get(name)
            if command is None:
                raise UnknownCommand(f"unknown command: {name[:64]}")
            tracing = self.manager.tracing
            if tracing is None:
                reply = await command(conn, payload)
            else:
                reply = await tracing.run_command(name, conn, payload, command)
            outcome_meta: dict[str, Any] = {"command": name, "ok": True}
        except RtforgeError as exc:
            reply = WebSocketMessage.system(str(exc))
            outcome_meta = {"command": shown_name, "ok": False, "error": exc.code}
        except BackplaneError as exc:
            log.warning("command %s failed on the backplane: %s", shown_name, exc)
            reply = WebSocketMessage.system("the cluster backplane is unavailable, try again")
            outcome_meta = {"command": shown_name, "ok": False, "error": exc.code}
        if request_id is not None:
            outcome_meta["id"] = request_id
        label = shown_name if shown_name in self._commands else "unknown"
        self.manager.metrics.commands.labels(
            label, "ok" if outcome_meta["ok"] else "error"
        ).inc()
        conn.push(reply.with_metadata(outcome_meta).frame())
        self.manager.metrics.frames_sent.labels("reply").inc()

    @staticmethod
    def _channel_of(payload: dict[str, Any]) -> str:
        if "channel" not in payload:
            raise CommandInvalid("missing field: channel")
        return validate_channel_name(payload["channel"])

    async def _authorize(self, conn: Connection, channel: str, action: str) -> None:
        """Raise :class:`Forbidden` unless the channel policy allows it."""
        await self.security.authorize(conn, channel, action)

    async def subscribe(self, conn: Connection, channel: str) -> bool:
        """Subscribe ``conn`` as a client would (policy and limits apply)."""
        validate_channel_name(channel)
        if channel in conn.channels:
            return False
        if len(conn.channels) >= self.manager.settings.max_subscriptions:
            self.manager.metrics.limit_hits.labels("subscriptions").inc()
            raise LimitReached(
                f"subscription limit reached ({self.manager.settings.max_subscriptions})"
            )
        await self._authorize(conn, channel, "subscribe")
        return await self.channels.subscribe(channel, conn.id)

    async def _subscribe(self, conn: Connection, payload: dict[str, Any]) -> Reply:
        channel = self._channel_of(payload)
        await self.subscribe(conn, channel)
        return WebSocketMessage.system(f"Subscribed to channel: {channel}")

    async def _unsubscribe(self, conn: Connection, payload: dict[str, Any]) -> Reply:
        channel = self._channel_of(payload)
        was_member = await self.channels.unsubscribe(channel, conn.id)
        return WebSocketMessage.system(f"Unsubscribed from channel: {channel}").with_metadata(
            {"was_subscribed": was_member}
        )

    async def _list_channels(self, conn: Connection, payload: dict[str, Any]) -> Reply:
        identity = self.security.identity_of(conn)
        names = [
            c.name
            for c in await self.channels.list_channels()
            if c.name in conn.channels
            or self.security.allowed(identity, c.name, "subscribe", c.is_private)
        ]
        return WebSocketMessage.json({"channels": names})

    async def _publish(self, conn: Connection, payload: dict[str, Any]) -> Reply:
        channel = self._channel_of(payload)
        if "data" not in payload:
            raise CommandInvalid("missing field: data")
        event = payload.get("event")
        if event is not None and (not isinstance(event, str) or not event):
            raise CommandInvalid("event must be a non-empty string")
        await self._authorize(conn, channel, "publish")
        data = payload["data"]
        message = WebSocketMessage.event(event, data) if event else WebSocketMessage.json(data)
        recipients = await self.manager.send_to_channel(channel, message)
        return WebSocketMessage.system(f"Published to channel: {channel}").with_metadata(
            {"recipients": recipients}
        )

    async def _presence(self, conn: Connection, payload: dict[str, Any]) -> Reply:
        channel = self._channel_of(payload)
        await self._authorize(conn, channel, "presence")
        count = await self.channels.subscriber_count(channel)
        return WebSocketMessage.json({"channel": channel, "count": count})

    async def _ping(self, conn: Connection, payload: dict[str, Any]) -> Reply:
        return WebSocketMessage.pong()


COMMANDS = ("subscribe", "unsubscribe", "list_channels", "publish", "presence", "ping")
