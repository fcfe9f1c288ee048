"""Entity change notifications and dashboard metrics: the seed's
``LiveUpdateService`` and ``DashboardService`` examples.

Changes to an entity type go to the channel ``live:<type>`` as ``event``
frames named ``<type>.<action>``::

    live = LiveUpdateService(manager)
    await live.notify_created("user", "123", {"name": "Alice", "email": "alice@example.com"})
    await live.notify_updated("post", "456", {"title": "Updated Title"})
    await live.notify_deleted("comment", "789")

    {"type": "event", "channel": "live:user", "timestamp": 1764000000,
     "payload": {"event": "user.created",
                 "data": {"entity_type": "user", "entity_id": "123", "action": "created",
                          "data": {"name": "Alice", "email": "alice@example.com"},
                          "updated_at": 1764000000.25}}}

Dashboard metrics go to the channel ``dashboard:metrics`` as
``dashboard.metrics`` events::

    dashboard = DashboardService(manager)
    await dashboard.send_metrics(DashboardMetrics(
        active_users=42, requests_per_second=123.45, memory_usage_mb=256.0,
        cpu_usage_percent=45.5))

    {"type": "event", "channel": "dashboard:metrics", "timestamp": 1764000000,
     "payload": {"event": "dashboard.metrics",
                 "data": {"active_users": 42, "requests_per_second": 123.45,
                          "memory_usage_mb": 256.0, "cpu_usage_percent": 45.5}}}

The optional fields of :class:`DashboardMetrics` (``node_id``,
``connections``, ``deliveries_per_second``) appear in ``data`` only when set;
the demo app's dashboard uses them to draw one line per node.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self

from ..channels import validate_channel_name
from ..errors import MessageInvalid
from ..manager import WebSocketManager
from ..messages import WebSocketMessage

__all__ = [
    "DASHBOARD_CHANNEL",
    "DASHBOARD_EVENT",
    "LIVE_PREFIX",
    "DashboardMetrics",
    "DashboardService",
    "LiveUpdate",
    "LiveUpdateService",
    "UpdateAction",
]

LIVE_PREFIX = "live:"
DASHBOARD_CHANNEL = "dashboard:metrics"
DASHBOARD_EVENT = "dashboard.metrics"


class UpdateAction(StrEnum):
    """What happened to an entity."""

    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class LiveUpdate:
    """A change of one entity: ``user`` ``123`` was ``created`` with ``data``."""

    entity_type: str
    entity_id: str
    action: UpdateAction
    data: Any = None
    updated_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not isinstance(self.entity_type, str) or not self.entity_type:
            raise MessageInvalid("entity_type must be a non-empty string")
        if not isinstance(self.entity_id, str) or not self.entity_id:
            raise MessageInvalid("entity_id must be a non-empty string")
        object.__setattr__(self, "action", UpdateAction(self.action))

    @property
    def event_name(self) -> str:
        """``<entity_type>.<action>``, e.g. ``user.created``."""
        return f"{self.entity_type}.{self.action.value}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "action": self.action.value,
            "data": self.data,
            "updated_at": self.updated_at,
        }


class LiveUpdateService:
    """Publishes entity changes to ``live:<entity_type>`` channels."""

    def __init__(self, manager: WebSocketManager, *, prefix: str = LIVE_PREFIX) -> None:
        self.manager = manager
        self.prefix = prefix

    @classmethod
    def new(cls, manager: WebSocketManager) -> Self:
        return cls(manager)

    def channel(self, entity_type: str) -> str:
        """The channel that carries changes of ``entity_type`` (``live:user``)."""
        return validate_channel_name(self.prefix + entity_type)

    async def publish(self, update: LiveUpdate) -> int:
        """Send ``update``; returns the number of recipients cluster-wide."""
        message = WebSocketMessage.event(update.event_name, update.to_dict())
        return await self.manager.send_to_channel(self.channel(update.entity_type), message)

    async def notify_created(self, entity_type: str, entity_id: str | int, data: Any) -> int:
        return await self.publish(
            LiveUpdate(entity_type, str(entity_id), UpdateAction.CREATED, data)
        )

    async def notify_updated(self, entity_type: str, entity_id: str | int, data: Any) -> int:
        return await self.publish(
            LiveUpdate(entity_type, str(entity_id), UpdateAction.UPDATED, data)
        )

    async def notify_deleted(self, entity_type: str, entity_id: str | int) -> int:
        return await self.publish(LiveUpdate(entity_type, str(entity_id), UpdateAction.DELETED))


@dataclass(frozen=True, slots=True)
class DashboardMetrics:
    """One sample of the numbers a dashboard shows.

    The first four fields are the seed's; the optional ones describe one node
    (``connections`` held by it, ``deliveries_per_second`` it queued to its
    sockets) and are sent only when set."""

    active_users: int
    requests_per_second: float
    memory_usage_mb: float
    cpu_usage_percent: float
    node_id: str | None = None
    connections: int | None = None
    deliveries_per_second: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "active_users": self.active_users,
            "requests_per_second": self.requests_per_second,
            "memory_usage_mb": self.memory_usage_mb,
            "cpu_usage_percent": self.cpu_usage_percent,
        }
        for name in ("node_id", "connections", "deliveries_per_second"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


class DashboardService:
    """Publishes :class:`DashboardMetrics` to the dashboard channel."""

    def __init__(self, manager: WebSocketManager, *, channel: str = DASHBOARD_CHANNEL) -> None:
        self.manager = manager
        self.channel = validate_channel_name(channel)

    @classmethod
    def new(cls, manager: WebSocketManager) -> Self:
        return cls(manager)

    async def send_metrics(self, metrics: DashboardMetrics) -> int:
        """Send one sample; returns the number of recipients cluster-wide."""
        message = WebSocketMessage.event(DASHBOARD_EVENT, metrics.to_dict())
        return await self.manager.send_to_channel(self.channel, message)

    async def viewers(self) -> int:
        """Connections subscribed to the dashboard channel, cluster-wide."""
        return await self.manager.channel_manager().subscriber_count(self.channel)
