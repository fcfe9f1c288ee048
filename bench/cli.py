"""``python -m bench``: parse options, pin, raise limits, run, report."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .cluster import stop_brokers
from .config import SCENARIOS, BenchConfig, Sizes, preset
from .procstat import machine_info, raise_nofile, renice_self
from .progress import Display, make_display
from .report import render_markdown, write_reports
from .runner import plan, run
from .servers import BASELINE_IMPLS, REPO_ROOT, stop_all

__all__ = ["main"]

_HELP = {
    "fanout_subscribers": "fan-out: subscribers on one node",
    "fanout_messages": "fan-out: measured messages",
    "fanout_warmup": "fan-out: warm-up messages before measuring",
    "fanout_windows": "fan-out: messages in flight (not yet received by every subscriber), "
                      "comma-separated: each is measured (e.g. 1,8)",
    "fanout_rounds": "fan-out: measured rounds of M messages; the median round is reported",
    "latency_subscribers": "latency: subscriber counts, comma-separated (e.g. 100,500)",
    "latency_rate": "latency: messages per second",
    "latency_messages": "latency: measured messages per run",
    "latency_warmup": "latency: messages sent first and left out of the percentiles",
    "memory_connections": "memory: idle subscribed connections",
    "storm_connections": "storm: clients to connect",
    "storm_concurrency": "storm: handshakes in flight",
    "storm_hold": "storm: seconds to hold the connections afterwards",
    "heartbeat_interval": "storm: server ping interval (rtforge frames, uvicorn pings)",
    "heartbeat_timeout": "storm: silence after which the server closes a client",
    "connect_concurrency": "handshakes in flight when connecting subscribers elsewhere",
    "payload_bytes": "padding bytes in every published payload",
}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in _csv(value))


def _cores(value: str) -> set[int]:
    return {int(v) for v in _csv(value)}


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _parser() -> argparse.ArgumentParser:
    targets = ["rtforge", *(f"asgi-{impl}" for impl in BASELINE_IMPLS)]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="rtforge against bare ASGI baselines: fan-out, latency, memory, storm",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--scenarios", type=_csv, default=SCENARIOS,
                        help=f"comma-separated, from {','.join(SCENARIOS)} (default: all)")
    parser.add_argument("--targets", type=_csv, default=tuple(targets),
                        help=f"comma-separated, from {','.join(targets)} (default: all)")
    parser.add_argument("--cluster", type=_csv, default=("nats", "redis"),
                        help="backends for cross-node latency (default nats,redis)")
    parser.add_argument("--no-cluster", action="store_true", help="skip cross-node latency")
    parser.add_argument("--server-cores", type=_cores, default={0},
                        help="cores for server processes (default 0)")
    parser.add_argument("--load-cores", type=_cores, default={1},
                        help="cores for this load process (default 1)")
    parser.add_argument("--rtforge-args", default="",
                        help="extra arguments for `rtforge serve`, one shell-quoted string")
    parser.add_argument("--results-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--profile", action="store_true",
                        help="sample servers with py-spy during fan-out (costs them some CPU)")
    parser.add_argument("--no-progress", action="store_true", help="plain progress lines")
    parser.add_argument("--nice", type=int, default=-10,
                        help="nice value of the bench and its servers, so that other "
                             "processes disturb less (default -10; needs root, else 0)")
    sizes = parser.add_argument_group("sizes (default: full preset, or --quick)")
    defaults = Sizes()
    for f in fields(Sizes):
        plural = f.name in ("latency_subscribers", "fanout_windows")
        kind: Any = _ints if plural else type(getattr(defaults, f.name))
        sizes.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None,
            help=f"{_HELP[f.name]} (default {_shown(getattr(defaults, f.name))})",
        )
    return parser


def _config(args: argparse.Namespace, argv: Sequence[str]) -> BenchConfig:
    sizes = preset(args.quick, {f.name: getattr(args, f.name) for f in fields(Sizes)})
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"bench: unknown scenarios {sorted(unknown)}")
    server_cores, load_cores = args.server_cores, args.load_cores
    available = os.sched_getaffinity(0)
    if not (server_cores | load_cores) <= available or server_cores & load_cores:
        print(f"bench: warning: cores {sorted(server_cores)}/{sorted(load_cores)} not usable "
              f"(have {sorted(available)}); not pinning", file=sys.stderr)
        server_cores, load_cores = set(), set()
    return BenchConfig(
        sizes=sizes,
        scenarios=tuple(args.scenarios),
        targets=tuple(args.targets),
        cluster_backends=() if args.no_cluster else tuple(args.cluster),
        server_cores=server_cores,
        load_cores=load_cores,
        results_dir=args.results_dir,
        rtforge_args=tuple(shlex.split(args.rtforge_args)),
        profile=args.profile,
        niceness=args.nice,
        quick=args.quick,
        command=shlex.join(["python", "-m", "bench", *argv]),
    )


def _check_nofile(config: BenchConfig) -> None:
    sizes = config.sizes
    needed = 256 + max(sizes.memory_connections if "memory" in config.scenarios else 0,
                       sizes.storm_connections if "storm" in config.scenarios else 0,
                       sizes.fanout_subscribers, max(sizes.latency_subscribers, default=0))
    soft, hard, enough = raise_nofile(needed)
    if not enough:
        raise SystemExit(
            f"bench: the open-file limit is too low: {needed} needed, hard limit {hard} "
            f"(soft {soft}). Raise it (ulimit -Hn / limits.conf) or lower "
            f"--memory-connections and --storm-connections."
        )


def _event_loop() -> tuple[str, Any]:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return "asyncio", asyncio.new_event_loop
    version = getattr(uvloop, "__version__", "")
    return f"uvloop {version}".strip(), uvloop.new_event_loop


async def _guarded_run(
    config: BenchConfig, display: Display, log_dir: Path, loop_name: str
) -> dict[str, Any]:
    """``run``, cancelled by SIGTERM as by Ctrl-C, never leaving a server behind."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run(config, display, log_dir, loop_name)
    finally:
        await stop_all()
        stop_brokers()


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        config = _config(args, argv)
        runs = plan(config)
    except ValueError as exc:
        raise SystemExit(f"bench: {exc}") from None
    _check_nofile(config)
    # Before any thread exists: threads and servers forked later inherit both.
    if config.load_cores:
        os.sched_setaffinity(0, config.load_cores)
    if config.niceness and not renice_self(config.niceness):
        print(f"bench: warning: cannot set nice {config.niceness} (not root?); running at 0",
              file=sys.stderr)
        config = replace(config, niceness=0)
    os.chdir(REPO_ROOT)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = config.results_dir / f"logs-{stamp}"
    loop_name, loop_factory = _event_loop()
    try:
        with (
            make_display(len(runs), enabled=not args.no_progress) as display,
            asyncio.Runner(loop_factory=loop_factory) as runner,
        ):
            report = runner.run(_guarded_run(config, display, log_dir, loop_name))
    except (KeyboardInterrupt, asyncio.CancelledError):
        raise SystemExit("bench: interrupted; every server it started was stopped") from None
    report["machine"] = machine_info()
    md_path, json_path = write_reports(report, config.results_dir, f"bench-{stamp}")
    print(render_markdown(report))
    print(f"reports: {md_path} {json_path}", file=sys.stderr)
