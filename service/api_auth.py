"""The HTTP API's key (``--api-key`` / ``RTFORGE_API_KEY``).

The API (``/api/...``) bypasses the channel policy: whoever may call it may
publish anywhere and read every connection's metadata. So:

* with ``--api-key`` set, every API request needs ``Authorization: Bearer KEY``
  (else 401 ``unauthorized``);
* without a key, the API answers only while the node listens on loopback
  (``127.0.0.1``, ``::1``, ``localhost``); on any other bind every API request
  gets 403 ``api_key_required``, and ``rtforge websocket:info`` says so.

``/healthz``, ``/readyz`` and ``/metrics`` are not part of the API and stay open.
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from .errors import RtforgeError
from .node import node_of
from .security import is_loopback

__all__ = ["ApiKeyRequired", "Unauthorized", "api_key_guard"]


class Unauthorized(RtforgeError):
    code = "unauthorized"
    http_status = 401
    http_headers = {"WWW-Authenticate": 'Bearer realm="rtforge-api"'}


class ApiKeyRequired(RtforgeError):
    code = "api_key_required"
    http_status = 403


async def api_key_guard(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Litestar guard of every /api route (async: a sync guard runs in a thread)."""
    node = node_of(connection.app.state)
    settings = node.settings
    key = settings.api_key
    if not key:
        if is_loopback(settings.host):
            return
        node.manager.metrics.api_auth_failures.inc()
        raise ApiKeyRequired(
            f"the HTTP API is disabled: this node listens on {settings.host}, beyond "
            "loopback, and no --api-key (RTFORGE_API_KEY) is set"
        )
    scheme, _sep, given = (connection.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), key.encode()
    ):
        node.manager.metrics.api_auth_failures.inc()
        raise Unauthorized("the HTTP API needs Authorization: Bearer <api key>")
