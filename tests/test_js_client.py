"""The JavaScript client (``clients/js/rtforge.js``) under node's test runner.

The JS tests in ``clients/js/test/*.test.mjs`` run against two real nodes
started here; a :class:`~support.control.NodeControl` server lets them kill,
stop (close code 1012), pause and start those nodes to exercise reconnects
and re-subscribes. Node.js with a ``WebSocket`` global is required (22+, or
20.10+ with ``--experimental-websocket``): without it this test fails, it
never skips.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.control import NodeControl
from support.nodes import REPO_ROOT, NodeFactory, free_port

pytestmark = pytest.mark.slow

JS_DIR = REPO_ROOT / "clients" / "js"
NODE_TIMEOUT = 200.0


def node_command() -> list[str]:
    """``node`` plus the flag that gives it a ``WebSocket`` global, if needed."""
    node = shutil.which("node")
    assert node, (
        "Node.js is not installed: the JavaScript client's tests need it "
        "(Debian: apt-get install nodejs; .ci/run installs it)"
    )
    check = "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run(
            [node, *flags, "-e", check], capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            return [node, *flags]
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    raise AssertionError(
        f"Node.js {version.stdout.strip()} has no WebSocket global: use Node.js 22+, "
        "or 20.10+ (with --experimental-websocket)"
    )


def js_test_files() -> list[Path]:
    files = sorted((JS_DIR / "test").glob("*.test.mjs"))
    assert files, f"no JavaScript tests under {JS_DIR / 'test'}"
    return files


@pytest.mark.timeout(NODE_TIMEOUT + 60)
def test_js_client_under_node_test_runner(start_node: NodeFactory) -> None:
    command = node_command()
    nodes = [start_node(heartbeat_interval=0.2, heartbeat_timeout=1.0) for _ in range(2)]
    with NodeControl(nodes) as control:
        env = {
            "RTFORGE_TEST_WS_URLS": " ".join(n.ws_url for n in nodes),
            "RTFORGE_TEST_HTTP_URLS": " ".join(n.http_url for n in nodes),
            "RTFORGE_TEST_CONTROL": control.url,
            "RTFORGE_TEST_DEAD_URL": f"ws://127.0.0.1:{free_port()}/ws",
        }
        result = subprocess.run(
            [*command, "--test", "--test-concurrency=1", "--test-reporter=spec",
             *map(str, js_test_files())],
            cwd=JS_DIR,
            env={**nodes[0].environment, **env},
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
        )
    output = result.stdout + result.stderr
    print(output)
    assert result.returncode == 0, f"node --test failed (exit {result.returncode}):\n{output}"
    passed = re.search(r"^\S*\s*pass (\d+)$", output, re.MULTILINE)
    assert passed and int(passed.group(1)) > 0, f"no JavaScript test passed:\n{output}"
    assert re.search(r"^\S*\s*fail 0$", output, re.MULTILINE), output
