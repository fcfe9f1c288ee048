"""The container image built from ``infra/Dockerfile``.

The image is built for real, on ``$RTFORGE_TEST_BASE_IMAGE`` when it is set
(CI: the registry-free base from ``.ci/build-base-image.sh``), else on
``python:3.11-slim`` when it is present or can be pulled, else on a base that
``.ci/build-base-image.sh`` makes here. Containers run the way the Helm chart
runs them: a read-only root filesystem with only ``/tmp`` writable, no
capabilities, no privilege escalation, the image's non-root user.

These tests need a Docker engine. Without one they FAIL (CI always has one):
start one with ``dockerd >/tmp/dockerd.log 2>&1 &``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest
from support.client import WsClient
from support.helm import CI_VALUES, Helm, helm_binary
from support.nodes import REPO_ROOT
from support.polling import wait_for
from support.tokens import hs256
from websockets.exceptions import InvalidStatus

IMAGE = "rtforge-test/rtforge:local"
BUILD_STAGE = "rtforge-test/rtforge-build:local"
DEFAULT_BASE = "python:3.11-slim"
BUILD_BASE = REPO_ROOT / ".ci" / "build-base-image.sh"
TEST_LABEL = "org.rtforge.test-image=true"
#: How the chart runs the container (helm/rtforge/values.yaml securityContext).
HARDENED = (
    "--read-only", "--tmpfs", "/tmp:rw,nosuid,nodev,size=64m",
    "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
)

pytestmark = pytest.mark.timeout(1200)


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}"
        )
    return result.stdout.strip()


def _image_exists(name: str) -> bool:
    result = subprocess.run(
        ["docker", "image", "inspect", name], capture_output=True, timeout=60, check=False
    )
    return result.returncode == 0


@pytest.fixture(scope="module")
def docker() -> None:
    if shutil.which("docker") is None:
        pytest.fail(
            "the docker CLI is not installed: the image tests need a Docker engine "
            "(Debian: apt-get install docker.io; .ci/run does)",
            pytrace=False,
        )
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            "no Docker engine answers (docker info failed: "
            f"{(result.stderr or result.stdout).strip()[:300]}). The image tests need one: "
            "start it with `dockerd >/tmp/dockerd.log 2>&1 &` (.ci/run does).",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def base_image(docker: None) -> str:
    """The base image infra/Dockerfile is built on (its BASE_IMAGE build argument)."""
    wanted = os.environ.get("RTFORGE_TEST_BASE_IMAGE", "").strip()
    if wanted:
        if not _image_exists(wanted):
            pytest.fail(
                f"RTFORGE_TEST_BASE_IMAGE={wanted} is not an image of this engine; "
                f"make it with {BUILD_BASE.relative_to(REPO_ROOT)}",
                pytrace=False,
            )
        return wanted
    if _image_exists(DEFAULT_BASE):
        return DEFAULT_BASE
    pulled = subprocess.run(
        ["docker", "pull", DEFAULT_BASE], capture_output=True, text=True, timeout=300,
        check=False,
    )
    if pulled.returncode == 0:
        return DEFAULT_BASE
    # No registry: make a base from the Debian archive.
    made = subprocess.run(
        ["bash", str(BUILD_BASE)], capture_output=True, text=True, timeout=900, check=False
    )
    if made.returncode != 0:
        pytest.fail(
            f"{DEFAULT_BASE} cannot be pulled ({pulled.stderr.strip()[:200]}) and "
            f"{BUILD_BASE.name} failed:\n{made.stderr[-3000:]}",
            pytrace=False,
        )
    return made.stdout.strip().splitlines()[-1]


def _build(tag: str, base_image: str, *options: str) -> None:
    """``docker build`` of infra/Dockerfile as ``tag``; the image the tag named
    before is removed when it changed, so that reruns leave no dangling images."""
    before = _docker("image", "inspect", "--format", "{{.Id}}", tag, check=False)
    result = subprocess.run(
        [
            "docker", "build", "--file", "infra/Dockerfile", "--tag", tag,
            "--label", TEST_LABEL, "--build-arg", f"BASE_IMAGE={base_image}", *options, ".",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        # The legacy builder: no buildx plugin needed, nothing pulled but the base.
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"docker build of infra/Dockerfile ({tag}) on {base_image} failed:\n"
            f"{(result.stdout + result.stderr)[-4000:]}",
            pytrace=False,
        )
    after = _docker("image", "inspect", "--format", "{{.Id}}", tag)
    if before.startswith("sha256:") and before != after:
        _docker("image", "rm", before, check=False)


@pytest.fixture(scope="module")
def image(base_image: str) -> str:
    started = time.monotonic()
    # The build stage is tagged too: it is the layer cache of the pip install.
    _build(BUILD_STAGE, base_image, "--target", "build")
    _build(IMAGE, base_image)
    print(f"built {IMAGE} on {base_image} in {time.monotonic() - started:.0f}s")
    return IMAGE


class Container:
    def __init__(self, container_id: str) -> None:
        self.id = container_id
        ports = _docker("port", container_id, "3000/tcp").splitlines()
        port = ports[0].rpartition(":")[2]
        self.http_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    def logs(self) -> str:
        result = subprocess.run(
            ["docker", "logs", self.id], capture_output=True, text=True, timeout=60, check=False
        )
        return result.stdout + result.stderr

    def state(self) -> dict[str, Any]:
        raw = _docker("inspect", "--format", "{{json .State}}", self.id)
        state: dict[str, Any] = json.loads(raw)
        return state

    def wait_healthy(self, timeout: float = 60) -> None:
        def answers() -> bool:
            if not self.state()["Running"]:
                raise AssertionError(f"the container exited:\n{self.logs()[-3000:]}")
            try:
                response = httpx.get(f"{self.http_url}/healthz", timeout=2, trust_env=False)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        try:
            wait_for(answers, timeout=timeout, interval=0.2, message="GET /healthz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()[-3000:]}") from None


@pytest.fixture
def run_container(image: str) -> Iterator[Callable[..., Container]]:
    started: list[str] = []

    def run(
        *options: str, env: dict[str, str] | None = None, args: Sequence[str] = ()
    ) -> Container:
        env_args = [a for k, v in (env or {}).items() for a in ("--env", f"{k}={v}")]
        container_id = _docker(
            "run", "--detach", "--label", TEST_LABEL, "--publish", "127.0.0.1::3000",
            *options, *env_args, image, *args,
        )
        started.append(container_id)
        container = Container(container_id)
        container.wait_healthy()
        return container

    yield run
    for container_id in started:
        _docker("rm", "--force", container_id, check=False)


# -- the image -----------------------------------------------------------------------


def test_image_runs_rtforge_serve_as_a_numeric_non_root_user(image: str) -> None:
    config = json.loads(_docker("image", "inspect", "--format", "{{json .Config}}", image))
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["rtforge"] and config["Cmd"] == ["serve"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["RTFORGE_HOST"] == "0.0.0.0"
    assert env["RTFORGE_PORT"] == "3000"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/tmp"
    assert "3000/tcp" in config["ExposedPorts"]
    # Small: the base, a venv with the wheel and its dependencies, no build tools.
    size = int(_docker("image", "inspect", "--format", "{{.Size}}", image))
    assert size < 350e6, f"the image is {size / 1e6:.0f} MB"


async def test_container_on_a_read_only_root_answers_healthz_and_the_welcome(
    run_container: Callable[..., Container],
) -> None:
    container = run_container(*HARDENED)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        health = await http.get(f"{container.http_url}/healthz")
        ready = await http.get(f"{container.http_url}/readyz")
        metrics = await http.get(f"{container.http_url}/metrics")
    assert health.status_code == 200
    assert ready.status_code == 200, ready.text
    assert metrics.status_code == 200 and "rtforge_" in metrics.text
    async with await WsClient.connect(container.ws_url) as client:
        welcome = client.welcome
        assert welcome is not None
        assert welcome["type"] == "system" and welcome["payload"] == "WebSocket connected"
        assert client.connection_id
        reply = await client.command("subscribe", channel="image:test")
        assert reply["metadata"]["ok"] is True
    logs = container.logs()
    assert "Traceback" not in logs and "Read-only file system" not in logs, logs[-3000:]


async def test_sigterm_closes_sockets_with_1012_and_the_container_exits_cleanly(
    run_container: Callable[..., Container],
) -> None:
    container = run_container(*HARDENED, env={"RTFORGE_DRAIN_TIMEOUT": "5"})
    client = await WsClient.connect(container.ws_url)
    started = time.monotonic()
    stop = asyncio.create_task(asyncio.to_thread(_docker, "stop", "--time", "20", container.id))
    closed = await client.expect_close(timeout=15)
    await stop
    assert closed.code == 1012
    state = container.state()
    assert state["ExitCode"] == 0, container.logs()[-3000:]
    assert time.monotonic() - started < 5 + 5
    assert "draining" in container.logs()


async def test_writes_nothing_outside_tmp(run_container: Callable[..., Container]) -> None:
    """On a writable root, after serving: the file system is unchanged but /tmp."""
    container = run_container("--cap-drop", "ALL")
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        assert (await http.get(f"{container.http_url}/metrics")).status_code == 200
        assert (await http.get(f"{container.http_url}/")).status_code in (200, 404)
    async with await WsClient.connect(container.ws_url + "/image:writes"):
        pass
    changed = [
        line.split(maxsplit=1)[1]
        for line in _docker("diff", container.id).splitlines()
        if line.strip()
    ]
    assert [path for path in changed if path != "/tmp" and not path.startswith("/tmp/")] == []


async def test_container_with_the_charts_settings_requires_a_token(
    run_container: Callable[..., Container], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The environment the Helm chart gives a pod (memory backend values: ConfigMap
    plus the Secret's keys) starts the image, and authentication is on."""
    try:
        helm = Helm(helm_binary(), tmp_path_factory.mktemp("helm-home"))
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"no helm binary: {exc}", pytrace=False)
    manifests = helm.template([CI_VALUES / "values-memory.yaml"])
    (configmap,) = [m for m in manifests if m["kind"] == "ConfigMap"]
    (deployment,) = [m for m in manifests if m["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    secret = "chart-secret-" + uuid.uuid4().hex  # 45 bytes: a valid HS256 key
    env = {**configmap["data"], "RTFORGE_JWT_SECRET": secret, "RTFORGE_API_KEY": "k" * 32}
    user = pod["containers"][0]["securityContext"]["runAsUser"]
    container = run_container(*HARDENED, "--user", f"{user}:{user}", env=env)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
        refused = await http.get(f"{container.http_url}/api/stats")
        stats = await http.get(
            f"{container.http_url}/api/stats", headers={"Authorization": "Bearer " + "k" * 32}
        )
    assert refused.status_code in (401, 403)
    assert stats.status_code == 200 and stats.json()["node_id"]
    with pytest.raises(InvalidStatus, match="401"):
        await WsClient.connect(container.ws_url)
    token = hs256(secret, sub="user-1")
    async with await WsClient.connect(f"{container.ws_url}?token={token}") as client:
        assert client.welcome is not None
        assert client.welcome["payload"] == "WebSocket connected"

    # `helm test`: the chart's test pod, run from the image next to the node.
    (test_pod,) = [m for m in manifests if m["kind"] == "Pod"]
    (tester,) = test_pod["spec"]["containers"]
    tester_env = {"RTFORGE_JWT_SECRET": secret}
    for entry in tester["env"]:
        if "value" in entry:
            tester_env[entry["name"]] = entry["value"]
    tester_env["RTFORGE_URL"] = "http://127.0.0.1:3000"  # the pod's Service, here
    command = [*tester["command"], *tester["args"]]
    output = await asyncio.to_thread(
        _docker,
        "run", "--rm", "--network", f"container:{container.id}", *HARDENED,
        "--user", f"{user}:{user}",
        *[a for k, v in tester_env.items() for a in ("--env", f"{k}={v}")],
        "--entrypoint", command[0], IMAGE, *command[1:],
        timeout=120,
    )
    assert "readyz 200" in output and "welcome " in output, output
