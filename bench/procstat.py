"""What the kernel says about processes: CPU time, RSS, affinity, limits.

CPU time is ``utime + stime`` from ``/proc/PID/stat`` (all threads of the
process, in clock ticks): robust on a noisy machine, where wall-clock
throughput is not. RSS is the resident set from ``/proc/PID/statm``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "affinity",
    "core_busy",
    "cpu_seconds",
    "machine_info",
    "pin_process",
    "raise_nofile",
    "renice_self",
    "rss_bytes",
    "runqueue_wait_seconds",
    "self_cpu_seconds",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by process ``pid``."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces: split after its ')'.
    fields = raw.rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / _CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident * _PAGE


def runqueue_wait_seconds(pid: int | str = "self") -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU
    (``/proc/PID/task/*/schedstat``, second field). Large values mean other
    processes took the pinned core: the measurement was disturbed."""
    total = 0
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
    return total / 1e9


def _core_times() -> dict[int, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in values]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            times[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return times


def core_busy(cores: set[int], seconds: float = 1.0) -> dict[int, float]:
    """Percent busy of each of ``cores`` over ``seconds`` (blocking sleep)."""
    before = _core_times()
    time.sleep(seconds)
    after = _core_times()
    busy = {}
    for core in sorted(cores):
        if core in before and core in after:
            spent = after[core][1] - before[core][1]
            busy[core] = round(100 * (after[core][0] - before[core][0]) / max(spent, 1), 1)
    return busy


def renice_self(niceness: int) -> bool:
    """Set this thread's nice value (children forked from it inherit it);
    False when not permitted."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    except OSError:
        return False
    return True


def self_cpu_seconds() -> float:
    """User plus system CPU seconds of this (load) process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pin_process(pid: int, cores: set[int]) -> None:
    """Pin every thread of ``pid`` to ``cores`` (no-op when pinning is off)."""
    if not cores:
        return
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), cores)


@contextlib.contextmanager
def affinity(cores: set[int]) -> Iterator[None]:
    """Run the calling thread on ``cores`` inside the block. A process
    forked inside it inherits the affinity, so servers start pinned before
    their first instruction."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def raise_nofile(needed: int) -> tuple[int, int, bool]:
    """Raise the soft open-file limit towards the hard limit (children
    inherit it). Returns (soft, hard, enough)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft, hard, soft >= needed


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, kernel and the versions that matter."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "nofile_limit": {"soft": soft, "hard": hard},
        "versions": {
            name: _version(name)
            for name in (
                "uvicorn", "websockets", "wsproto", "uvloop", "httptools", "litestar",
                "msgspec", "nats-py", "redis",
            )
        },
    }
