"""The HTTP API for other services (JSON in, JSON out), and health endpoints.

Counts in replies are cluster-wide on a shared backplane. Errors are JSON
``{"error": code, "detail": text}`` with a fitting status code.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromPath, JSONBody
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_400_BAD_REQUEST,
    HTTP_403_FORBIDDEN,
    HTTP_404_NOT_FOUND,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from backends import BackplaneError

from .api_auth import api_key_guard
from .channels import Channel, validate_channel_name
from .errors import (
    ChannelNameInvalid,
    ChannelNotFound,
    ConnectionNotFound,
    Forbidden,
    MessageInvalid,
    RtforgeError,
)
from .manager import BroadcastOptions
from .messages import WebSocketMessage
from .metrics import CONTENT_TYPE_LATEST
from .node import node_of

__all__ = ["ApiController", "HealthController", "exception_handlers"]

VERSION = "0.1.0"


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    """A message sent through the API (``M`` in the contract)."""

    type: Literal["text", "json", "event", "system"]
    payload: Any = None
    metadata: dict[str, Any] | None = None

    def to_message(self) -> WebSocketMessage:
        if self.type == "system" and not isinstance(self.payload, str):
            raise MessageInvalid("system payload must be a string")
        return WebSocketMessage.from_dict(
            {"type": self.type, "payload": self.payload, "metadata": self.metadata}
        )


class BroadcastIn(msgspec.Struct, forbid_unknown_fields=True):
    message: MessageIn
    only_to: list[str] | None = None
    exclude: list[str] | None = None
    channel: str | None = None


class ChannelIn(msgspec.Struct, forbid_unknown_fields=True):
    description: str | None = None
    is_private: bool = False


class RecipientsOut(msgspec.Struct):
    recipients: int


class ApiController(Controller):
    path = "/api"
    tags = ["api"]
    guards = [api_key_guard]  # --api-key, or loopback only (service/api_auth.py)

    @post("/broadcast", status_code=HTTP_200_OK)
    async def broadcast(self, state: State, data: JSONBody[BroadcastIn]) -> RecipientsOut:
        manager = node_of(state).manager
        options = BroadcastOptions(data.only_to, data.exclude, data.channel)
        recipients = await manager.broadcast(data.message.to_message(), options)
        return RecipientsOut(recipients)

    @post("/channels/{channel:str}/publish", status_code=HTTP_200_OK)
    async def publish(
        self, state: State, channel: FromPath[str], data: JSONBody[MessageIn]
    ) -> RecipientsOut:
        validate_channel_name(channel)
        manager = node_of(state).manager
        return RecipientsOut(await manager.send_to_channel(channel, data.to_message()))

    @post("/connections/{connection_id:str}/send", status_code=HTTP_200_OK)
    async def send(
        self, state: State, connection_id: FromPath[str], data: JSONBody[MessageIn]
    ) -> dict[str, Any]:
        await node_of(state).manager.send_to_connection(connection_id, data.to_message())
        return {"sent": True}

    @get("/channels")
    async def list_channels(self, state: State) -> dict[str, Any]:
        channels = await node_of(state).manager.channel_manager().list_channels()
        return {"channels": [c.to_dict() for c in channels]}

    @get("/channels/{channel:str}")
    async def get_channel(self, state: State, channel: FromPath[str]) -> dict[str, Any]:
        validate_channel_name(channel)
        found = await node_of(state).manager.channel_manager().get_channel_metadata(channel)
        if found is None:
            raise ChannelNotFound(f"no channel {channel}")
        return found.to_dict()

    @put("/channels/{channel:str}")
    async def put_channel(
        self, state: State, channel: FromPath[str], data: JSONBody[ChannelIn | None] = None
    ) -> Response[dict[str, Any]]:
        validate_channel_name(channel)
        body = data or ChannelIn()
        channels = node_of(state).manager.channel_manager()
        record = Channel(channel, body.description, body.is_private)
        created = await channels.create_channel(record)
        current = await channels.get_channel_metadata(channel)
        shown = current.to_dict() if current is not None else record.to_dict()
        return Response(shown, status_code=HTTP_201_CREATED if created else HTTP_200_OK)

    @delete("/channels/{channel:str}", status_code=HTTP_200_OK)
    async def delete_channel(self, state: State, channel: FromPath[str]) -> dict[str, Any]:
        validate_channel_name(channel)
        if not await node_of(state).manager.channel_manager().delete_channel(channel):
            raise ChannelNotFound(f"no channel {channel}")
        return {"deleted": channel}

    @get("/connections")
    async def list_connections(self, state: State) -> dict[str, Any]:
        return {"connections": await node_of(state).manager.get_connection_ids()}

    @get("/connections/{connection_id:str}")
    async def get_connection(self, state: State, connection_id: FromPath[str]) -> dict[str, Any]:
        info = await node_of(state).manager.connection_info(connection_id)
        if info is None:
            raise ConnectionNotFound(f"no connection {connection_id}")
        return info

    @get("/stats")
    async def stats(self, state: State) -> dict[str, Any]:
        node = node_of(state)
        manager = node.manager
        backplane = manager.backplane
        channels = await backplane.list_channels()
        return {
            "node_id": manager.node_id,
            "version": VERSION,
            "backend": backplane.name,
            "connections": await backplane.connection_count(),
            "channels": len(channels),
            "subscriptions": sum(c.subscribers for c in channels),
            "nodes": await backplane.node_ids(),
            "local": {
                "connections": manager.local_connection_count(),
                "channels": len(manager.local.channels),
                "queued_frames": sum(c.queued for c in manager.local.connections.values()),
            },
            "ready": manager.ready,
            "uptime_seconds": round(time.time() - manager.started_at, 3),
        }


class HealthController(Controller):
    path = "/"
    include_in_schema = False

    @get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(self, state: State) -> Response[dict[str, Any]]:
        manager = node_of(state).manager
        body = {
            "status": "ready" if manager.ready else "not ready",
            "backplane": manager.backplane.ready,
            "draining": manager.draining,
        }
        code = HTTP_200_OK if manager.ready else HTTP_503_SERVICE_UNAVAILABLE
        return Response(body, status_code=code)

    @get("/metrics")
    async def metrics(self, state: State) -> Response[bytes]:
        body = node_of(state).manager.metrics.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)


_STATUS_OF: dict[type[RtforgeError], int] = {
    ChannelNameInvalid: HTTP_400_BAD_REQUEST,
    MessageInvalid: HTTP_400_BAD_REQUEST,
    ChannelNotFound: HTTP_404_NOT_FOUND,
    ConnectionNotFound: HTTP_404_NOT_FOUND,
    Forbidden: HTTP_403_FORBIDDEN,
}


def _rtforge_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    assert isinstance(exc, RtforgeError)
    status = getattr(exc, "http_status", None) or _STATUS_OF.get(type(exc), HTTP_400_BAD_REQUEST)
    headers = getattr(exc, "http_headers", None)
    return Response({"error": exc.code, "detail": str(exc)}, status_code=status, headers=headers)


def _backplane_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    assert isinstance(exc, BackplaneError)
    return Response(
        {"error": exc.code, "detail": str(exc)}, status_code=HTTP_503_SERVICE_UNAVAILABLE
    )


def _validation_error(
    request: Request[Any, Any, Any], exc: Exception
) -> Response[dict[str, Any]]:
    assert isinstance(exc, ValidationException)
    return Response(
        {"error": "invalid_request", "detail": exc.detail, "extra": exc.extra},
        status_code=HTTP_400_BAD_REQUEST,
    )


def _http_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == HTTP_404_NOT_FOUND else "http_error"
    return Response({"error": code, "detail": exc.detail}, status_code=exc.status_code)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    request.logger.exception("unhandled error in %s %s", request.method, request.url.path)
    return Response(
        {"error": "internal_error", "detail": "internal server error"},
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


exception_handlers = {
    RtforgeError: _rtforge_error,
    BackplaneError: _backplane_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    HTTP_500_INTERNAL_SERVER_ERROR: _internal_error,
}
