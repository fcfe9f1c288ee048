"""JWT authentication and channel authorization over real sockets.

The module's node requires an HS256 token with audience and issuer and runs
a channel policy from a file; other nodes cover RS256/ES256 keys and
anonymous access. Every refusal happens before the upgrade with HTTP 401."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from support.client import WsClient, WsConnect
from support.metrics import metric_value, scrape
from support.nodes import NodeFactory, NodeProcess
from support.tokens import SECRET, ec_key_pair, hs256, rsa_key_pair, unsigned_token
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

AUD = "rtforge-test"
ISS = "https://issuer.test"

POLICY = {
    "default": "authenticated",
    "rules": [
        {"pattern": "notifications:user-{sub}", "subscribe": "user", "presence": "user",
         "publish": "deny"},
        {"pattern": "public:*", "access": "public", "publish": "authenticated"},
        {"pattern": "news:*", "subscribe": "authenticated", "publish": "granted",
         "presence": "deny"},
        {"pattern": "admin:*", "access": "granted"},
        {"pattern": "tenant:{tenant}:*", "access": "user"},
    ],
}


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_text(json.dumps(POLICY))
    return path


@pytest.fixture(scope="module")
def node(module_start_node: NodeFactory, policy_file: Path) -> NodeProcess:
    return module_start_node(
        jwt_secret=SECRET, jwt_audience=AUD, jwt_issuer=ISS, jwt_leeway=0,
        channel_policy=policy_file,
    )


def token(sub: str = "123", **claims: Any) -> str:
    claims.setdefault("aud", AUD)
    claims.setdefault("iss", ISS)
    return hs256(sub=sub, **claims)


async def connect_as(ws_connect: WsConnect, node: NodeProcess, sub: str = "123",
                     **claims: Any) -> WsClient:
    return await ws_connect(f"{node.ws_url}?token={token(sub, **claims)}")


async def refusal(url: str, **options: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as info:
        await WsClient.connect(url, **options)
    response = info.value.response
    body = bytes(response.body or b"")
    is_json = response.headers.get("content-type") == "application/json"
    return response.status_code, json.loads(body) if is_json else {"text": body.decode()}


def meta(frame: dict[str, Any]) -> dict[str, Any]:
    return frame.get("metadata") or {}


async def ok(client: WsClient, command: str, **fields: Any) -> dict[str, Any]:
    reply = await client.command(command, **fields)
    assert meta(reply)["ok"] is True, reply
    return reply


async def forbidden(client: WsClient, command: str, **fields: Any) -> None:
    reply = await client.command(command, **fields)
    assert meta(reply)["ok"] is False, reply
    assert meta(reply)["error"] == "forbidden", reply


# -- authentication -----------------------------------------------------------------


async def test_missing_token_is_refused_before_the_upgrade(node: NodeProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        await WsClient.connect(node.ws_url)
    response = info.value.response
    assert response.status_code == 401
    assert json.loads(bytes(response.body or b""))["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _wrong_secret() -> str:
    return token(secret="another-secret-" + "y" * 40)


BAD_TOKENS = {
    "expired": (lambda: token(exp=int(time.time()) - 60), "expired"),
    "wrong_signature": (_wrong_secret, "signature"),
    "wrong_audience": (lambda: token(aud="someone-else"), "audience"),
    "no_audience": (lambda: hs256(sub="123", iss=ISS), "claims"),
    "wrong_issuer": (lambda: token(iss="https://evil.test"), "issuer"),
    "alg_none": (lambda: unsigned_token(sub="123", aud=AUD, iss=ISS), "algorithm"),
    "alg_none_with_signature": (
        lambda: unsigned_token(sub="123", aud=AUD, iss=ISS) + "c2lnbmF0dXJl", "algorithm"),
    "hs512": (lambda: jwt.encode({"sub": "1", "aud": AUD, "iss": ISS,
                                  "exp": int(time.time()) + 60}, SECRET, algorithm="HS512"),
              "algorithm"),
    "not_yet_valid": (lambda: token(nbf=int(time.time()) + 600), "not_yet_valid"),
    "no_exp": (lambda: jwt.encode({"sub": "1", "aud": AUD, "iss": ISS}, SECRET,
                                  algorithm="HS256"), "claims"),
    "sub_not_string": (lambda: jwt.encode({"sub": 123, "aud": AUD, "iss": ISS,
                                           "exp": int(time.time()) + 60}, SECRET,
                                          algorithm="HS256"), "claims"),
    "bad_channels_claim": (lambda: token(channels="admin:*"), "claims"),
    "garbage": (lambda: "not-a-jwt", "malformed"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_bad_tokens_are_refused_with_401(
    node: NodeProcess, http: httpx.AsyncClient, case: str
) -> None:
    make, reason = BAD_TOKENS[case]
    before = metric_value(await scrape(http, node.http_url), "rtforge_auth_failures_total",
                          reason=reason)
    status, body = await refusal(f"{node.ws_url}?token={make()}")
    assert status == 401
    assert body["error"] == "unauthorized"
    assert body["detail"]
    after = metric_value(await scrape(http, node.http_url), "rtforge_auth_failures_total",
                         reason=reason)
    assert after == before + 1


@pytest.mark.parametrize("where", ["query", "header"])
async def test_a_handshake_over_8_kib_is_answered_not_left_hanging(
    node: NodeProcess, where: str
) -> None:
    huge = "a" * 9000
    if where == "query":
        status, _ = await refusal(f"{node.ws_url}?token={huge}")
    else:
        status, _ = await refusal(
            node.ws_url, additional_headers={"Authorization": f"Bearer {huge}"}
        )
    assert status in (414, 431)


async def test_bad_token_in_the_header_is_refused_too(node: NodeProcess) -> None:
    status, _ = await refusal(
        node.ws_url, additional_headers={"Authorization": f"Bearer {_wrong_secret()}"}
    )
    assert status == 401


async def test_token_in_header_or_query_lands_in_metadata(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    via_query = await connect_as(ws_connect, node, "123", name="Ada")
    via_header = await ws_connect(
        node.ws_url, additional_headers={"Authorization": f"Bearer {token('456')}"}
    )
    for client, sub in ((via_query, "123"), (via_header, "456")):
        info = (await http.get(f"{node.http_url}/api/connections/{client.connection_id}")).json()
        assert info["custom"]["sub"] == sub
        assert info["custom"]["claims"]["aud"] == AUD
        assert info["custom"]["claims"]["iss"] == ISS
    info = (await http.get(f"{node.http_url}/api/connections/{via_query.connection_id}")).json()
    assert info["custom"]["claims"]["name"] == "Ada"


async def test_token_does_not_appear_in_the_log(node: NodeProcess, ws_connect: WsConnect) -> None:
    secret_token = token("log-check")
    client = await ws_connect(f"{node.ws_url}?token={secret_token}")
    await client.sync()
    assert secret_token not in node.log_text()
    assert "token=***" in node.log_text()


async def test_expired_token_closes_the_connection_with_4001(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(f"{node.ws_url}?token={token('short', exp=int(time.time()) + 2)}")
    await ok(client, "subscribe", channel="public:expiry")
    closed = await client.expect_close(timeout=6)
    assert closed.code == 4001


# -- channel authorization ------------------------------------------------------------


async def test_user_scoped_channel(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    client = await connect_as(ws_connect, node, "123")
    await ok(client, "subscribe", channel="notifications:user-123")
    await forbidden(client, "subscribe", channel="notifications:user-124")
    await ok(client, "presence", channel="notifications:user-123")
    await forbidden(client, "presence", channel="notifications:user-124")
    await forbidden(client, "publish", channel="notifications:user-123", data="spoof")
    # the HTTP API bypasses the channel policy
    response = await http.post(f"{node.http_url}/api/channels/notifications:user-123/publish",
                               json={"type": "json", "payload": {"n": 1}})
    assert response.json() == {"recipients": 1}
    frame = await client.recv_until(lambda f: f.get("channel") == "notifications:user-123")
    assert frame["payload"] == {"n": 1}


async def test_forbidden_channel_in_the_url_keeps_the_connection(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    url = node.ws_channel_url("notifications:user-124") + f"?token={token('123')}"
    client = await ws_connect(url)
    reply = await client.recv_until(lambda f: meta(f).get("command") == "subscribe")
    assert meta(reply)["error"] == "forbidden"
    assert (await client.command("ping"))["type"] == "pong"


async def test_publish_and_presence_follow_the_policy(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    reader = await connect_as(ws_connect, node, "r1")
    writer = await connect_as(ws_connect, node, "w1", channels={"news:*": ["publish"]})
    await ok(reader, "subscribe", channel="news:today")
    await forbidden(reader, "publish", channel="news:today", data="no grant")
    await forbidden(reader, "presence", channel="news:today")
    reply = await ok(writer, "publish", channel="news:today", data="headline")
    assert meta(reply)["recipients"] == 1
    frame = await reader.recv_until(lambda f: f.get("channel") == "news:today")
    assert frame["payload"] == "headline"
    before = await scrape(http, node.http_url)
    await forbidden(writer, "presence", channel="news:today")  # deny: nobody
    after = await scrape(http, node.http_url)
    name = "rtforge_policy_denials_total"
    assert metric_value(after, name, action="presence") == metric_value(
        before, name, action="presence") + 1


async def test_granted_channels_claim(node: NodeProcess, ws_connect: WsConnect) -> None:
    listed = await connect_as(ws_connect, node, "a1", channels=["admin:ops"])
    await ok(listed, "subscribe", channel="admin:ops")
    await ok(listed, "publish", channel="admin:ops", data=1)
    await forbidden(listed, "subscribe", channel="admin:other")
    scoped = await connect_as(ws_connect, node, "a2", channels={"admin:*": ["subscribe"]})
    await ok(scoped, "subscribe", channel="admin:anything")
    await forbidden(scoped, "presence", channel="admin:anything")
    nobody = await connect_as(ws_connect, node, "a3")
    await forbidden(nobody, "subscribe", channel="admin:ops")


async def test_placeholder_bound_to_a_custom_claim(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await connect_as(ws_connect, node, "t1", tenant="acme")
    await ok(client, "subscribe", channel="tenant:acme:orders")
    await forbidden(client, "subscribe", channel="tenant:globex:orders")


async def test_private_channel_needs_an_explicit_grant(
    node: NodeProcess, ws_connect: WsConnect, http: httpx.AsyncClient
) -> None:
    response = await http.put(f"{node.http_url}/api/channels/room:secret",
                              json={"is_private": True})
    assert response.status_code in (200, 201)
    member = await connect_as(ws_connect, node, "m1", channels=["room:secret"])
    outsider = await connect_as(ws_connect, node, "m2")
    await forbidden(outsider, "subscribe", channel="room:secret")
    await forbidden(outsider, "publish", channel="room:secret", data=1)
    await ok(member, "subscribe", channel="room:secret")
    await ok(member, "presence", channel="room:secret")
    listing = await ok(outsider, "list_channels")
    assert "room:secret" not in listing["payload"]["channels"]
    listing = await ok(member, "list_channels")
    assert "room:secret" in listing["payload"]["channels"]


async def test_list_channels_hides_other_users_channels(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    other = await connect_as(ws_connect, node, "999")
    await ok(other, "subscribe", channel="notifications:user-999")
    me = await connect_as(ws_connect, node, "123")
    names = (await ok(me, "list_channels"))["payload"]["channels"]
    assert "notifications:user-999" not in names
    assert "notifications:user-999" in (await ok(other, "list_channels"))["payload"]["channels"]


# -- anonymous access and public keys ----------------------------------------------------


async def test_anonymous_clients_get_public_channels_only(
    start_node: NodeFactory, ws_connect: WsConnect
) -> None:
    node = start_node(jwt_secret=SECRET, allow_anonymous="on",
                      channel_policy=json.dumps(POLICY))
    anonymous = await ws_connect(node.ws_url)
    await ok(anonymous, "subscribe", channel="public:lobby")
    await ok(anonymous, "presence", channel="public:lobby")
    await forbidden(anonymous, "publish", channel="public:lobby", data="hi")
    await forbidden(anonymous, "subscribe", channel="chat:room1")
    await forbidden(anonymous, "subscribe", channel="notifications:user-123")
    member = await ws_connect(f"{node.ws_url}?token={hs256(sub='5')}")
    await ok(member, "publish", channel="public:lobby", data="hi")
    status, _ = await refusal(f"{node.ws_url}?token={hs256(SECRET + 'x', sub='5')}")
    assert status == 401  # a bad token is refused even where anonymous is fine


async def test_rs256_with_a_public_key_file(
    start_node: NodeFactory, ws_connect: WsConnect, tmp_path: Path
) -> None:
    pair = rsa_key_pair()
    node = start_node(jwt_public_key=pair.write_public(tmp_path))
    client = await ws_connect(f"{node.ws_url}?token={pair.sign(sub='42')}")
    await ok(client, "subscribe", channel="notifications:user-42")
    await forbidden(client, "subscribe", channel="notifications:user-43")
    # another key's signature, and the public key abused as an HMAC secret
    status, _ = await refusal(f"{node.ws_url}?token={rsa_key_pair().sign(sub='42')}")
    assert status == 401
    confused = jwt.encode({"sub": "42", "exp": int(time.time()) + 60}, "x" * 32,
                          algorithm="HS256")
    status, body = await refusal(f"{node.ws_url}?token={confused}")
    assert status == 401 and "algorithm" in body["detail"]
    status, _ = await refusal(f"{node.ws_url}?token={hs256(sub='42')}")
    assert status == 401


async def test_es256_with_an_inline_public_key_from_the_environment(
    start_node: NodeFactory, ws_connect: WsConnect
) -> None:
    pair = ec_key_pair()
    node = start_node(env={"RTFORGE_JWT_PUBLIC_KEY": pair.public_pem.decode()})
    client = await ws_connect(
        node.ws_url, additional_headers={"Authorization": f"Bearer {pair.sign(sub='7')}"}
    )
    await ok(client, "subscribe", channel="notifications:user-7")
    status, _ = await refusal(f"{node.ws_url}?token={ec_key_pair().sign(sub='7')}")
    assert status == 401
