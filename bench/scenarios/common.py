"""What every scenario shares: the run context (config, display, logs,
anomalies), the CPU meter of a measured phase, and connecting subscribers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import BenchConfig
from ..load import ConnectResult, Hub, open_clients
from ..procstat import cpu_seconds, runqueue_wait_seconds, self_cpu_seconds
from ..progress import Display
from ..servers import HOST, ServerProcess, Target, free_port

__all__ = ["Meter", "Result", "RunContext", "connect", "guarded"]

Result = dict[str, Any]


@dataclass
class RunContext:
    """One bench invocation as the scenarios see it."""

    config: BenchConfig
    display: Display
    log_dir: Path
    anomalies: list[str] = field(default_factory=list)

    @property
    def pad(self) -> str:
        return "x" * self.config.sizes.payload_bytes

    async def start(self, target: Target, label: str, **argv: Any) -> ServerProcess:
        port = free_port()
        server = ServerProcess(
            target.name, target.argv(port, **argv), port,
            self.log_dir / f"{label}-{target.name}.log", self.config.server_cores,
        )
        await server.start()
        return server

    def disturbed(self, label: str, name: str, meter: Meter) -> str | None:
        """Note (as an anomaly) a measured phase that other processes disturbed."""
        why = meter.disturbed()
        if why is not None:
            self.anomalies.append(f"{label}/{name}: numbers less reliable: {why}")
        return why

    def check_logs(self, label: str, servers: list[ServerProcess]) -> list[str]:
        found = []
        for server in servers:
            lines = server.problems()
            if lines:
                found.append(f"{label}/{server.name}: log {server.log_path} has: {lines[0]}")
            if server.killed:
                found.append(f"{label}/{server.name}: did not stop within 15 s of SIGTERM")
        self.anomalies.extend(found)
        return found


class Meter:
    """Server and load CPU seconds, their runqueue waits and wall time over
    one measured phase."""

    def __init__(self, servers: list[ServerProcess], pids: list[int] | None = None) -> None:
        self.pids = [s.pid for s in servers] + list(pids or [])
        self.deliveries = 0
        self.server: list[float] = []

    def _sample(self) -> tuple[list[float], float, float, float, float]:
        return (
            [cpu_seconds(p) for p in self.pids],
            sum(runqueue_wait_seconds(p) for p in self.pids),
            self_cpu_seconds(),
            runqueue_wait_seconds(),
            time.perf_counter(),
        )

    def __enter__(self) -> Meter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        start = self._start
        self.server = [b - a for a, b in zip(start[0], end[0], strict=True)]
        self.server_wait = end[1] - start[1]
        self.load = end[2] - start[2]
        self.load_wait = end[3] - start[3]
        self.wall = end[4] - start[4]

    def shares(self) -> dict[str, Any]:
        wall = max(self.wall, 1e-9)
        return {
            "wall_s": round(self.wall, 3),
            "server_cpu_s": round(sum(self.server), 3),
            "server_cpu_pct": round(100 * sum(self.server) / wall, 1),
            "server_runqueue_wait_pct": round(100 * self.server_wait / wall, 1),
            "load_cpu_s": round(self.load, 3),
            "load_cpu_pct": round(100 * self.load / wall, 1),
            "load_runqueue_wait_pct": round(100 * self.load_wait / wall, 1),
        }

    def disturbed(self, limit_pct: float = 10.0) -> str | None:
        """Why this phase's numbers may be off (other processes took the
        pinned cores), or None."""
        shares = self.shares()
        worst = max(shares["server_runqueue_wait_pct"], shares["load_runqueue_wait_pct"])
        if worst <= limit_pct:
            return None
        return (
            f"waited for their cores: server {shares['server_runqueue_wait_pct']}%, "
            f"load {shares['load_runqueue_wait_pct']}% of the measured "
            f"{shares['wall_s']} s (other processes were running there)"
        )


async def connect(
    ctx: RunContext, server_port: int, target: Target, hub: Hub, *, count: int, concurrency: int,
    strict: bool = True,
) -> ConnectResult:
    """Connect ``count`` subscribers; ``strict``: any failure fails the run."""
    ctx.display.step(f"{target.name}: connecting {count} subscribers", count)
    result = await open_clients(
        HOST, server_port, target.ws_path, hub, count,
        concurrency=concurrency, on_progress=ctx.display.update,
    )
    if result.failures and strict:
        raise RuntimeError(
            f"{result.opened}/{count} connected; failures: {dict(result.failures.most_common(3))}"
        )
    if hub.ready < result.opened or (strict and hub.ready < count):
        raise RuntimeError(f"only {hub.ready}/{count} clients confirmed the subscription")
    return result


async def guarded(
    ctx: RunContext, label: str, target: Target, body: Callable[[], Awaitable[Result]]
) -> Result:
    try:
        return await body()
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        ctx.anomalies.append(f"{label}/{target.name}: run failed: {message[:500]}")
        return {"target": target.name, "error": message[:2000]}
