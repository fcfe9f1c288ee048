"""A two-node rtforge cluster on a local broker, for cross-node latency.

Brokers come from the tests' provisioning code (``tests/support/brokers.py``,
the ``binary`` way only: a local ``nats-server`` / ``redis-server`` on a free
loopback port, nothing written to disk). The broker and both nodes run on
the server cores. Node A takes the publishes (HTTP API), node B holds the
subscribers, so every delivery crosses the broker.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from . import httpclient
from .procstat import affinity, pin_process
from .servers import CHANNEL, HOST, REPO_ROOT, ServerProcess, Target, free_port

__all__ = ["Cluster", "ClusterUnavailable", "stop_brokers"]

#: brokers started and not yet closed, for cleanup on interruption
_live_brokers: list[Any] = []


def stop_brokers() -> None:
    while _live_brokers:
        _live_brokers.pop().close()


class ClusterUnavailable(Exception):
    """No broker binary, or the cluster did not come up."""


def _brokers_module() -> ModuleType:
    """Load ``tests/support/brokers.py`` by path (not through the
    ``tests.support`` package, whose other modules the bench does not need)."""
    name = "rtforge_bench_test_brokers"
    if name in sys.modules:
        return sys.modules[name]
    path = REPO_ROOT / "tests" / "support" / "brokers.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ClusterUnavailable(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # e.g. pytest missing
        del sys.modules[name]
        raise ClusterUnavailable(f"cannot load {path}: {exc!r}") from exc
    return module


class Cluster:
    """Broker + node A (publish) + node B (subscribers)."""

    def __init__(self, backend: str, log_dir: Path, cores: set[int]) -> None:
        self.backend = backend
        self.log_dir = log_dir
        self.cores = cores
        self.broker: Any = None
        self.broker_pid: int | None = None
        self.node_a: ServerProcess | None = None
        self.node_b: ServerProcess | None = None
        self.target = Target(f"rtforge-{backend}", "rtforge", "", backend=backend)

    async def start(self, target: Target) -> None:
        """Start the broker and both nodes; ``target`` carries the node's
        WebSocket implementation and extra arguments."""
        self.target = Target(f"rtforge-{self.backend}", "rtforge", target.ws_impl,
                             backend=self.backend, rtforge_args=target.rtforge_args)
        brokers = _brokers_module()
        finder = brokers.find_nats_server if self.backend == "nats" else brokers.find_redis_server
        binary = finder()
        if binary is None:
            raise ClusterUnavailable(f"no {self.backend}-server binary found")
        workdir = self.log_dir / f"{self.backend}-broker"
        broker = brokers.ProcessBroker(self.backend, binary, workdir)
        self.broker = broker
        _live_brokers.append(broker)
        # Blocking, but nothing is measured yet; forked from this thread so
        # that the broker inherits the server cores.
        with affinity(self.cores):
            try:
                broker.start()
            except brokers.BrokerUnavailable as exc:
                raise ClusterUnavailable(str(exc)) from exc
        proc = getattr(broker, "_proc", None)
        if proc is not None:
            self.broker_pid = proc.pid
            pin_process(proc.pid, self.cores)
        cluster = f"bench{uuid.uuid4().hex[:8]}"
        for label in ("a", "b"):
            port = free_port()
            node = ServerProcess(
                f"rtforge-{self.backend}-{label}",
                self.target.argv(port, node_id=f"bench-{label}", broker_url=broker.url,
                                 cluster=cluster),
                port, self.log_dir / f"rtforge-{self.backend}-{label}.log", self.cores,
            )
            setattr(self, f"node_{label}", node)
            await node.start(path="/readyz")

    async def wait_subscribers(self, count: int, timeout: float = 20.0) -> float:
        """Wait until node A's replicated view counts ``count`` subscribers;
        returns how long that took."""
        assert self.node_a is not None
        started = time.monotonic()
        seen = -1
        while time.monotonic() - started < timeout:
            response = await httpclient.request(
                HOST, self.node_a.port, "GET", f"/api/channels/{CHANNEL}"
            )
            if response.status == 200:
                seen = int(response.json().get("subscribers", -1))
                if seen == count:
                    return time.monotonic() - started
            await asyncio.sleep(0.1)
        raise ClusterUnavailable(
            f"node A counts {seen} subscribers of {CHANNEL}, expected {count}, after {timeout:g}s"
        )

    def processes(self) -> list[ServerProcess]:
        return [n for n in (self.node_a, self.node_b) if n is not None]

    async def stop(self) -> None:
        for node in self.processes():
            await node.stop()
        if self.broker is not None:
            self.broker.close()
            if self.broker in _live_brokers:
                _live_brokers.remove(self.broker)
