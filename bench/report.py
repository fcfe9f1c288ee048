"""The Markdown and JSON reports, and the check of issue 4's targets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["assess_targets", "render_markdown", "write_reports"]

Results = dict[str, list[dict[str, Any]]]


def _ok(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if "error" not in r]


def _best_baseline(rows: Sequence[dict[str, Any]], key: str) -> dict[str, Any] | None:
    baselines = [r for r in _ok(rows) if r["target"].startswith("asgi-") and r.get(key)]
    return min(baselines, key=lambda r: r[key]) if baselines else None


def _find(rows: Sequence[dict[str, Any]], target: str, **match: Any) -> dict[str, Any] | None:
    for row in _ok(rows):
        if row["target"] == target and all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def assess_targets(results: Results) -> list[dict[str, Any]]:
    """Each target of issue 4 with the measured value and met / not met
    (``met`` is None when this run did not measure it)."""
    checks: list[dict[str, Any]] = []

    fan = results.get("fanout", [])
    windows = sorted({r["window"] for r in _ok(fan)}) or [None]
    for window in windows:
        rows = [r for r in _ok(fan) if r["window"] == window]
        mine = _find(rows, "rtforge")
        best = _best_baseline(rows, "server_cpu_us_per_delivery")
        check: dict[str, Any] = {
            "target": f"fan-out, window {window}: server CPU per delivery <= 0.8x best bare ASGI",
            "met": None,
        }
        if mine and best:
            ratio = mine["server_cpu_us_per_delivery"] / best["server_cpu_us_per_delivery"]
            check.update(
                value=f"{mine['server_cpu_us_per_delivery']} µs vs {best['target']} "
                      f"{best['server_cpu_us_per_delivery']} µs = {ratio:.2f}x",
                met=ratio <= 0.8 and mine["delivery_check"] == "passed",
            )
        checks.append(check)

    mem = results.get("memory", [])
    mine, best = _find(mem, "rtforge"), _best_baseline(mem, "kib_per_connection")
    check = {"target": "memory: RSS per idle subscribed connection <= 1.0x best bare ASGI",
             "met": None}
    if mine and best:
        ratio = mine["kib_per_connection"] / best["kib_per_connection"]
        check.update(
            value=f"{mine['kib_per_connection']} KiB vs {best['target']} "
                  f"{best['kib_per_connection']} KiB = {ratio:.2f}x",
            met=ratio <= 1.0,
        )
    checks.append(check)

    lat = results.get("latency", [])
    for subscribers, label in ((100, ""), (500, " (stretch)")):
        for backend in ("nats", "redis"):
            row = _find(lat, f"rtforge-{backend}", subscribers=subscribers)
            check = {
                "target": f"cross-node p99 < 10 ms via {backend.upper()}, "
                          f"{subscribers} subscribers{label}",
                "met": None,
            }
            if row and row.get("p99_ms") is not None:
                check.update(
                    value=f"p99 {row['p99_ms']} ms at {row['rate']:g} msg/s",
                    met=row["p99_ms"] < 10 and row["delivery_check"] == "passed",
                )
            checks.append(check)

    row = _find(results.get("storm", []), "rtforge")
    check = {"target": "storm: 10k connections on one node with heartbeats on, none dropped",
             "met": None}
    if row:
        check.update(
            value=f"{row['connections']} connections, {row['dropped']} dropped, "
                  f"{_count(row.get('heartbeat_timeouts'))} heartbeat timeouts",
            # fewer than 10k connections measure nothing about this target
            met=(row["check"] == "passed") if row["connections"] >= 10000 else None,
        )
    checks.append(check)
    return checks


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _waits(row: dict[str, Any]) -> str:
    return f"{row['server_runqueue_wait_pct']:g} / {row['load_runqueue_wait_pct']:g}"


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)


def _errors(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [f"- **{r['target']}** failed: {r['error']}" for r in rows if "error" in r]


def render_markdown(report: dict[str, Any]) -> str:
    machine, config = report["machine"], report["config"]
    sizes = config["sizes"]
    versions = machine["versions"]
    results: Results = report["results"]
    out = [
        f"# rtforge benchmark, {report['started_at']}",
        "",
        f"- machine: {machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB, Linux {machine['kernel']}",
        f"- Python {machine['python']}; uvicorn {versions['uvicorn']}, websockets "
        f"{versions['websockets']}, wsproto {versions['wsproto']}, uvloop {versions['uvloop']}, "
        f"httptools {versions['httptools']}, litestar {versions['litestar']}",
        f"- servers pinned to core(s) {config['server_cores']}, load to {config['load_cores']}, "
        f"nice {config.get('niceness', 0)}; load loop: {report['load_loop']}; "
        f"rtforge WebSocket layer: {report['rtforge_ws']}",
        f"- command: `{report['command']}`" + (" (quick smoke run)" if config["quick"] else ""),
        f"- duration: {report['duration_s']:.0f} s",
        "",
    ]
    fan = results.get("fanout")
    if fan is not None:
        out += [
            f"## Fan-out: {sizes['fanout_subscribers']} subscribers, "
            f"{sizes['fanout_messages']} messages per round, {sizes['fanout_rounds']} round(s) "
            f"per window",
            "",
            "Window: messages in flight, not yet received by every subscriber. "
            "Server CPU: the median round.",
            "",
            *_table(
                ["target", "window", "deliveries/s", "server CPU µs/delivery",
                 "server CPU s/1000 deliveries", "rounds µs/delivery", "server CPU %",
                 "load CPU %", "core wait % server/load", "exactly once"],
                [[r["target"], r["window"], r["deliveries_per_s"],
                  r["server_cpu_us_per_delivery"],
                  r["server_cpu_s_per_1000"],
                  " / ".join(f"{v:g}" for v in r["server_cpu_us_per_delivery_rounds"]),
                  r["server_cpu_pct"], r["load_cpu_pct"], _waits(r),
                  r["delivery_check"]]
                 for r in sorted(_ok(fan), key=lambda r: r["window"])],
            ),
            *_errors(fan),
            "",
        ]
    lat = results.get("latency")
    if lat is not None:
        out += [
            f"## Latency: paced publishing at {sizes['latency_rate']:g} msg/s, "
            f"{sizes['latency_messages']} messages measured",
            "",
            "Publish (HTTP API) to receive, on the load side. Delivery check: `passed` = every "
            "message reached every subscriber once; `backlog` = the server could not keep up "
            "and frames were still queued 15 s after the last publish (nothing seen lost or "
            "duplicated); `failed` = lost, duplicated or dropped.",
            "",
            *_table(
                ["target", "path", "subscribers", "deliveries/s", "p50 ms", "p99 ms",
                 "p99.9 ms", "max ms", "server CPU %", "load CPU %", "core wait % server/load",
                 "delivery check"],
                [[r["target"], r["path"], r["subscribers"], r["deliveries_per_s"], r["p50_ms"],
                  r["p99_ms"], r["p999_ms"], r["max_ms"], r["server_cpu_pct"],
                  r["load_cpu_pct"], _waits(r), r["delivery_check"]] for r in _ok(lat)],
            ),
            *_errors(lat),
            "",
        ]
    mem = results.get("memory")
    if mem is not None:
        out += [
            f"## Memory: {sizes['memory_connections']} idle subscribed connections",
            "",
            *_table(
                ["target", "RSS before MiB", "RSS after MiB", "KiB/connection", "alive"],
                [[r["target"], r["rss_before_mib"], r["rss_after_mib"],
                  r["kib_per_connection"], r["alive"]] for r in _ok(mem)],
            ),
            *_errors(mem),
            "",
        ]
    storm = results.get("storm")
    if storm is not None:
        out += [
            f"## Connection storm: {sizes['storm_connections']} clients, "
            f"{sizes['storm_concurrency']} handshakes in flight, heartbeat "
            f"{sizes['heartbeat_interval']:g} s / timeout {sizes['heartbeat_timeout']:g} s, "
            f"hold {sizes['storm_hold']:g} s",
            "",
            *_table(
                ["target", "connects/s", "all subscribed after s", "server CPU ms/connect",
                 "server CPU %", "load CPU %", "core wait % server/load", "pings answered",
                 "dropped", "heartbeat timeouts", "check"],
                [[r["target"], r["connects_per_s"], r["all_subscribed_s"],
                  r["server_cpu_ms_per_connect"], r["server_cpu_pct"], r["load_cpu_pct"],
                  _waits(r), r["pings_answered"], r["dropped"],
                  _count(r.get("heartbeat_timeouts")), r["check"]] for r in _ok(storm)],
            ),
            *_errors(storm),
            "",
        ]
    out += [
        "Core wait: share of the measured time the server (or load) process was runnable "
        "but another process had its core; above 10% the row is listed under Anomalies.",
        "",
        "## Targets of issue 4",
        "",
    ]
    out += _table(
        ["target", "measured", "met"],
        [[c["target"], c.get("value", "not measured"),
          {True: "met", False: "**not met**", None: "-"}[c["met"]]]
         for c in report["targets_check"]],
    )
    if report["anomalies"]:
        out += ["", "## Anomalies", "", *[f"- {a}" for a in report["anomalies"]]]
    out += ["", f"JSON: `{report['json_path']}`; server logs: `{report['log_dir']}`", ""]
    return "\n".join(out)


def write_reports(report: dict[str, Any], directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    report["json_path"] = str(json_path)
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(report))
    return md_path, json_path
