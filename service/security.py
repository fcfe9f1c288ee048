"""A node's security: handshake admission and per-command authorization.

Everything here runs at the handshake (:meth:`Security.admit`) or once per
client command (:meth:`Security.authorize`), never in fan-out: once a
connection is subscribed, delivering to it costs exactly what it cost before.

Handshake, in this order (the first refusal wins):

====================  ============================  ===========  ==========
check                 setting                        HTTP status  fallback
====================  ============================  ===========  ==========
Origin allow-list     ``--allowed-origins``          403          close 1008
node capacity         ``--max-connections``          503          close 1013
token                 ``--jwt-secret`` / ``--jwt-public-key``  401  close 1008
connections per user  ``--max-connections-per-user`` 429          close 1008
====================  ============================  ===========  ==========

A refused handshake is answered with an HTTP response *before* the upgrade
(body ``{"error": CODE, "detail": TEXT}``) when the server offers the ASGI
``websocket.http.response`` extension, as uvicorn does; on other servers the
socket is accepted, gets one ``system`` frame with ``ok: false`` and the
error code, and is closed with the fallback code.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .auth import ANONYMOUS, Authenticator, AuthError, Identity, token_from_scope
from .channels import MAX_CHANNEL_NAME_LENGTH
from .close_codes import CloseCode
from .errors import ChannelNameInvalid, Forbidden
from .limits import ConnectionGate, TokenBucket
from .origin import OriginPolicy
from .policy import ChannelPolicy, granted_actions

if TYPE_CHECKING:
    from .connection import Connection
    from .manager import WebSocketManager

__all__ = ["Refusal", "Security", "TokenExpired", "is_loopback"]

log = logging.getLogger("rtforge.security")


class TokenExpired(Forbidden):
    code = "token_expired"


@dataclass(slots=True)
class Refusal(Exception):
    """A handshake that is not admitted."""

    status: int
    close_code: int
    error: str
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def is_loopback(host: str) -> bool:
    """True when ``host`` (a ``--host`` value) only listens on loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Security:
    """Authentication, channel policy, origin check and limits of one node."""

    def __init__(self, manager: WebSocketManager) -> None:
        settings = manager.settings
        self.manager = manager
        self.metrics = manager.metrics
        self.auth = Authenticator.from_settings(settings)
        self.allow_anonymous = bool(settings.allow_anonymous) or not self.auth.enabled
        self.policy = ChannelPolicy.from_setting(
            settings.channel_policy, authenticated=self.auth.enabled
        )
        self.origins = OriginPolicy(settings.allowed_origins)
        self.gate = ConnectionGate(settings.max_connections, settings.max_connections_per_user)
        self.rate = float(settings.rate_limit)
        self.burst = int(settings.rate_burst)
        self.max_channel_name_length = min(
            int(settings.max_channel_name_length), MAX_CHANNEL_NAME_LENGTH
        )

    # -- handshake ---------------------------------------------------------------
    async def admit(self, scope: Mapping[str, Any]) -> Identity:
        """The identity of a handshake, or :class:`Refusal`. On success the
        connection holds a reservation: call :meth:`release` once it is
        registered (or failed to be)."""
        if not self.origins.allows_scope(scope):
            self.metrics.origin_refusals.inc()
            raise Refusal(403, int(CloseCode.POLICY_VIOLATION), "origin_not_allowed",
                          "this Origin may not open WebSockets here")
        if self.gate.node_full(self.manager.local_connection_count()):
            self.metrics.limit_hits.labels("connections").inc()
            raise Refusal(503, 1013, "node_full",
                          "this node holds its maximum number of connections, try another",
                          ((b"retry-after", b"1"),))
        token = token_from_scope(scope)
        if token is None and not self.allow_anonymous:
            self.metrics.auth_failures.labels("missing").inc()
            raise Refusal(401, int(CloseCode.POLICY_VIOLATION), "unauthorized",
                          "a token is required: ?token=JWT or Authorization: Bearer JWT",
                          ((b"www-authenticate", b'Bearer realm="rtforge"'),))
        try:
            identity = self.auth.authenticate(token)
        except AuthError as exc:
            self.metrics.auth_failures.labels(exc.reason).inc()
            raise Refusal(401, int(CloseCode.POLICY_VIOLATION), "unauthorized", str(exc),
                          ((b"www-authenticate",
                            b'Bearer realm="rtforge", error="invalid_token"'),)) from None
        subject = identity.subject
        if subject is not None and self.gate.per_user > 0:
            count = await self.manager.backplane.subject_connection_count(subject)
            if self.gate.user_full(subject, count):
                self.metrics.limit_hits.labels("connections_per_user").inc()
                raise Refusal(429, int(CloseCode.POLICY_VIOLATION), "too_many_connections",
                              f"at most {self.gate.per_user} connections per user")
        self.gate.reserve(subject)
        return identity

    def release(self, identity: Identity) -> None:
        self.gate.release(identity.subject)

    def registered(self, conn: Connection, identity: Identity) -> None:
        """Close ``conn`` with 4001 when its token expires."""
        if identity.expires_at is None:
            return
        delay = identity.expires_at + self.auth.leeway - time.time()
        loop = asyncio.get_running_loop()
        loop.call_later(max(delay, 0.0), self._expire, conn.id)

    def _expire(self, connection_id: str) -> None:
        conn = self.manager.get_connection(connection_id)
        if conn is None or conn.closed:
            return
        self.metrics.auth_failures.labels("expired").inc()
        conn.close(CloseCode.TOKEN_EXPIRED)
        asyncio.get_running_loop().create_task(
            self.manager.unregister(conn, "token_expired"), name=f"rtforge-expire-{conn.id}"
        )

    def bucket(self) -> TokenBucket | None:
        """A fresh rate limiter for one connection (None: no rate limit)."""
        return TokenBucket(self.rate, self.burst) if self.rate > 0 else None

    # -- commands ----------------------------------------------------------------
    def identity_of(self, conn: Connection) -> Identity:
        custom = conn.metadata.custom
        return Identity.from_custom(custom) if custom else ANONYMOUS

    def check_name(self, channel: str) -> None:
        if len(channel) > self.max_channel_name_length:
            self.metrics.limit_hits.labels("channel_name").inc()
            raise ChannelNameInvalid(
                f"channel name is longer than {self.max_channel_name_length} characters"
            )

    def allowed(self, identity: Identity, channel: str, action: str, private: bool) -> bool:
        """Whether the policy lets ``identity`` do ``action`` on ``channel``."""
        decision = self.policy.decide(channel, action)
        requirement = decision.requirement
        if requirement == "deny":
            return False
        if requirement != "public" and identity.anonymous:
            return False
        if requirement == "user":
            for name, value in decision.bound.items():
                claim = identity.subject if name == "sub" else identity.claims.get(name)
                if claim is None or str(claim) != value:
                    return False
        if requirement == "granted" or private:
            return action in granted_actions(identity.grants, channel)
        return True

    async def authorize(self, conn: Connection, channel: str, action: str) -> None:
        """Raise :class:`Forbidden` unless ``conn`` may ``action`` ``channel``."""
        self.check_name(channel)
        identity = self.identity_of(conn)
        if not identity.anonymous and self.auth.expired(identity):
            self.metrics.policy_denials.labels(action).inc()
            raise TokenExpired("the connection's token has expired: reconnect with a new one")
        if self.allowed(identity, channel, action, private=False):
            info = await self.manager.backplane.get_channel(channel)
            if info is None or not info.record.is_private or self.allowed(
                identity, channel, action, private=True
            ):
                return
            self.metrics.policy_denials.labels(action).inc()
            raise Forbidden(f"channel {channel} is private")
        self.metrics.policy_denials.labels(action).inc()
        raise Forbidden(f"{action} on channel {channel} is not allowed")
