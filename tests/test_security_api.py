"""The HTTP API's key, the loopback rule, and the security settings and CLI."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
from support.client import WsConnect
from support.metrics import metric_value, scrape
from support.nodes import NodeFactory, NodeProcess
from support.tokens import SECRET

from service.cli import main

API_KEY = "api-key-" + "k" * 24

API_REQUESTS = [
    ("GET", "/api/stats", None),
    ("GET", "/api/channels", None),
    ("GET", "/api/connections", None),
    ("POST", "/api/broadcast", {"message": {"type": "text", "payload": "hi"}}),
    ("POST", "/api/channels/c1/publish", {"type": "text", "payload": "hi"}),
    ("PUT", "/api/channels/c1", {"description": "d"}),
]


@pytest.fixture(scope="module")
def node(module_start_node: NodeFactory) -> NodeProcess:
    return module_start_node(api_key=API_KEY)


async def call(http: httpx.AsyncClient, node: NodeProcess, method: str, path: str,
               body: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
    return await http.request(method, f"{node.http_url}{path}", json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), API_REQUESTS)
async def test_api_without_the_key_gets_401(
    node: NodeProcess, http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await call(http, node, method, path, body)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await call(http, node, method, path, body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    basic = await call(http, node, method, path, body,
                       headers={"Authorization": f"Basic {API_KEY}"})
    assert basic.status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), API_REQUESTS)
async def test_api_with_the_key_answers(
    node: NodeProcess, http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await call(http, node, method, path, body,
                          headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code in (200, 201), response.text


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_health_and_metrics_stay_open(
    node: NodeProcess, http: httpx.AsyncClient, path: str
) -> None:
    assert (await http.get(f"{node.http_url}{path}")).status_code == 200


async def test_refusals_are_counted(node: NodeProcess, http: httpx.AsyncClient) -> None:
    before = metric_value(await scrape(http, node.http_url), "rtforge_api_auth_failures_total")
    await http.get(f"{node.http_url}/api/stats")
    after = metric_value(await scrape(http, node.http_url), "rtforge_api_auth_failures_total")
    assert after == before + 1


async def test_websockets_do_not_need_the_api_key(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    client = await ws_connect(node.ws_url)
    assert (await client.command("ping"))["type"] == "pong"


async def test_without_a_key_beyond_loopback_the_api_is_refused(
    start_node: NodeFactory, http: httpx.AsyncClient, ws_connect: WsConnect
) -> None:
    node = start_node(host="0.0.0.0")
    response = await http.get(f"{node.http_url}/api/stats")
    assert response.status_code == 403
    assert response.json()["error"] == "api_key_required"
    assert "--api-key" in response.json()["detail"]
    assert (await http.get(f"{node.http_url}/healthz")).status_code == 200
    client = await ws_connect(node.ws_url)
    assert (await client.command("ping"))["type"] == "pong"


async def test_with_a_key_beyond_loopback_the_api_answers(
    start_node: NodeFactory, http: httpx.AsyncClient
) -> None:
    node = start_node(host="0.0.0.0", env={"RTFORGE_API_KEY": API_KEY})
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert (await http.get(f"{node.http_url}/api/stats", headers=headers)).status_code == 200
    assert (await http.get(f"{node.http_url}/api/stats")).status_code == 401


# -- CLI (in-process: service.cli.main) -----------------------------------------------------


@pytest.fixture
def rtforge(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """``rtforge(*args, env={...})`` -> (exit code, stdout, stderr)."""
    for name in list(os.environ):
        if name.startswith("RTFORGE_"):
            monkeypatch.delenv(name)

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            for name in env or {}:
                monkeypatch.delenv(name)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_stats_command_sends_the_api_key(node: NodeProcess, rtforge: Any) -> None:
    code, out, err = rtforge("websocket:stats", "--url", node.http_url, "--json",
                             env={"RTFORGE_API_KEY": API_KEY})
    assert code == 0, err
    assert json.loads(out)["node_id"] == node.node_id
    code, out, err = rtforge("websocket:stats", "--url", node.http_url)
    assert code != 0
    assert "401" in err


def test_info_says_loudly_when_the_node_runs_open(rtforge: Any) -> None:
    code, out, err = rtforge("websocket:info", "--json")
    assert code == 0, err
    warnings = " ".join(json.loads(out)["warnings"])
    assert "AUTHENTICATION IS OFF" in warnings
    assert "every Origin is accepted" in warnings
    _, out, _ = rtforge("websocket:info", "--json", "--host", "0.0.0.0")
    assert "HTTP API is DISABLED" in " ".join(json.loads(out)["warnings"])
    _, out, _ = rtforge("websocket:info")
    assert "WARNING: AUTHENTICATION IS OFF" in out


def test_info_masks_secrets_and_drops_warnings_once_configured(rtforge: Any) -> None:
    code, out, err = rtforge(
        "websocket:info", "--json", "--allowed-origins", "https://app.example.com",
        env={"RTFORGE_JWT_SECRET": SECRET, "RTFORGE_API_KEY": API_KEY},
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["settings"]["jwt_secret"] == "***"
    assert info["settings"]["api_key"] == "***"
    assert SECRET not in out and API_KEY not in out
    assert not [w for w in info["warnings"] if "AUTHENTICATION" in w or "Origin" in w]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jwt-secret", "short"], "--jwt-secret='***': must be at least 32 bytes"),
        (["--jwt-algorithms", "none", "--jwt-secret", SECRET], "must not contain 'none'"),
        (["--jwt-algorithms", "RS256", "--jwt-secret", SECRET], "needs --jwt-public-key"),
        (["--jwt-audience", "x"], "need --jwt-secret or --jwt-public-key"),
        (["--allow-anonymous", "on"], "--allow-anonymous needs"),
        (["--jwt-public-key", "/nonexistent.pem"], "must be a readable PEM file"),
        (["--allowed-origins", "*"], "must list origins"),
        (["--allowed-origins", "evil.test"], "must be origins like"),
        (["--channel-policy", "{not json"], "must be a valid channel policy"),
        (["--channel-policy", '{"rules": [{"pattern": "a:*", "access": "everyone"}]}'],
         "must be a valid channel policy: rules[0].access must be one of"),
        (["--channel-policy", '{"rules": [{"pattern": "a:*", "access": "user"}]}'],
         "needs a placeholder"),
        (["--channel-policy", "/nonexistent/policy.toml"], "cannot be read"),
        (["--rate-limit", "-1"], "must be a number of at least 0"),
        (["--max-connections", "-3"], "must be an integer of at least 0"),
        (["--max-channel-name-length", "300"], "must be between 1 and 255"),
    ],
)
def test_bad_security_settings_exit_with_one_line(
    rtforge: Any, args: list[str], message: str
) -> None:
    code, _, err = rtforge("websocket:info", *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("rtforge: error:")
    assert message in lines[0], lines[0]
