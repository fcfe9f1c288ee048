"""Every WebSocket close code the server uses, with its reason, in one place."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "close_reason"]


class CloseCode(IntEnum):
    NORMAL = 1000
    """Closed by the server on request (``close_connection``, ``close_all``)."""
    GOING_AWAY = 1001
    """The node is shutting down."""
    POLICY_VIOLATION = 1008
    """The connection broke a rule (authentication, origin)."""
    MESSAGE_TOO_BIG = 1009
    """A client frame exceeded ``max_message_size``."""
    INTERNAL_ERROR = 1011
    """The server failed unexpectedly while serving this connection."""
    SERVICE_RESTART = 1012
    """The node drains: reconnect (to another node) at once."""
    SLOW_CONSUMER = 1013
    """The client did not read fast enough; its send queue overflowed."""
    HEARTBEAT_TIMEOUT = 4000
    """The client sent nothing for ``heartbeat_timeout`` seconds."""
    TOKEN_EXPIRED = 4001
    """The connection's JWT expired: get a new token and reconnect."""


_REASONS = {
    CloseCode.NORMAL: "closed by server",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.POLICY_VIOLATION: "policy violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVICE_RESTART: "server restarting, reconnect",
    CloseCode.SLOW_CONSUMER: "slow consumer",
    CloseCode.HEARTBEAT_TIMEOUT: "heartbeat timeout",
    CloseCode.TOKEN_EXPIRED: "token expired",
}


def close_reason(code: CloseCode) -> str:
    return _REASONS[code]
