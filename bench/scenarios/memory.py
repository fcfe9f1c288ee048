"""Memory: server RSS per idle subscribed connection: (RSS with N idle
subscribers - RSS before) / N."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import httpclient
from ..load import Hub, close_all
from ..servers import HOST, Target
from .common import Result, RunContext, connect, guarded

__all__ = ["memory"]


async def memory(ctx: RunContext, target: Target) -> Result:
    """RSS per idle subscribed connection."""
    return await guarded(ctx, "memory", target, lambda: _memory(ctx, target))


async def _memory(ctx: RunContext, target: Target) -> Result:
    count = ctx.config.sizes.memory_connections
    server = await ctx.start(target, "memory")
    hub = Hub(target.ready_marker, count)
    clients: list[Any] = []
    try:
        for _ in range(3):  # touch the HTTP path once, as a running server has
            await httpclient.request(HOST, server.port, "GET", server.health_path)
        await asyncio.sleep(1.0)
        before = server.rss_bytes()
        connected = await connect(
            ctx, server.port, target, hub, count=count,
            concurrency=ctx.config.sizes.connect_concurrency,
        )
        clients = connected.clients
        ctx.display.step(f"{target.name}: {count} idle connections, settling")
        await asyncio.sleep(2.0)
        after = server.rss_bytes()
        alive = count - hub.lost
    finally:
        await close_all(clients)
        await server.stop()
    return {
        "target": target.name,
        "ws_impl": target.ws_impl,
        "connections": count,
        "alive": alive,
        "rss_before_mib": round(before / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_connection": round((after - before) / count / 1024, 2),
        "connect_s": round(connected.open_seconds, 2),
        "log_problems": ctx.check_logs("memory", [server]),
    }
