"""The ``rtforge`` command: bad flags and variables end with one clear line;
``websocket:info`` and ``websocket:stats`` print what operators need."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping

import httpx
import pytest
from support.client import WsConnect
from support.nodes import REPO_ROOT, NodeFactory, NodeProcess, NodeStartError, free_port
from support.polling import eventually

from service.cli import main

pytestmark = pytest.mark.timeout(60)


def rtforge(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m service.cli ARGS`` with a clean RTFORGE_* environment."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RTFORGE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *mentions: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for mention in mentions:
        assert mention in lines[0], lines[0]
    return lines[0]


# -- serve: bad flags and variables ----------------------------------------------------


def run_main(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``service.cli.main(ARGS)`` in this process (fast), as a completed process."""
    for name in [k for k in os.environ if k.startswith("RTFORGE_")]:
        monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    captured = capsys.readouterr()
    code = exited.value.code
    return subprocess.CompletedProcess(
        list(args), code if isinstance(code, int) else 1, captured.out, captured.err
    )


def test_serve_with_a_bad_flag_fails_with_one_line_in_a_real_process() -> None:
    assert_one_line_failure(rtforge("serve", "--port", "abc"), "--port")


def test_serve_with_a_bad_variable_fails_with_one_line_in_a_real_process() -> None:
    assert_one_line_failure(rtforge("serve", env={"RTFORGE_BACKEND": "mongo"}), "RTFORGE_BACKEND")


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (["--port", "abc"], "--port"),
        (["--port", "99999"], "--port"),
        (["--backend", "kafka"], "--backend"),
        (["--heartbeat-interval", "-1"], "--heartbeat-interval"),
        (["--heartbeat-interval", "5", "--heartbeat-timeout", "2"], "--heartbeat-timeout"),
        (["--max-message-size", "big"], "--max-message-size"),
        (["--lease-ttl", "0"], "--lease-ttl"),
        (["--node-id", "no spaces allowed"], "--node-id"),
        (["--nats-url", "http://wrong-scheme"], "--nats-url"),
        (["--redis-url", "redis://"], "--redis-url"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--port"], "--port"),
    ],
)
def test_serve_with_a_bad_flag_fails_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    args: list[str], mention: str,
) -> None:
    assert_one_line_failure(run_main(capsys, monkeypatch, "serve", *args), mention)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RTFORGE_PORT", "http"),
        ("RTFORGE_BACKEND", "mongo"),
        ("RTFORGE_HEARTBEAT_TIMEOUT", "never"),
        ("RTFORGE_NODE_ID", "bad/id"),
        ("RTFORGE_MAX_MESSAGE_SIZE", "-5"),
    ],
)
def test_serve_with_a_bad_variable_fails_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str,
) -> None:
    result = run_main(capsys, monkeypatch, "serve", env={variable: value})
    assert_one_line_failure(result, variable)


def test_a_bad_secret_is_not_printed() -> None:
    line = assert_one_line_failure(
        rtforge("serve", "--redis-url", "redis://user:hunter2@:badport/0"), "--redis-url"
    )
    assert "hunter2" not in line


def test_unknown_command_fails_with_one_line() -> None:
    assert_one_line_failure(rtforge("websocket:explode"))


def test_serve_on_a_port_in_use_fails_without_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = rtforge("serve", "--port", str(port))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "address already in use" in result.stderr.lower()


def test_version() -> None:
    result = rtforge("--version")
    assert result.returncode == 0
    assert "0.1.0" in result.stdout


# -- serve honours flags and variables -----------------------------------------------------


async def test_serve_reads_rtforge_variables_and_flags_win(
    start_node: NodeFactory, ws_connect: WsConnect
) -> None:
    node = start_node(env={"RTFORGE_MAX_SUBSCRIPTIONS": "1", "RTFORGE_MAX_MESSAGE_SIZE": "1024"})
    client = await ws_connect(node.ws_url)
    assert (await client.command("subscribe", channel="one"))["metadata"]["ok"] is True
    refused = await client.command("subscribe", channel="two")
    assert refused["metadata"]["error"] == "limit_reached"
    await client.send_text("x" * 1025)
    assert (await client.expect_close()).code == 1009

    flagged = start_node(max_subscriptions=2, env={"RTFORGE_MAX_SUBSCRIPTIONS": "1"})
    client = await ws_connect(flagged.ws_url)
    for name in ("one", "two"):
        assert (await client.command("subscribe", channel=name))["metadata"]["ok"] is True


