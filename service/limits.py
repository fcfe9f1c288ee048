"""Abuse limits: a token bucket per connection and connection admission.

Each limit is a setting, counts its hits in ``rtforge_limit_hits_total``
(label ``limit``, one of :data:`LIMITS`) and has a documented answer:

=====================  ==========================  ==================================
limit                  setting                     answer
=====================  ==========================  ==================================
``frame_size``         ``--max-message-size``      close 1009
``subscriptions``      ``--max-subscriptions``     ``ok: false, error: limit_reached``
``rate``               ``--rate-limit/--rate-burst`` ``ok: false, error: rate_limited``;
                                                   close 1008 after ``--rate-burst``
                                                   refusals in a row
``connections``        ``--max-connections``       HTTP 503 before the upgrade
                                                   (fallback: close 1013)
``connections_per_user`` ``--max-connections-per-user`` HTTP 429 before the upgrade
                                                   (fallback: close 1008)
``channel_name``       ``--max-channel-name-length`` ``ok: false, error: invalid_channel``
=====================  ==========================  ==================================
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .messages import WebSocketMessage, json_decode

__all__ = ["LIMITS", "ConnectionGate", "TokenBucket", "rate_limited_reply"]

LIMITS = (
    "frame_size", "subscriptions", "rate", "connections", "connections_per_user",
    "channel_name",
)


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; one per frame.

    ``refused`` counts refusals since the last accepted frame: the serve
    loop closes a connection whose refusals in a row reach ``burst``."""

    __slots__ = ("burst", "rate", "refused", "tokens", "updated")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.refused = 0

    def take(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens = self.tokens + (now - self.updated) * self.rate
        self.updated = now
        tokens = min(tokens, self.burst)
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            self.refused = 0
            return True
        self.tokens = tokens
        self.refused += 1
        return False


def rate_limited_reply(text: str | None) -> WebSocketMessage:
    """The reply to a frame refused by the rate limit; when the frame was a
    command, its name and id are echoed as in every command reply."""
    meta: dict[str, Any] = {"ok": False, "error": "rate_limited"}
    if text is not None and text[:1] == "{" and len(text) <= 4096:
        try:
            data = json_decode(text)
        except msgspec.DecodeError:
            data = None
        payload = data.get("payload") if isinstance(data, dict) else None
        if isinstance(payload, dict) and "command" in payload:
            name = payload.get("command")
            meta["command"] = name if isinstance(name, str) else None
            if payload.get("id") is not None:
                meta["id"] = payload["id"]
    return WebSocketMessage.system("rate limit exceeded, slow down").with_metadata(meta)


class ConnectionGate:
    """Admission of new connections against ``--max-connections`` (this
    node) and ``--max-connections-per-user`` (cluster-wide, from the
    backplane's replicated connection metadata).

    A handshake that passed holds a reservation until its connection is
    registered, so that concurrent handshakes cannot overshoot a limit on
    this node. Across nodes the per-user count is as fresh as the replicated
    view: one broker round trip."""

    __slots__ = ("_pending", "_pending_by_subject", "per_node", "per_user")

    def __init__(self, per_node: int, per_user: int) -> None:
        self.per_node = per_node
        self.per_user = per_user
        self._pending = 0
        self._pending_by_subject: dict[str, int] = {}

    def node_full(self, local_connections: int) -> bool:
        return self.per_node > 0 and local_connections + self._pending >= self.per_node

    def user_full(self, subject: str, cluster_count: int) -> bool:
        pending = self._pending_by_subject.get(subject, 0)
        return self.per_user > 0 and cluster_count + pending >= self.per_user

    def reserve(self, subject: str | None) -> None:
        self._pending += 1
        if subject is not None and self.per_user > 0:
            self._pending_by_subject[subject] = self._pending_by_subject.get(subject, 0) + 1

    def release(self, subject: str | None) -> None:
        self._pending -= 1
        if subject is not None and self.per_user > 0:
            left = self._pending_by_subject.get(subject, 0) - 1
            if left > 0:
                self._pending_by_subject[subject] = left
            else:
                self._pending_by_subject.pop(subject, None)
