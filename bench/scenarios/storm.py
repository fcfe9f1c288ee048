"""Connection storm: connect N clients as fast as possible with heartbeats
on (the load answers every ping), hold them, and check that none was
dropped: no client lost its connection, and rtforge counts no heartbeat
timeout and N connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import httpclient
from ..load import Hub, close_all
from ..servers import HOST, Target
from .common import Meter, Result, RunContext, connect, guarded

__all__ = ["storm"]


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def storm(ctx: RunContext, target: Target) -> Result:
    """Connect as fast as possible with heartbeats on; none may drop."""
    return await guarded(ctx, "storm", target, lambda: _storm(ctx, target))


async def _storm(ctx: RunContext, target: Target) -> Result:
    sizes = ctx.config.sizes
    count = sizes.storm_connections
    heartbeat = (sizes.heartbeat_interval, sizes.heartbeat_timeout)
    server = await ctx.start(target, "storm", heartbeat=heartbeat)
    hub = Hub(target.ready_marker, count)
    clients: list[Any] = []
    server_view: dict[str, Any] = {}
    try:
        with Meter([server]) as meter:
            connected = await connect(
                ctx, server.port, target, hub, count=count, concurrency=sizes.storm_concurrency,
                strict=False,
            )
        clients = connected.clients
        ready_s = (connected.all_ready or time.perf_counter()) - connected.started
        ctx.display.step(f"{target.name}: holding {count} connections {sizes.storm_hold:g} s")
        await asyncio.sleep(sizes.storm_hold)
        dropped_client_side = hub.lost
        if target.kind == "rtforge":
            text = (await httpclient.request(HOST, server.port, "GET", "/metrics")).body.decode()
            server_view = {
                "heartbeat_timeouts": _metric(text, "rtforge_heartbeat_timeouts_total"),
                "server_connections": _metric(text, "rtforge_connections"),
                "slow_consumer_disconnects": _metric(
                    text, "rtforge_slow_consumer_disconnects_total"),
            }
    finally:
        await close_all(clients)
        await server.stop()
    pings = sum(c.app_pings + c.control_pings for c in clients)
    timeouts = server_view.get("heartbeat_timeouts")
    server_conns = server_view.get("server_connections")
    passed = (
        connected.opened == count
        and dropped_client_side == 0
        and (timeouts is None or timeouts == 0)
        and (server_conns is None or int(server_conns) == count)
    )
    return {
        "target": target.name,
        "ws_impl": target.ws_impl,
        "connections": count,
        "concurrency": sizes.storm_concurrency,
        "heartbeat": {"interval_s": heartbeat[0], "timeout_s": heartbeat[1]},
        "connects_per_s": round(connected.opened / connected.open_seconds),
        "failed_connects": sum(connected.failures.values()),
        "connect_failures": dict(connected.failures.most_common(5)),
        "connect_s": round(connected.open_seconds, 2),
        "all_subscribed_s": round(ready_s, 2),
        "hold_s": sizes.storm_hold,
        "pings_answered": pings,
        "dropped": dropped_client_side,
        "close_codes": {str(k): v for k, v in hub.close_codes.items()},
        **server_view,
        "server_cpu_ms_per_connect": round(1000 * sum(meter.server) / max(count, 1), 3),
        **meter.shares(),
        "disturbed": ctx.disturbed("storm", target.name, meter),
        "check": "passed" if passed else "failed",
        "log_problems": ctx.check_logs("storm", [server]),
    }
