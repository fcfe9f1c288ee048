"""Build the Litestar application of one node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from litestar import Litestar
from litestar.datastructures import State
from litestar.types import ControllerRouterHandler

from backends import Backplane, create_backplane

from .api import ApiController, HealthController, exception_handlers
from .connection import ConnectionId
from .demo import dashboard_feed_lifespan, demo_routes
from .events import events_lifespan
from .manager import MessageHandler, WebSocketManager
from .metrics import Metrics
from .node import STATE_KEY, Node, set_current
from .protocol import ClientProtocol
from .settings import Settings
from .telemetry import TelemetryConfig, start_tracing
from .ws_routes import websocket_routes

__all__ = ["create_app", "create_node"]


def create_node(
    settings: Settings,
    *,
    backplane: Backplane | None = None,
    message_handler: MessageHandler | None = None,
    telemetry: TelemetryConfig | None = None,
) -> Node:
    """The node's manager and protocol, not yet started. ``telemetry``
    (from :meth:`TelemetryConfig.from_env`) turns tracing on; default off."""
    if backplane is None:
        backplane = create_backplane(
            settings.backend,
            node_id=settings.node_id,
            lease_ttl=settings.lease_ttl,
            nats_url=settings.nats_url,
            redis_url=settings.redis_url,
            cluster_name=settings.cluster_name,
        )
    tracing = start_tracing(telemetry, settings) if telemetry is not None else None
    manager = WebSocketManager(settings, backplane, Metrics(), message_handler, tracing=tracing)
    return Node(settings, manager, ClientProtocol(manager))


def create_app(
    settings: Settings | None = None,
    *,
    backplane: Backplane | None = None,
    message_handler: MessageHandler | None = None,
    route_handlers: Sequence[ControllerRouterHandler] = (),
    debug: bool = False,
    telemetry: TelemetryConfig | None = None,
) -> Litestar:
    """A Litestar app serving one rtforge node; ``route_handlers`` are
    merged in, so an application can add its own routes."""
    settings = settings if settings is not None else Settings()
    node = create_node(
        settings, backplane=backplane, message_handler=message_handler, telemetry=telemetry
    )
    tracing = node.manager.tracing

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await node.manager.start()
        set_current(node)
        try:
            yield
        finally:
            await node.manager.stop()
            set_current(None)
            if tracing is not None:
                await anyio.to_thread.run_sync(tracing.shutdown)  # exports what is left

    handlers: list[Any] = [
        *websocket_routes(), ApiController, HealthController, *demo_routes(settings),
        *route_handlers,
    ]
    return Litestar(
        route_handlers=handlers,
        # entered in order, left in reverse: the manager runs around the others
        lifespan=[lifespan, events_lifespan, dashboard_feed_lifespan],
        state=State({STATE_KEY: node}),
        exception_handlers=exception_handlers,  # type: ignore[arg-type]
        debug=debug,
        logging_config=None,  # rtforge configures logging itself (service.logs)
        type_encoders={ConnectionId: str},
        plugins=tracing.litestar_plugins() if tracing is not None else None,
    )
