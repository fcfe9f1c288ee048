"""Property-based tests (hypothesis) of the frame decoder, the command parser
and the security parsers: any input gives a defined answer, never an
exception escaping to the server.

``ClientProtocol.handle_text`` runs in-process on a real
:class:`~service.manager.WebSocketManager` over the memory backplane, with a
real :class:`~service.connection.Connection` in ASGI mode whose ``send``
records what would go to the socket."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.tokens import SECRET, hs256

from service.auth import Authenticator, AuthError, Identity, token_from_scope
from service.connection import Connection, ConnectionMetadata
from service.errors import MessageInvalid
from service.limits import rate_limited_reply
from service.manager import WebSocketManager
from service.messages import MessageType, WebSocketMessage, json_decode
from service.origin import OriginPolicy
from service.policy import ACTIONS, ChannelPolicy, PolicyError, granted_actions, parse_grants
from service.protocol import COMMANDS, ClientProtocol
from service.settings import Settings

PROPS = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: examples that run through a manager and protocol (a few hundred microseconds each)
IN_PROCESS = settings(PROPS, max_examples=120)

POLICY = json.dumps({
    "default": "authenticated",
    "rules": [
        {"pattern": "notifications:user-{sub}", "subscribe": "user", "presence": "user",
         "publish": "deny"},
        {"pattern": "public:*", "access": "public"},
        {"pattern": "admin:*", "access": "granted"},
    ],
})

# -- strategies ---------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=5),
    max_leaves=20,
)
channel_like = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["public:lobby", "notifications:user-1", "notifications:user-2",
                     "admin:ops", "chat:room1", "", " ", "a" * 300, "x\x00y", "\ud800"]),
    json_values,
)
type_like = st.one_of(st.sampled_from([t.value for t in MessageType]), json_values)
command_payloads = st.fixed_dictionaries(
    {"command": st.one_of(st.sampled_from([*COMMANDS, "nope", ""]), json_values)},
    optional={"channel": channel_like, "id": json_values, "data": json_values,
              "event": st.one_of(st.text(max_size=10), json_values)},
)
frames = st.one_of(
    st.fixed_dictionaries({"type": st.just("system"), "payload": command_payloads}),
    st.fixed_dictionaries(
        {"type": type_like},
        optional={"payload": st.one_of(json_values, command_payloads),
                  "metadata": json_values, "timestamp": json_values, "channel": json_values},
    ),
    json_values,
)


def _mutate(text: str, data: st.DataObject) -> str:
    if not text:
        return text
    index = data.draw(st.integers(0, len(text) - 1))
    how = data.draw(st.sampled_from(["cut", "flip", "dup", "insert"]))
    if how == "cut":
        return text[:index]
    if how == "flip":
        return text[:index] + data.draw(st.characters()) + text[index + 1:]
    if how == "dup":
        return text[:index] + text[index:] * 2
    return text[:index] + data.draw(st.text(max_size=5)) + text[index:]


# -- the decoder --------------------------------------------------------------------------


@PROPS
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_any_bytes_or_text_decode_to_a_message_or_message_invalid(raw: bytes | str) -> None:
    try:
        message = WebSocketMessage.from_json_string(raw)
    except MessageInvalid:
        return
    assert isinstance(message.type, MessageType)
    message.encode()  # what was accepted can be sent again


@PROPS
@given(frames)
def test_any_json_decodes_to_a_message_or_message_invalid(value: Any) -> None:
    try:  # as received: what the JSON decoder makes of it (it refuses lone surrogates)
        received = json_decode(json.dumps(value))
    except msgspec.DecodeError:
        return
    try:
        message = WebSocketMessage.from_dict(received)
    except MessageInvalid:
        return
    assert isinstance(message, WebSocketMessage)
    again = WebSocketMessage.from_json_string(message.to_json_string())
    assert again.type is message.type


# -- the command parser, in-process ---------------------------------------------------------


@dataclass
class Harness:
    """A real manager, protocol and ASGI-mode connection on one loop."""

    loop: asyncio.AbstractEventLoop
    manager: WebSocketManager
    protocol: ClientProtocol
    conn: Connection
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def feed(self, text: str | None = None, data: bytes | None = None) -> list[Any]:
        self.sent.clear()
        if text is not None:
            await self.protocol.handle_text(self.conn, text)
        else:
            await self.protocol.handle_bytes(self.conn, data or b"")
        for _ in range(5):  # let the writer task drain the queue
            await asyncio.sleep(0)
        return list(self.sent)


def _harness(settings_: Settings, custom: dict[str, Any]) -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    sent: list[dict[str, Any]] = []

    async def send(event: Any) -> None:
        sent.append(event)

    async def create() -> Harness:
        manager = WebSocketManager(settings_)
        await manager.start()
        protocol = ClientProtocol(manager)
        conn = await manager.register(send, ConnectionMetadata(custom=custom))
        return Harness(loop, manager, protocol, conn, sent)

    harness = loop.run_until_complete(create())
    try:
        yield harness
    finally:
        loop.run_until_complete(harness.manager.stop(timeout=1))
        loop.close()


@pytest.fixture(scope="module", params=["open", "authenticated"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "open":
        yield from _harness(Settings(node_id="props-open", heartbeat_interval=3600,
                                     heartbeat_timeout=7200), {})
        return
    identity = Identity("1", {"sub": "1", "exp": 4_000_000_000,
                              "channels": {"admin:*": ["subscribe"]}}, False)
    yield from _harness(
        Settings(node_id="props-auth", jwt_secret=SECRET, channel_policy=POLICY,
                 heartbeat_interval=3600, heartbeat_timeout=7200),
        identity.custom(),
    )


def _check_replies(events: list[Any], sent_text: str | None) -> None:
    for event in events:
        assert event["type"] in ("websocket.send", "websocket.close"), event
        if event["type"] == "websocket.send":
            frame = json.loads(event["text"])
            assert isinstance(frame, dict) and frame["type"] in {t.value for t in MessageType}
    is_pong = False
    if sent_text is not None:
        try:
            is_pong = json.loads(sent_text).get("type") == "pong"
        except (ValueError, AttributeError):
            is_pong = False
    if not is_pong:
        assert events, f"no reply to {sent_text!r}"


def _run(harness: Harness, text: str) -> None:
    events = harness.loop.run_until_complete(harness.feed(text))
    _check_replies(events, text)
    assert not harness.conn.closed


@IN_PROCESS
@given(text=st.text(max_size=300))
def test_any_text_frame_gets_a_defined_reply(harness: Harness, text: str) -> None:
    _run(harness, text)


@IN_PROCESS
@given(frame=frames)
def test_any_json_frame_gets_a_defined_reply(harness: Harness, frame: Any) -> None:
    _run(harness, json.dumps(frame))


@IN_PROCESS
@given(frame=st.fixed_dictionaries({"type": st.just("system"), "payload": command_payloads}),
       data=st.data())
def test_mutated_commands_get_a_defined_reply(
    harness: Harness, frame: Any, data: st.DataObject
) -> None:
    _run(harness, _mutate(json.dumps(frame), data))


@IN_PROCESS
@given(payload=st.binary(max_size=300))
def test_any_binary_frame_gets_a_defined_reply(harness: Harness, payload: bytes) -> None:
    events = harness.loop.run_until_complete(harness.feed(data=payload))
    _check_replies(events, None)


@IN_PROCESS
@given(command=command_payloads)
def test_every_command_reply_carries_ok_and_echoes_the_id(
    harness: Harness, command: dict[str, Any]
) -> None:
    command["id"] = "req-1"
    text = json.dumps({"type": "system", "payload": command})
    try:
        json_decode(text)
    except msgspec.DecodeError:
        assume(False)  # not JSON to the server: a text message for the handler
    events = harness.loop.run_until_complete(harness.feed(text))
    replies = [json.loads(e["text"]) for e in events if e["type"] == "websocket.send"]
    mine = [r for r in replies if (r.get("metadata") or {}).get("id") == "req-1"]
    assert len(mine) == 1, replies
    meta = mine[0]["metadata"]
    assert isinstance(meta["ok"], bool)
    if not meta["ok"]:
        assert isinstance(meta["error"], str) and meta["error"]


# -- the security parsers -------------------------------------------------------------------


AUTH = Authenticator(secret=SECRET, audience="aud")


def _signed(claims: Any) -> str:
    """An HS256 token over any JSON payload, signed with the node's secret
    (PyJWT's own encoder refuses some odd claims; the verifier must not)."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@PROPS
@given(token=st.one_of(st.text(max_size=300), st.text(string.ascii_letters + ".-_", max_size=300),
                       st.builds(_signed, json_values),
                       st.builds(_signed, st.dictionaries(
                           st.sampled_from(["sub", "aud", "channels", "nbf", "iat", "iss",
                                            "exp"]), json_values)),
                       st.builds(lambda sub: hs256(sub=sub, aud="aud"), st.text(max_size=20))))
def test_any_token_gives_an_identity_or_auth_error(token: str) -> None:
    try:
        identity = AUTH.authenticate(token)
    except AuthError as exc:
        assert exc.reason
        return
    assert not identity.anonymous


@PROPS
@given(headers=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=4),
       query=st.binary(max_size=60))
