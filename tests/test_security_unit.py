"""Unit tests of the security building blocks: policy, grants, origins,
token bucket, admission gate, log redaction."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.tokens import SECRET, hs256

from service.auth import Authenticator, Identity, RedactTokenFilter, token_from_scope
from service.limits import ConnectionGate, TokenBucket
from service.origin import OriginPolicy, normalize_origin, parse_allowed_origins
from service.policy import (
    ChannelPolicy,
    PolicyError,
    granted_actions,
    load_policy_source,
    parse_grants,
)
from service.security import is_loopback

TOML_POLICY = """
default = "authenticated"

[[rules]]
pattern = "notifications:user-{sub}"
subscribe = "user"
presence = "user"
publish = "deny"

[[rules]]
pattern = "public:*"
access = "public"
"""


def test_policy_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(TOML_POLICY)
    policy = ChannelPolicy.from_document(load_policy_source(str(path)))
    decision = policy.decide("notifications:user-42", "subscribe")
    assert decision.requirement == "user"
    assert decision.bound == {"sub": "42"}
    assert policy.decide("notifications:user-42", "publish").requirement == "deny"
    assert policy.decide("public:lobby", "publish").requirement == "public"
    assert policy.decide("other", "presence").requirement == "authenticated"


def test_first_matching_rule_wins_and_actions_fall_back_to_the_default() -> None:
    policy = ChannelPolicy.from_document({
        "default": {"subscribe": "public", "publish": "deny", "presence": "authenticated"},
        "rules": [{"pattern": "a:*", "subscribe": "granted"},
                  {"pattern": "a:b", "access": "public"}],
    })
    assert policy.decide("a:b", "subscribe").requirement == "granted"
    assert policy.decide("a:b", "publish").requirement == "deny"  # from the default
    assert policy.decide("a:b", "presence").requirement == "authenticated"


def test_wildcards_and_placeholders_match_whole_names_only() -> None:
    policy = ChannelPolicy.from_document({"default": "deny", "rules": [
        {"pattern": "room-*-chat", "access": "public"},
        {"pattern": "org:{org}:user:{sub}", "access": "user"},
    ]})
    assert policy.decide("room-1-chat", "subscribe").requirement == "public"
    assert policy.decide("room-1-chat-x", "subscribe").requirement == "deny"
    assert policy.decide("xroom-1-chat", "subscribe").requirement == "deny"
    assert policy.decide("org:a:user:1", "subscribe").bound == {"org": "a", "sub": "1"}
    assert policy.decide("room-.*-chat", "subscribe").requirement == "public"  # no regex


def test_open_and_default_auth_policies() -> None:
    open_policy = ChannelPolicy.from_setting("", authenticated=False)
    assert open_policy.decide("notifications:user-1", "subscribe").requirement == "public"
    auth_policy = ChannelPolicy.from_setting("", authenticated=True)
    assert auth_policy.decide("notifications:user-1", "subscribe").requirement == "user"
    assert auth_policy.decide("chat:room1", "publish").requirement == "authenticated"


@pytest.mark.parametrize(
    "document",
    [
        {"default": "everyone"},
        {"default": "user"},
        {"rules": "a"},
        {"rules": [{"pattern": ""}]},
        {"rules": [{"pattern": "a", "subscrbe": "public"}]},
        {"rules": [{"pattern": "a:{", "access": "public"}]},
        {"rules": [{"pattern": "a:*", "access": "user"}]},
        {"extra": 1},
    ],
)
def test_bad_policies_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        ChannelPolicy.from_document(document)


def test_grants() -> None:
    grants = parse_grants({"a:*": ["subscribe"], "b": "*"})
    assert granted_actions(grants, "a:1") == {"subscribe"}
    assert granted_actions(grants, "b") == {"subscribe", "publish", "presence"}
    assert granted_actions(grants, "c") == frozenset()
    assert granted_actions(parse_grants(["x:*"]), "x:y") == {"subscribe", "publish", "presence"}
    assert granted_actions(parse_grants(["x.y"]), "xzy") == frozenset()  # literal, not regex
    for bad in ("a", [1], {"a": ["delete"]}, {"": "*"}, 5):
        with pytest.raises(PolicyError):
            parse_grants(bad)


def test_origins() -> None:
    assert normalize_origin("HTTPS://App.Example.com:443") == "https://app.example.com"
    assert normalize_origin("http://localhost:5173") == "http://localhost:5173"
    assert normalize_origin("https://a.com/path") is None
    assert parse_allowed_origins(" https://a.com , https://*.b.com ") == "https://a.com,https://*.b.com"
    policy = OriginPolicy("https://a.com,https://*.b.com")
    assert policy.allows("https://a.com") and policy.allows("https://x.b.com")
    assert not policy.allows("https://b.com") and not policy.allows("https://a.com.evil")
    assert policy.allows(None)
    assert OriginPolicy("").allows("https://anything")


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2, burst=3)
    now = bucket.updated
    assert [bucket.take(now) for _ in range(4)] == [True, True, True, False]
    assert bucket.refused == 1
    assert bucket.take(now + 0.5)  # one token back after 1/rate seconds
    assert bucket.refused == 0
    assert [bucket.take(now + 100) for _ in range(4)] == [True, True, True, False]  # capped


def test_connection_gate_reservations() -> None:
    gate = ConnectionGate(per_node=2, per_user=1)
    assert not gate.node_full(1)
    gate.reserve("u")
    assert gate.node_full(1)
    assert gate.user_full("u", 0) and not gate.user_full("v", 0)
    gate.release("u")
    assert not gate.user_full("u", 0)
    assert not ConnectionGate(0, 0).node_full(10**6)


def test_token_sources() -> None:
    headers = [(b"authorization", b"Bearer abc")]
    assert token_from_scope({"headers": headers, "query_string": b"token=xyz"}) == "abc"
    assert token_from_scope({"headers": [], "query_string": b"a=1&token=x%2By"}) == "x+y"
    assert token_from_scope({"headers": [(b"authorization", b"Basic abc")]}) is None


def test_identity_round_trips_through_metadata() -> None:
    auth = Authenticator(secret=SECRET)
    identity = auth.authenticate(hs256(sub="9", channels=["a:*"]))
    again = Identity.from_custom(identity.custom())
    assert (again.subject, again.grants, again.anonymous) == ("9", identity.grants, False)
    assert Identity.from_custom({}).anonymous


def test_log_redaction() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                               '%s - "WebSocket %s" %s', ("1.2.3.4", "/ws?a=1&token=SECRET", 401),
                               None)
    RedactTokenFilter().filter(record)
    assert "SECRET" not in record.getMessage()
    assert "token=***" in record.getMessage()


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
    ("example.com", False),
])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
