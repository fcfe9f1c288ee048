"""Smoke test of the benchmark tool: ``python -m bench --quick`` end to end.

Tiny sizes, the memory backend only (no cluster) and one baseline. It
checks that the run completes, that the JSON report has its fields and that
every fan-out and latency delivery arrived exactly once. It asserts no
speed: numbers from a test machine mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("rtforge", "asgi-websockets-sansio")


def _run_bench(results: Path) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "bench", "--quick", "--no-progress", "--no-cluster",
        "--targets", ",".join(TARGETS), "--results-dir", str(results),
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"bench failed ({done.returncode}):\n{done.stderr[-3000:]}"
    assert "# rtforge benchmark" in done.stdout, "the Markdown report is printed"
    reports = sorted(results.glob("bench-*.json"))
    assert len(reports) == 1, f"one JSON report expected in {results}: {reports}"
    assert reports[0].with_suffix(".md").exists(), "the Markdown report is written too"
    report: dict[str, Any] = json.loads(reports[0].read_text())
    return report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run_bench(tmp_path_factory.mktemp("bench-results"))


def _rows(report: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]]:
    rows = {row["target"]: row for row in report["results"][scenario]}
    assert set(rows) == set(TARGETS), f"{scenario}: one row per target"
    for name, row in rows.items():
        assert "error" not in row, f"{scenario}/{name} failed: {row.get('error')}"
    return rows


def test_report_describes_the_run(report: dict[str, Any]) -> None:
    assert report["version"] == 1
    assert {"cpu_model", "cores", "python", "versions"} <= set(report["machine"])
    assert report["config"]["quick"] is True
    assert report["config"]["cluster_backends"] == []
    assert set(report["results"]) == {"fanout", "latency", "memory", "storm"}
    assert isinstance(report["targets_check"], list) and report["targets_check"]
    assert isinstance(report["anomalies"], list)


def test_fanout_delivered_every_message_exactly_once(report: dict[str, Any]) -> None:
    for name, row in _rows(report, "fanout").items():
        assert row["delivery_check"] == "passed", f"{name}: {row}"
        assert row["deliveries"] == row["expected_deliveries"] > 0
        assert row["missing"] == 0 and row["duplicates"] == 0
        for field in ("deliveries_per_s", "server_cpu_s_per_1000",
                      "server_cpu_us_per_delivery", "load_cpu_pct"):
            assert isinstance(row[field], int | float), field


def test_latency_has_percentiles_and_exact_delivery(report: dict[str, Any]) -> None:
    for name, row in _rows(report, "latency").items():
        assert row["delivery_check"] == "passed", f"{name}: {row}"
        assert row["path"] == "single node"
        assert row["samples"] == row["subscribers"] * row["messages"]
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["p999_ms"] <= row["max_ms"]


def test_memory_and_storm_have_their_fields(report: dict[str, Any]) -> None:
    for row in _rows(report, "memory").values():
        assert row["alive"] == row["connections"] > 0
        assert isinstance(row["kib_per_connection"], int | float)
    for row in _rows(report, "storm").values():
        assert row["connects_per_s"] > 0
        assert {"dropped", "pings_answered", "check", "all_subscribed_s"} <= set(row)
    assert "heartbeat_timeouts" in _rows(report, "storm")["rtforge"]