def test_any_handshake_headers_give_a_token_or_none(
    headers: list[tuple[bytes, bytes]], query: bytes
) -> None:
    token = token_from_scope({"headers": headers, "query_string": query})
    assert token is None or isinstance(token, str)


@PROPS
@given(origin=st.text(max_size=60))
def test_any_origin_is_allowed_or_not(origin: str) -> None:
    assert isinstance(OriginPolicy("https://a.example,https://*.b.example").allows(origin), bool)


@PROPS
@given(claim=json_values, channel=st.text(max_size=30))
def test_any_channels_claim_parses_or_is_refused(claim: Any, channel: str) -> None:
    try:
        grants = parse_grants(claim)
    except PolicyError:
        return
    assert granted_actions(grants, channel) <= frozenset(ACTIONS)


@PROPS
@given(document=json_values)
def test_any_policy_document_parses_or_is_refused(document: Any) -> None:
    try:
        policy = ChannelPolicy.from_document(document if isinstance(document, dict) else {})
    except PolicyError:
        return
    for action in ACTIONS:
        assert policy.decide("some:channel", action).requirement


@PROPS
@given(text=st.one_of(st.none(), st.text(max_size=100)))
def test_rate_limited_reply_never_raises(text: str | None) -> None:
    meta = rate_limited_reply(text).metadata or {}
    assert meta["error"] == "rate_limited"
