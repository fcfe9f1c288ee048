"""Runs the planned scenario runs one after another and builds the report."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import scenarios
from .config import BenchConfig
from .procstat import core_busy
from .progress import Display
from .report import assess_targets
from .servers import Target, rtforge_ws_impl, single_node_targets

__all__ = ["plan", "run"]

Row = dict[str, Any]
Call = Callable[[scenarios.RunContext], Awaitable[Row | list[Row]]]
Run = tuple[str, str, Call]


def plan(config: BenchConfig) -> list[Run]:
    """(scenario, label, coroutine factory) for every run, in order."""
    targets = single_node_targets(config.targets, config.rtforge_args)
    rtforge = next((t for t in targets if t.kind == "rtforge"), None)
    runs: list[Run] = []

    def add(scenario: str, label: str, call: Call) -> None:
        runs.append((scenario, label, call))

    for scenario in config.scenarios:
        if scenario == "latency":
            for subs in config.sizes.latency_subscribers:
                for target in targets:
                    add(scenario, f"{target.name} x{subs}", _latency(target, subs, None))
                if rtforge is not None:
                    for backend in config.cluster_backends:
                        add(scenario, f"rtforge-{backend} x{subs}",
                            _latency(rtforge, subs, backend))
            continue
        for target in targets:
            add(scenario, target.name, _single(scenario, target))
    return runs


def _single(scenario: str, target: Target) -> Call:
    if scenario == "fanout":
        return lambda ctx: scenarios.fanout(ctx, target)
    if scenario == "memory":
        return lambda ctx: scenarios.memory(ctx, target)
    if scenario == "storm":
        return lambda ctx: scenarios.storm(ctx, target)
    raise ValueError(f"unknown scenario {scenario!r}")


def _latency(target: Target, subscribers: int, backend: str | None) -> Call:
    return lambda ctx: scenarios.latency(ctx, target, subscribers, backend)


def _summary(scenario: str, row: dict[str, Any]) -> str:
    name = row.get("target", "?")
    if "error" in row:
        return f"{scenario} {name}: FAILED: {row['error'][:200]}"
    if scenario == "fanout":
        return (f"fanout {name} window {row['window']}: "
                f"{row['deliveries_per_s']:,} deliveries/s, "
                f"{row['server_cpu_us_per_delivery']} µs server CPU/delivery, "
                f"check {row['delivery_check']}")
    if scenario == "latency":
        return (f"latency {name} x{row['subscribers']}: p50 {row['p50_ms']} ms, "
                f"p99 {row['p99_ms']} ms, p99.9 {row['p999_ms']} ms, "
                f"check {row['delivery_check']}")
    if scenario == "memory":
        return f"memory {name}: {row['kib_per_connection']} KiB/connection"
    return (f"storm {name}: {row['connects_per_s']:,} connects/s, {row['dropped']} dropped, "
            f"check {row['check']}")


async def run(config: BenchConfig, display: Display, log_dir: Path,
              load_loop: str) -> dict[str, Any]:
    """Run every planned run; returns the report (without file paths)."""
    started = time.monotonic()
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    ctx = scenarios.RunContext(config, display, log_dir)
    cores = config.server_cores | config.load_cores
    idle_check = core_busy(  # blocks 1 s: nothing runs yet
        cores or set(range(os.cpu_count() or 1)), 1.0)
    if any(busy > 15 for busy in idle_check.values()):
        ctx.anomalies.append(
            f"before the run, other processes kept the cores busy: "
            f"{', '.join(f'core {c} {b}%' for c, b in idle_check.items())}; "
            f"load average {os.getloadavg()[0]:.2f}: expect disturbed numbers"
        )
        display.note(ctx.anomalies[-1])
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in config.scenarios}
    for scenario, label, call in plan(config):
        display.step(f"{scenario}: {label}")
        got = await call(ctx)
        rows = got if isinstance(got, list) else [got]
        results[scenario].extend(rows)
        display.run_done("; ".join(_summary(scenario, row) for row in rows))
        await asyncio.sleep(0.5)  # let sockets of the last run wind down
    return {
        "version": 1,
        "started_at": started_at,
        "duration_s": round(time.monotonic() - started, 1),
        "command": config.command,
        "config": config.to_dict(),
        "load_loop": load_loop,
        "rtforge_ws": rtforge_ws_impl(),
        "log_dir": str(log_dir),
        "cores_busy_before_pct": idle_check,
        "results": results,
        "targets_check": assess_targets(results),
        "anomalies": ctx.anomalies,
    }
