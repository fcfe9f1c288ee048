"""The seed's example services, built only on the public API of
:class:`~service.WebSocketManager` and :class:`~service.ChannelManager`, so
they work the same on one node and across a NATS or Redis cluster.

* :mod:`service.examples.chat` — :class:`ChatService`, :class:`ChatMessage`
* :mod:`service.examples.live_updates` — :class:`LiveUpdateService`,
  :class:`LiveUpdate`, :class:`UpdateAction`, :class:`DashboardService`,
  :class:`DashboardMetrics`

``docs/examples.md`` shows the exact frame each method produces.
"""

from __future__ import annotations

from .chat import ROOM_PREFIX, ChatMessage, ChatRoom, ChatService, room_channel
from .live_updates import (
    DASHBOARD_CHANNEL,
    LIVE_PREFIX,
    DashboardMetrics,
    DashboardService,
    LiveUpdate,
    LiveUpdateService,
    UpdateAction,
)

__all__ = [
    "DASHBOARD_CHANNEL",
    "LIVE_PREFIX",
    "ROOM_PREFIX",
    "ChatMessage",
    "ChatRoom",
    "ChatService",
    "DashboardMetrics",
    "DashboardService",
    "LiveUpdate",
    "LiveUpdateService",
    "UpdateAction",
    "room_channel",
]
