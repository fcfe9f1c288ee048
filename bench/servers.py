"""Server processes under test: rtforge nodes and the bare ASGI baselines.

A :class:`Target` says how to start one kind of server and how to talk to
it; a :class:`ServerProcess` is one running instance, started pinned to the
server cores, with its output in a log file that is scanned for tracebacks
and errors afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from . import httpclient
from .procstat import affinity, cpu_seconds, pin_process, rss_bytes

__all__ = [
    "BASELINE_IMPLS",
    "CHANNEL",
    "HOST",
    "ServerProcess",
    "ServerStartError",
    "Target",
    "free_port",
    "rtforge_ws_impl",
    "single_node_targets",
    "stop_all",
]

HOST = "127.0.0.1"
CHANNEL = "bench"
REPO_ROOT = Path(__file__).resolve().parents[1]
#: the WebSocket implementations uvicorn offers, one baseline each
BASELINE_IMPLS = ("websockets", "websockets-sansio", "wsproto")
_PROBLEM_WORDS = ("Traceback", "ERROR", "CRITICAL", "Exception", "slow consumer")
#: every server started and not yet stopped, for cleanup on interruption
_live: set[ServerProcess] = set()


class ServerStartError(Exception):
    """A server did not come up; the message carries its log tail."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def rtforge_ws_impl() -> str:
    """Best guess of the WebSocket layer ``rtforge serve`` runs: its own
    protocol class when ``service.fastws`` has one, else uvicorn's
    ``ws="auto"`` choice. Only for the report; never fails."""
    names = {
        "WebSocketsSansIOProtocol": "websockets-sansio",
        "WebSocketProtocol": "websockets",
        "WSProtocol": "wsproto",
    }
    try:
        from service import fastws  # noqa: PLC0415

        own = fastws.RtforgeWebSocketProtocol
        base = next((names[b.__name__] for b in own.__mro__ if b.__name__ in names), "?")
        return f"{own.__name__} (on uvicorn's {base})"
    except Exception:
        pass
    try:
        from uvicorn.protocols.websockets.auto import (  # noqa: PLC0415
            AutoWebSocketsProtocol,
        )
    except ImportError:
        return "auto"
    name = getattr(AutoWebSocketsProtocol, "__name__", "")
    return f"uvicorn auto = {names.get(name, name or 'none')}"


@dataclass(frozen=True, slots=True)
class Target:
    """One kind of server: rtforge (on a backend) or a baseline."""

    name: str
    kind: Literal["rtforge", "baseline"]
    ws_impl: str
    backend: str = "memory"
    rtforge_args: tuple[str, ...] = ()

    @property
    def ready_marker(self) -> bytes:
        """Bytes in the frame that says the socket is subscribed."""
        return b"Subscribed to channel"

    @property
    def publish_path(self) -> str:
        if self.kind == "rtforge":
            return f"/api/channels/{CHANNEL}/publish"
        return "/publish"

    @property
    def ws_path(self) -> str:
        return f"/ws/{CHANNEL}"

    def argv(
        self,
        port: int,
        *,
        heartbeat: tuple[float, float] | None = None,
        node_id: str | None = None,
        broker_url: str | None = None,
        cluster: str | None = None,
    ) -> list[str]:
        """The command line. ``heartbeat`` is (interval, timeout): rtforge's
        own ping frames, or uvicorn's protocol pings for a baseline."""
        if self.kind == "baseline":
            argv = [sys.executable, "-m", "bench.baseline_app", "--host", HOST,
                    "--port", str(port), "--ws", self.ws_impl]
            if heartbeat is not None:
                argv += ["--ping-interval", f"{heartbeat[0]:g}",
                         "--ping-timeout", f"{heartbeat[1]:g}"]
            return argv
        argv = [sys.executable, "-m", "service.cli", "serve", "--host", HOST,
                "--port", str(port), "--log-level", "warning", "--backend", self.backend]
        if node_id:
            argv += ["--node-id", node_id]
        if cluster:
            argv += ["--cluster-name", cluster]
        if broker_url and self.backend == "nats":
            argv += ["--nats-url", broker_url]
        if broker_url and self.backend == "redis":
            argv += ["--redis-url", broker_url]
        if heartbeat is not None:
            argv += ["--heartbeat-interval", f"{heartbeat[0]:g}",
                     "--heartbeat-timeout", f"{heartbeat[1]:g}"]
        return argv + list(self.rtforge_args)


def single_node_targets(names: Sequence[str], rtforge_args: Sequence[str]) -> list[Target]:
    """``rtforge`` and ``asgi-<impl>`` targets, in the order given."""
    targets = []
    for name in names:
        if name == "rtforge":
            targets.append(Target("rtforge", "rtforge", rtforge_ws_impl(),
                                  rtforge_args=tuple(rtforge_args)))
        elif name.startswith("asgi-") and name[5:] in BASELINE_IMPLS:
            targets.append(Target(name, "baseline", name[5:]))
        else:
            known = ", ".join(["rtforge", *(f"asgi-{i}" for i in BASELINE_IMPLS)])
            raise ValueError(f"unknown target {name!r} (known: {known})")
    return targets


async def stop_all() -> None:
    """Stop every server still running (after an interruption)."""
    for server in list(_live):
        await server.stop(timeout=5.0)


@dataclass(eq=False)
class ServerProcess:
    """One running server, pinned to ``cores``, logging to ``log_path``."""

    name: str
    argv: list[str]
    port: int
    log_path: Path
    cores: set[int]
    health_path: str = "/healthz"
    process: subprocess.Popen[bytes] | None = None
    killed: bool = False
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)

    async def start(self, timeout: float = 30.0, path: str | None = None) -> None:
        """Spawn (pinned) and wait until ``path`` (default health) answers 200."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(f"--- {' '.join(self.argv)}\n".encode())
        self._log.flush()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTFORGE_")}
        env["PYTHONUNBUFFERED"] = "1"
        with affinity(self.cores):
            self.process = subprocess.Popen(  # noqa: ASYNC220 - must fork from this thread
                self.argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                stdout=self._log, stderr=subprocess.STDOUT,
            )
        _live.add(self)
        await self.wait_ready(path or self.health_path, timeout)
        pin_process(self.pid, self.cores)

    async def wait_ready(self, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpclient.HttpError):
                response = await httpclient.request(HOST, self.port, "GET", path, timeout=2)
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                await self.stop()
                raise ServerStartError(
                    f"{self.name}: {path} not 200 within {timeout:g}s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.1)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` (noted in ``killed``)."""
        _live.discard(self)
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling a Popen: nothing to await
            if process.poll() is None:
                self.killed = True
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode if process is not None else None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def problems(self, limit: int = 5) -> list[str]:
        """Log lines that look like errors or tracebacks (first ``limit``)."""
        found: list[str] = []
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if any(word in line for word in _PROBLEM_WORDS):
                    found.append(line.strip()[:300])
                    if len(found) >= limit:
                        break
        return found