# -- websocket:info ---------------------------------------------------------------------------


def test_info_prints_version_endpoints_and_settings() -> None:
    result = rtforge("websocket:info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "0.1.0" in out
    for endpoint in (
        "ws://127.0.0.1:3000/ws",
        "ws://127.0.0.1:3000/ws/{channel}",
        "http://127.0.0.1:3000/healthz",
        "http://127.0.0.1:3000/readyz",
        "http://127.0.0.1:3000/metrics",
        "http://127.0.0.1:3000/api",
    ):
        assert endpoint in out, endpoint
    for setting in ("backend", "heartbeat_interval", "heartbeat_timeout", "max_message_size"):
        assert setting in out, setting


def test_info_masks_the_redis_password() -> None:
    result = rtforge("websocket:info", "--redis-url", "redis://admin:s3cret-pw@db.internal:6380/2")
    assert result.returncode == 0, result.stderr
    assert "s3cret-pw" not in result.stdout
    assert "redis://admin:***@db.internal:6380/2" in result.stdout


def test_info_as_json_reflects_variables_and_masks_secrets() -> None:
    result = rtforge(
        "websocket:info", "--json",
        env={
            "RTFORGE_PORT": "4567",
            "RTFORGE_NODE_ID": "info-node",
            "RTFORGE_NATS_URL": "nats://user:natspw@broker:4222",
            "RTFORGE_REDIS_URL": "redis://:redispw@cache:6379/0",
        },
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["version"] == "0.1.0"
    assert info["settings"]["port"] == 4567
    assert info["settings"]["node_id"] == "info-node"
    assert info["endpoints"]["websocket"] == "ws://127.0.0.1:4567/ws"
    assert "natspw" not in result.stdout
    assert "redispw" not in result.stdout
    assert info["settings"]["redis_url"] == "redis://:***@cache:6379/0"


def test_info_with_a_bad_flag_fails_with_one_line() -> None:
    assert_one_line_failure(rtforge("websocket:info", "--port", "x"), "--port")


# -- websocket:stats --------------------------------------------------------------------------


async def run_async(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(rtforge, *args, env=env)


async def test_stats_of_a_live_node(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    clients = [await ws_connect(node.ws_url) for _ in range(2)]
    await clients[0].command("subscribe", channel="stats:room")
    result = await run_async("websocket:stats", "--url", node.http_url)
    assert result.returncode == 0, result.stderr
    assert node.node_id in result.stdout
    assert "connections" in result.stdout
    assert "channels" in result.stdout


async def test_stats_as_json_counts_live_connections(
    node: NodeProcess, ws_connect: WsConnect
) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:

        async def idle() -> bool:
            response = await http.get(f"{node.http_url}/api/stats")
            return bool(response.json()["connections"] == 0)

        await eventually(idle, timeout=5, message="no connections left from other tests")
    clients = [await ws_connect(node.ws_url) for _ in range(3)]
    await clients[0].command("subscribe", channel="stats:json")
    result = await run_async("websocket:stats", "--json", "--url", node.http_url)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["node_id"] == node.node_id
    assert stats["connections"] == 3
    assert stats["channels"] >= 1


async def test_stats_finds_the_node_from_host_and_port_settings(node: NodeProcess) -> None:
    result = await run_async("websocket:stats", "--json", env={"RTFORGE_PORT": str(node.port)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["node_id"] == node.node_id


def test_stats_against_a_dead_url_fails_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = assert_one_line_failure(rtforge("websocket:stats", "--url", url, "--timeout", "2"))
    assert url in line


def test_stats_with_a_bad_url_fails_with_one_line() -> None:
    assert_one_line_failure(rtforge("websocket:stats", "--url", "ftp://example"), "--url")


def test_the_node_helper_reports_a_failed_start_with_the_log(start_node: NodeFactory) -> None:
    with pytest.raises(NodeStartError) as caught:
        start_node(heartbeat_interval=5, heartbeat_timeout=1)
    assert "exited with code 2" in str(caught.value)
    assert "--heartbeat-timeout" in str(caught.value)
