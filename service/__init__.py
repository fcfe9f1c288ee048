"""rtforge's node: WebSocket protocol, HTTP API, settings and CLI on Litestar.

The public API, the seed's API made async::

    from service import WebSocketManager, WebSocketMessage, BroadcastOptions

    manager = get_websocket_manager()
    await manager.broadcast(WebSocketMessage.text("Hello everyone!"))
    await manager.send_to_channel("chat:room1", WebSocketMessage.json(data))
    await manager.send_to_connection(connection_id, WebSocketMessage.event("user.joined", {...}))
"""

from __future__ import annotations

from .app import create_app, create_node
from .channels import Channel, ChannelManager, validate_channel_name
from .close_codes import CloseCode
from .connection import ConnectionId, ConnectionMetadata
from .errors import (
    ChannelNameInvalid,
    ChannelNotFound,
    CommandInvalid,
    ConnectionNotFound,
    Forbidden,
    LimitReached,
    MessageInvalid,
    RtforgeError,
    SettingsError,
    UnknownCommand,
)
from .manager import (
    BroadcastOptions,
    MessageContext,
    MessageHandler,
    WebSocketManager,
    default_message_handler,
)
from .messages import MessageType, WebSocketMessage
from .node import get_websocket_manager
from .settings import Settings
from .telemetry import TelemetryConfig
from .ws_routes import websocket_routes

__version__ = "0.1.0"

__all__ = [
    "BroadcastOptions",
    "Channel",
    "ChannelManager",
    "ChannelNameInvalid",
    "ChannelNotFound",
    "CloseCode",
    "CommandInvalid",
    "ConnectionId",
    "ConnectionMetadata",
    "ConnectionNotFound",
    "Forbidden",
    "LimitReached",
    "MessageContext",
    "MessageHandler",
    "MessageInvalid",
    "MessageType",
    "RtforgeError",
    "Settings",
    "SettingsError",
    "TelemetryConfig",
    "UnknownCommand",
    "WebSocketManager",
    "WebSocketMessage",
    "create_app",
    "create_node",
    "default_message_handler",
    "get_websocket_manager",
    "validate_channel_name",
    "websocket_routes",
]
