"""Latency: paced publishing to N subscribers; p50/p99/p99.9
publish-to-receive, measured on the load side from the send time embedded
in each payload (same clock). Single node, or cross-node: publish on node
A's HTTP API, subscribers on node B, through NATS or Redis."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..cluster import Cluster
from ..httpclient import HttpPool
from ..load import PublishStats, TrackingHub, close_all, publish_paced
from ..servers import HOST, ServerProcess, Target
from .common import Meter, Result, RunContext, connect, guarded

__all__ = ["latency"]


def _percentiles(latencies_ns: Iterable[int]) -> dict[str, float | None]:
    values: list[int] = sorted(latencies_ns)
    if not values:
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None, "mean_ms": None}

    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))] / 1e6, 3)

    return {
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "p999_ms": pick(0.999),
        "max_ms": round(values[-1] / 1e6, 3),
        "mean_ms": round(statistics.fmean(values) / 1e6, 3),
    }


async def latency(
    ctx: RunContext, target: Target, subscribers: int, backend: str | None = None
) -> Result:
    """Paced publishing; publish-to-receive percentiles. ``backend`` given:
    publish on node A, subscribers on node B of a cluster on that broker."""
    name = f"rtforge-{backend}" if backend else target.name
    shown = Target(name, target.kind, target.ws_impl, target.backend, target.rtforge_args)
    return await guarded(
        ctx, f"latency-{subscribers}", shown,
        lambda: _latency(ctx, target, subscribers, backend),
    )


@dataclass
class _Servers:
    """The servers of one latency run: one node, or a cluster."""

    name: str
    publish: ServerProcess
    subscribe: ServerProcess
    processes: list[ServerProcess]
    extra_pids: list[int] = field(default_factory=list)
    cluster: Cluster | None = None

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
        else:
            for server in self.processes:
                await server.stop()


async def _start(
    ctx: RunContext, target: Target, subscribers: int, backend: str | None
) -> _Servers:
    if backend is None:
        server = await ctx.start(target, f"latency{subscribers}")
        return _Servers(target.name, server, server, [server])
    name = f"rtforge-{backend}"
    ctx.display.step(f"{name}: starting broker and two nodes")
    cluster = Cluster(backend, ctx.log_dir / f"latency{subscribers}-{name}",
                      ctx.config.server_cores)
    try:
        await cluster.start(target)
    except Exception:
        await cluster.stop()
        raise
    assert cluster.node_a is not None and cluster.node_b is not None
    pids = [cluster.broker_pid] if cluster.broker_pid is not None else []
    return _Servers(name, cluster.node_a, cluster.node_b, cluster.processes(), pids, cluster)


def _check(hub: TrackingHub, stats: PublishStats) -> str:
    clean = hub.duplicates == 0 and hub.unknown == 0 and hub.lost == 0
    if clean and hub.missing() == 0 and not stats.errors and stats.recipient_mismatches == 0:
        return "passed"
    if clean and not stats.drained:
        # Saturated: frames were still queued when the run stopped waiting
        # (nothing seen lost); publishes still in flight were cut off.
        return "backlog"
    return "failed"


async def _latency(
    ctx: RunContext, target: Target, subscribers: int, backend: str | None
) -> Result:
    sizes = ctx.config.sizes
    total = sizes.latency_warmup + sizes.latency_messages
    servers = await _start(ctx, target, subscribers, backend)
    name = servers.name
    hub = TrackingHub(target.ready_marker, subscribers, total, record_from=sizes.latency_warmup)
    pool = HttpPool(HOST, servers.publish.port, 16)
    clients: list[Any] = []
    view_wait = None
    try:
        clients = (await connect(
            ctx, servers.subscribe.port, target, hub, count=subscribers,
            concurrency=sizes.connect_concurrency,
        )).clients
        if servers.cluster is not None:
            view_wait = round(await servers.cluster.wait_subscribers(subscribers), 3)
        await pool.warm()
        seconds = total / sizes.latency_rate
        ctx.display.step(
            f"{name}: {total} messages at {sizes.latency_rate:g}/s to {subscribers} "
            f"({seconds:.0f} s)", total,
        )
        with Meter(servers.processes, servers.extra_pids) as meter:
            stats = await publish_paced(
                pool, target.publish_path, hub, total, rate=sizes.latency_rate, pad=ctx.pad,
                drain_timeout=15.0, on_progress=ctx.display.update,
            )
    finally:
        pool.close()
        await close_all(clients)
        await servers.stop()
    labels = [s.name for s in servers.processes] + ["broker"] * len(servers.extra_pids)
    return {
        "target": name,
        "path": f"cross-node via {backend}" if backend else "single node",
        "ws_impl": target.ws_impl,
        "subscribers": subscribers,
        "rate": sizes.latency_rate,
        "messages": sizes.latency_messages,
        "deliveries_per_s": round(subscribers * sizes.latency_rate),
        "samples": len(hub.latencies_ns),
        **_percentiles(hub.latencies_ns),
        "missing": hub.missing(),
        "duplicates": hub.duplicates,
        "dropped_connections": hub.lost,
        "publish_errors": dict(stats.errors),
        "recipient_mismatches": stats.recipient_mismatches,
        "max_schedule_lag_ms": round(stats.max_lag_ms, 2),
        "max_pool_wait_ms": round(stats.max_pool_wait_ms, 2),
        "view_convergence_s": view_wait,
        "drained": stats.drained,
        "delivery_check": _check(hub, stats),
        **meter.shares(),
        "server_cpu_pct_by_process": {
            label: round(100 * cpu / max(meter.wall, 1e-9), 1)
            for label, cpu in zip(labels, meter.server, strict=True)
        },
        "disturbed": ctx.disturbed(f"latency-{subscribers}", name, meter),
        "log_problems": ctx.check_logs(f"latency-{subscribers}", servers.processes),
    }
