"""Clusters of real ``rtforge serve`` processes on a real broker, for tests.

A :class:`Cluster` is a set of :class:`~support.nodes.NodeProcess` nodes that
share one backplane: three nodes on one NATS or Redis broker, or one node on
the in-memory backend. Behavioural tests address nodes by index with
:meth:`Cluster.node`, which wraps around, so the same test puts its clients
"on three nodes" on NATS and Redis, and on the one node of the memory
backend: the three backends run the very same assertions.

Each cluster gets a cluster name of its own (``--cluster-name``), so nodes of
one cluster never see the state of another on the shared session broker, and
a node killed in one test leaves no trace in the next.

pytest plugin (loaded from ``tests/conftest.py``) with these fixtures:

``cluster``
    module-scoped, parametrized over ``memory``, ``nats`` and ``redis``:
    three nodes per shared backend (one for memory), all ready and seeing
    each other. Tests share it and use unique channel names.
``make_cluster``
    a factory for clusters that live for one test (faults, restarts, a node
    started later): ``make_cluster("nats", nodes=3, lease_ttl=2)``. Every
    node's log is checked for tracebacks at teardown.
``shared_backend``
    ``nats`` and ``redis``: for tests that only mean something with a broker
    (killing one of several nodes, broker outages).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from .brokers import Broker
from .client import Frame, Predicate, WsClient
from .nodes import NodePool, NodeProcess, NodeStartError, free_port
from .polling import eventually

__all__ = [
    "BACKENDS",
    "SHARED_BACKENDS",
    "Cluster",
    "ClusterFactory",
    "cluster",
    "get_json",
    "make_cluster",
    "on_every_node",
    "quiet",
    "shared_backend",
    "subscribe",
    "tagged",
]

BACKENDS = ("memory", "nats", "redis")
SHARED_BACKENDS = ("nats", "redis")
#: nodes per cluster on a shared broker
CLUSTER_SIZE = 3
#: lease of the module-wide clusters: long enough that a busy 2-core machine
#: never expires a live node by accident, short enough to keep tests quick
DEFAULT_LEASE_TTL = 10.0
_READY_TIMEOUT = 30.0


class Cluster:
    """Nodes of one backend that form one cluster."""

    def __init__(
        self,
        backend: str,
        pool: NodePool,
        *,
        broker: Broker | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        **settings: object,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}")
        if (backend == "memory") != (broker is None):
            raise ValueError("a broker is needed exactly for the nats and redis backends")
        self.backend = backend
        self.broker = broker
        self.pool = pool
        self.lease_ttl = lease_ttl
        self.name = f"t{uuid.uuid4().hex[:12]}"
        self.settings = dict(settings)
        self.nodes: list[NodeProcess] = []
        self._ids = 0

    # -- settings ----------------------------------------------------------
    @property
    def shared(self) -> bool:
        """True on a broker: several nodes, eventually consistent counts."""
        return self.broker is not None

    @property
    def broker_url(self) -> str | None:
        return self.broker.url if self.broker is not None else None

    def node_settings(self, **overrides: object) -> dict[str, object]:
        """The flags every node of this cluster starts with."""
        settings: dict[str, object] = {"backend": self.backend, "lease_ttl": self.lease_ttl}
        if self.backend == "nats":
            settings["nats_url"] = self.broker_url
        elif self.backend == "redis":
            settings["redis_url"] = self.broker_url
        if self.shared:
            settings["cluster_name"] = self.name
        settings.update(self.settings)
        settings.update(overrides)
        return settings

    def _next_id(self) -> str:
        self._ids += 1
        return f"{self.name}-{self._ids}"

    # -- nodes -------------------------------------------------------------
    def start_nodes(
        self,
        count: int,
        *,
        ready: bool = True,
        env: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> list[NodeProcess]:
        """Start ``count`` nodes at once and wait until they answer
        ``/healthz`` (and ``/readyz`` with ``ready``). ``overrides`` replace
        the cluster's settings (``None`` leaves a flag out); ``env`` adds
        ``RTFORGE_*`` variables."""
        settings = self.node_settings(**overrides)
        started = [
            self.pool.start(node_id=self._next_id(), wait=False, env=env, **settings)
            for _ in range(count)
        ]
        self.nodes.extend(started)
        for node in started:
            try:
                node.wait_healthy()
            except NodeStartError:
                # Another process took the free port meanwhile: retry elsewhere
                # (NodeProcess.start does the same for nodes started one by one).
                if "address already in use" not in node.log_text().lower():
                    raise
                node.port = free_port()
                node.start()
        if ready:
            for node in started:
                node.wait_ready(_READY_TIMEOUT)
        return started

    def add_node(
        self, *, ready: bool = True, env: Mapping[str, str] | None = None, **overrides: object
    ) -> NodeProcess:
        """One more node in this cluster."""
        return self.start_nodes(1, ready=ready, env=env, **overrides)[0]

    def node(self, index: int) -> NodeProcess:
        """The ``index``-th live node, wrapping around: on the one-node
        memory backend every index is that node."""
        live = self.live_nodes
        return live[index % len(live)]

    @property
    def live_nodes(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.running]

    @property
    def node_ids(self) -> list[str]:
        return sorted(n.node_id for n in self.live_nodes)

    # -- convergence (synchronous: used by fixtures) -------------------------
    def wait_formed(self, timeout: float = _READY_TIMEOUT) -> None:
        """Block until every live node lists exactly the live nodes."""
        expected = self.node_ids
        deadline = time.monotonic() + timeout
        seen: dict[str, object] = {}
        with httpx.Client(trust_env=False, timeout=2.0) as http:
            while True:
                for node in self.live_nodes:
                    try:
                        seen[node.node_id] = http.get(f"{node.http_url}/api/stats").json()["nodes"]
                    except (httpx.HTTPError, ValueError, KeyError) as exc:
                        seen[node.node_id] = repr(exc)
                if all(nodes == expected for nodes in seen.values()):
                    return
                if time.monotonic() >= deadline:
                    raise NodeStartError(
                        f"cluster {self.name} did not form within {timeout:g}s: "
                        f"expected {expected}, nodes saw {seen}"
                    )
                time.sleep(0.05)

    def check_logs(self) -> None:
        for node in self.nodes:
            node.assert_log_clean()


def _close(pool: NodePool) -> None:
    """Stop every node of ``pool`` at once (SIGTERM to all, then wait), then
    let the pool check their logs: N nodes take one shutdown, not N."""
    for node in pool.nodes:
        if node.process is not None and node.running:
            node.process.send_signal(signal.SIGTERM)
    pool.close()

    def __repr__(self) -> str:
        return f"<Cluster {self.backend} {self.name} {self.live_nodes}>"


# -- async helpers for tests ------------------------------------------------


async def get_json(http: httpx.AsyncClient, node: NodeProcess, path: str) -> Any:
    """``GET path`` on ``node``; fails unless it answers 200."""
    response = await http.get(f"{node.http_url}{path}")
    assert response.status_code == 200, (
        f"{node.node_id} GET {path}: {response.status_code} {response.text[:300]}"
    )
    return response.json()


async def on_every_node(
    http: httpx.AsyncClient,
    nodes: Sequence[NodeProcess],
    path: str,
    extract: Callable[[Any], object],
    expected: object,
    *,
    timeout: float = 10.0,
) -> None:
    """Wait until ``extract(GET path)`` equals ``expected`` on every node
    (the cluster's views are eventually consistent)."""
    seen: dict[str, object] = {}

    async def check() -> bool:
        for node in nodes:
            response = await http.get(f"{node.http_url}{path}")
            try:
                seen[node.node_id] = extract(response.json()) if response.is_success else (
                    response.status_code
                )
            except (ValueError, KeyError, TypeError) as exc:
                seen[node.node_id] = repr(exc)
        return all(value == expected for value in seen.values())

    try:
        await eventually(check, timeout=timeout, interval=0.05, message=f"{path} == {expected!r}")
    except AssertionError:
        raise AssertionError(
            f"{path}: expected {expected!r} on every node within {timeout:g}s, saw {seen}"
        ) from None


async def subscribe(client: WsClient, *channels: str) -> None:
    """Subscribe ``client`` to ``channels``; fails unless every reply is ok.
    When this returns, a publish from any node reaches the client."""
    for channel in channels:
        reply = await client.command("subscribe", channel=channel)
        meta = reply.get("metadata") or {}
        assert meta.get("ok") is True, f"subscribe {channel!r} failed: {reply}"
        assert reply["payload"] == f"Subscribed to channel: {channel}", reply


def tagged(tag: str) -> Predicate:
    """Frames whose payload (or event data) is a dict with ``"tag": tag``."""

    def match(frame: Frame) -> bool:
        payload = frame.get("payload")
        if frame.get("type") == "event" and isinstance(payload, dict):
            payload = payload.get("data")
        return isinstance(payload, dict) and payload.get("tag") == tag

    return match


async def quiet(
    clients: Iterable[WsClient], predicate: Predicate | None = None, within: float = 0.4
) -> None:
    """No client gets (another) frame matching ``predicate`` within
    ``within`` seconds; the clients are watched at the same time."""
    await asyncio.gather(*(c.expect_no_frame(within, predicate) for c in clients))


# -- fixtures ---------------------------------------------------------------


def _broker_for(request: pytest.FixtureRequest, backend: str) -> Broker | None:
    if backend == "memory":
        return None
    broker: Broker = request.getfixturevalue(f"{backend}_broker")
    return broker


def _formed(
    backend: str,
    pool: NodePool,
    broker: Broker | None,
    *,
    nodes: int | None,
    lease_ttl: float,
    settings: Mapping[str, object],
) -> Cluster:
    cluster = Cluster(backend, pool, broker=broker, lease_ttl=lease_ttl, **settings)
    count = nodes if nodes is not None else (CLUSTER_SIZE if cluster.shared else 1)
    if count:
        cluster.start_nodes(count)
        cluster.wait_formed()
    return cluster


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
    Cluster
]:
    """Three ready nodes on one broker (one node for ``memory``), for a module."""
    backend: str = request.param
    broker = _broker_for(request, backend)
    pool = NodePool(tmp_path_factory.mktemp(f"cluster-{backend}"))
    try:
        yield _formed(backend, pool, broker, nodes=None, lease_ttl=DEFAULT_LEASE_TTL, settings={})
    finally:
        _close(pool)


