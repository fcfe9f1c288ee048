"""Typed errors. Each has a stable ``code`` that appears on the wire
(``"error"`` in a command reply's metadata, ``"error"`` in HTTP API bodies)."""

from __future__ import annotations

__all__ = [
    "ChannelNameInvalid",
    "ChannelNotFound",
    "CommandInvalid",
    "ConnectionNotFound",
    "Forbidden",
    "LimitReached",
    "MessageInvalid",
    "RtforgeError",
    "SettingsError",
    "UnknownCommand",
]


class RtforgeError(Exception):
    """Base class; ``code`` is the wire code, ``str(exc)`` the human text."""

    code = "error"


class MessageInvalid(RtforgeError, ValueError):
    code = "invalid_message"


class ChannelNameInvalid(RtforgeError, ValueError):
    code = "invalid_channel"


class ChannelNotFound(RtforgeError, LookupError):
    code = "channel_not_found"


class ConnectionNotFound(RtforgeError, LookupError):
    code = "connection_not_found"


class CommandInvalid(RtforgeError, ValueError):
    code = "invalid_command"


class UnknownCommand(RtforgeError, ValueError):
    code = "unknown_command"


class Forbidden(RtforgeError):
    code = "forbidden"


class LimitReached(RtforgeError):
    code = "limit_reached"


class SettingsError(RtforgeError, ValueError):
    code = "bad_setting"
