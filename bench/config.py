"""Sizes and options of one bench invocation, with the full and ``--quick``
presets. A size given on the command line overrides the preset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["SCENARIOS", "BenchConfig", "Sizes", "preset"]

SCENARIOS = ("fanout", "latency", "memory", "storm")


@dataclass(frozen=True, slots=True)
class Sizes:
    """Every size of every scenario."""

    fanout_subscribers: int = 1000
    fanout_messages: int = 200
    fanout_warmup: int = 10
    fanout_windows: tuple[int, ...] = (1, 8)
    fanout_rounds: int = 3
    latency_subscribers: tuple[int, ...] = (100, 500)
    latency_rate: float = 200.0
    latency_messages: int = 1500
    latency_warmup: int = 100
    memory_connections: int = 10000
    storm_connections: int = 10000
    storm_concurrency: int = 500
    storm_hold: float = 5.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 3.0
    connect_concurrency: int = 500
    payload_bytes: int = 64


QUICK = Sizes(
    fanout_subscribers=50,
    fanout_messages=20,
    fanout_warmup=2,
    fanout_windows=(2,),
    fanout_rounds=1,
    latency_subscribers=(20,),
    latency_rate=200.0,
    latency_messages=150,
    latency_warmup=10,
    memory_connections=200,
    storm_connections=300,
    storm_concurrency=100,
    storm_hold=1.5,
    heartbeat_interval=0.5,
    heartbeat_timeout=1.5,
    connect_concurrency=100,
)


def preset(quick: bool, overrides: dict[str, Any]) -> Sizes:
    """The preset with every non-None override applied."""
    base = QUICK if quick else Sizes()
    given = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(Sizes)}
    unknown = set(given) - known
    if unknown:
        raise ValueError(f"unknown sizes: {sorted(unknown)}")
    return replace(base, **given)


@dataclass(frozen=True)
class BenchConfig:
    """What to run and where."""

    sizes: Sizes
    scenarios: tuple[str, ...] = SCENARIOS
    targets: tuple[str, ...] = (
        "rtforge", "asgi-websockets", "asgi-websockets-sansio", "asgi-wsproto",
    )
    cluster_backends: tuple[str, ...] = ("nats", "redis")
    server_cores: set[int] = field(default_factory=lambda: {0})
    load_cores: set[int] = field(default_factory=lambda: {1})
    results_dir: Path = Path("bench/results")
    rtforge_args: tuple[str, ...] = ()
    profile: bool = False
    niceness: int = -10
    quick: bool = False
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "sizes": asdict(self.sizes),
            "scenarios": list(self.scenarios),
            "targets": list(self.targets),
            "cluster_backends": list(self.cluster_backends),
            "server_cores": sorted(self.server_cores),
            "load_cores": sorted(self.load_cores),
            "rtforge_args": list(self.rtforge_args),
            "profile": self.profile,
            "niceness": self.niceness,
            "quick": self.quick,
        }