class ClusterFactory(Protocol):
    """What ``make_cluster`` is: ``make_cluster(backend, nodes=3, lease_ttl=2, **settings)``.

    ``nodes=0`` makes an empty cluster to start nodes in by hand."""

    def __call__(
        self,
        backend: str,
        *,
        nodes: int | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        **settings: object,
    ) -> Cluster: ...


@pytest.fixture
def make_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClusterFactory]:
    """Clusters that live for one test; their nodes stop at teardown."""
    pools: list[NodePool] = []

    def make(
        backend: str,
        *,
        nodes: int | None = None,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        **settings: object,
    ) -> Cluster:
        broker = _broker_for(request, backend)
        pool = NodePool(Path(tmp_path_factory.mktemp(f"cluster-{backend}")))
        pools.append(pool)
        return _formed(
            backend, pool, broker, nodes=nodes, lease_ttl=lease_ttl, settings=settings
        )

    try:
        yield make
    finally:
        errors: list[str] = []
        for pool in pools:
            try:
                _close(pool)
            except AssertionError as exc:
                errors.append(str(exc))
        if errors:
            pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture(params=SHARED_BACKENDS)
def shared_backend(request: pytest.FixtureRequest) -> str:
    """``nats`` or ``redis``: a backend where several nodes share a broker."""
    backend: str = request.param
    return backend
