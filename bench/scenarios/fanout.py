"""Fan-out: S subscribers on one node, one publisher, M messages per round
with at most W messages in flight (not yet received by every subscriber),
for each window W. Reports deliveries/s and server CPU per delivery (the
median of the rounds) and checks that every subscriber got every message
exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..httpclient import HttpPool
from ..load import TrackingHub, close_all, publish_windowed
from ..profiling import Sampler
from ..servers import HOST, Target
from .common import Meter, Result, RunContext, connect

__all__ = ["fanout"]


async def fanout(ctx: RunContext, target: Target) -> list[Result]:
    """S subscribers, M messages per round with at most W in flight, for
    each window W: deliveries/s and server CPU per delivery."""
    try:
        return await _fanout(ctx, target)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        ctx.anomalies.append(f"fanout/{target.name}: run failed: {message[:500]}")
        return [{"target": target.name, "error": message[:2000]}]


@dataclass
class _Window:
    """What one window's rounds measured."""

    window: int
    meters: list[Meter] = field(default_factory=list)
    first: int = 0
    last: int = 0
    profile: dict[str, Any] | None = None


async def _fanout(ctx: RunContext, target: Target) -> list[Result]:
    sizes = ctx.config.sizes
    subs, warm, count = sizes.fanout_subscribers, sizes.fanout_warmup, sizes.fanout_messages
    rounds, windows = max(1, sizes.fanout_rounds), sizes.fanout_windows
    server = await ctx.start(target, "fanout")
    hub = TrackingHub(
        target.ready_marker, subs, warm + len(windows) * rounds * count, record_from=None
    )
    clients: list[Any] = []
    pool = HttpPool(HOST, server.port, max(windows) + 1)
    measured: list[_Window] = []
    errors: Counter[str] = Counter()
    mismatches = 0
    try:
        clients = (await connect(
            ctx, server.port, target, hub, count=subs, concurrency=sizes.connect_concurrency
        )).clients
        await pool.warm()
        ctx.display.step(f"{target.name}: warm-up, {warm} messages", warm)
        stats = await publish_windowed(
            pool, target.publish_path, hub, range(warm), window=min(windows),
            pad=ctx.pad, message_timeout=30,
        )
        errors += stats.errors
        next_id = warm
        for window in windows:
            result = _Window(window, first=next_id)
            measured.append(result)
            sampler = None
            if ctx.config.profile:
                output = ctx.log_dir / f"fanout-{target.name}-w{window}.pyspy.txt"
                sampler = Sampler(server.pid, output)
                await asyncio.sleep(1.0)  # let py-spy attach
            for number in range(rounds):
                ctx.display.step(
                    f"{target.name}: {count} messages to {subs}, window {window}, "
                    f"round {number + 1}/{rounds}", count,
                )
                with Meter([server]) as meter:
                    stats = await publish_windowed(
                        pool, target.publish_path, hub, range(next_id, next_id + count),
                        window=window, pad=ctx.pad, message_timeout=30,
                        on_progress=ctx.display.update,
                    )
                meter.deliveries = sum(hub.counts[next_id:next_id + count])
                result.meters.append(meter)
                next_id += count
                errors += stats.errors
                mismatches += stats.recipient_mismatches
                if stats.errors:
                    break
            result.last = next_id
            result.profile = sampler.stop() if sampler is not None else None
            if errors:
                break
        await asyncio.sleep(0.3)  # late duplicates would show up now
    finally:
        pool.close()
        await close_all(clients)
        await server.stop()
    log_problems = ctx.check_logs("fanout", [server])
    return _rows(ctx, target, hub, measured, errors=errors, mismatches=mismatches,
                 log_problems=log_problems)


def _rows(
    ctx: RunContext, target: Target, hub: TrackingHub, measured: list[_Window], *,
    errors: Counter[str], mismatches: int, log_problems: list[str],
) -> list[Result]:
    """One report row per window."""
    sizes = ctx.config.sizes
    subs, count, rounds = sizes.fanout_subscribers, sizes.fanout_messages, sizes.fanout_rounds
    passed = (
        hub.missing() == 0 and hub.duplicates == 0 and hub.unknown == 0 and hub.lost == 0
        and not errors and mismatches == 0
    )
    rows = []
    for result in measured:
        meters = result.meters
        per_delivery = [1e6 * sum(m.server) / max(m.deliveries, 1) for m in meters]
        median = sorted(range(len(meters)), key=lambda i: per_delivery[i])[len(meters) // 2]
        chosen = meters[median]
        row: Result = {
            "target": target.name,
            "ws_impl": target.ws_impl,
            "subscribers": subs,
            "messages": count,
            "window": result.window,
            "rounds": len(meters),
            "deliveries": sum(hub.counts[result.first:result.last]),
            "expected_deliveries": subs * rounds * count,
            # the whole run, every window: every message to every subscriber, once
            "missing": hub.missing(),
            "duplicates": hub.duplicates,
            "unexpected_frames": hub.unknown,
            "dropped_connections": hub.lost,
            "publish_errors": dict(errors),
            "recipient_mismatches": mismatches,
            "delivery_check": "passed" if passed else "failed",
            # the round with the median server CPU per delivery
            "deliveries_per_s": round(chosen.deliveries / max(chosen.wall, 1e-9)),
            "server_cpu_s_per_1000": round(per_delivery[median] / 1000, 5),
            "server_cpu_us_per_delivery": round(per_delivery[median], 2),
            "server_cpu_us_per_delivery_rounds": [round(v, 2) for v in per_delivery],
            **chosen.shares(),
            "disturbed": ctx.disturbed(f"fanout-w{result.window}", target.name, chosen),
            "log_problems": log_problems,
        }
        if result.profile is not None:
            row["profile"] = result.profile
        rows.append(row)
    return rows
