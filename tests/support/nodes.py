"""Real ``rtforge serve`` node processes for integration tests.

A :class:`NodeProcess` runs ``python -m service.cli serve`` on a free
loopback port with any settings as flags (``heartbeat_interval=0.2`` becomes
``--heartbeat-interval 0.2``) and environment overrides, waits until
``GET /healthz`` answers and keeps the process's output (stdout and stderr)
in a log file, so that tests can assert that no traceback was ever logged.

Cluster tests reuse it unchanged: pass ``backend="nats"``, ``nats_url=...``
and a ``node_id`` per node, wait for :meth:`NodeProcess.wait_ready` (the
backplane is connected), and use :meth:`NodeProcess.kill` to make a node die
without warning, :meth:`NodeProcess.pause` to make it hang, or
:meth:`NodeProcess.restart` to bring it back on the same port.

:class:`NodePool` owns every node a test (or module) started and stops them
all at teardown; ``tests/conftest.py`` exposes it as the ``start_node`` and
``module_start_node`` fixture factories.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import quote

import httpx

__all__ = [
    "REPO_ROOT",
    "NodeFactory",
    "NodePool",
    "NodeProcess",
    "NodeStartError",
    "free_port",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
_LOOPBACK = "127.0.0.1"
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0
_BIND_ATTEMPTS = 3
_names = itertools.count(1)


class NodeStartError(AssertionError):
    """A node did not come up; the message carries its log tail."""


def free_port(host: str = _LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _flags(settings: Mapping[str, object]) -> list[str]:
    args: list[str] = []
    for name, value in settings.items():
        if value is None:
            continue
        args += ["--" + name.replace("_", "-"), str(value)]
    return args


class NodeProcess:
    """One ``rtforge serve`` process on the loopback interface.

    ``settings`` are node settings by field name (``send_queue_size=16``);
    ``args`` are extra raw command line arguments; ``env`` overrides the
    environment, which otherwise is this process's minus every
    ``RTFORGE_*`` variable (so that the caller's shell cannot leak in)."""

    def __init__(
        self,
        log_dir: Path,
        *,
        node_id: str | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        **settings: object,
    ) -> None:
        self.node_id = node_id or f"node-{next(_names)}"
        self.host = _LOOPBACK
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port()
        self.settings = dict(settings)
        self.extra_args = list(args)
        self.env_overrides = dict(env or {})
        self.log_path = Path(log_dir) / f"{self.node_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- addresses ---------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """The main endpoint, ``ws://H:P/ws``."""
        return f"{self.ws_base}/ws"

    def ws_channel_url(self, channel: str) -> str:
        """``ws://H:P/ws/{channel}`` with the name percent-encoded."""
        return f"{self.ws_base}/ws/{quote(channel, safe='')}"

    # -- process -----------------------------------------------------------
    @property
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "service.cli", "serve",
            "--host", self.host, "--port", str(self.port), "--node-id", self.node_id,
            *_flags(self.settings), *self.extra_args,
        ]

    @property
    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTFORGE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env_overrides)
        return env

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def start(self, *, wait: bool = True, timeout: float = _START_TIMEOUT) -> NodeProcess:
        """Start the process and (by default) wait until ``/healthz`` answers.

        When the automatically chosen port was taken meanwhile, retry on
        another one. Once a node has started its port is kept: a restart
        comes back on the same URL."""
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_healthy(timeout)
            except NodeStartError:
                lost_race = "address already in use" in self.log_text().lower()
                if self._fixed_port or not lost_race or attempt == _BIND_ATTEMPTS:
                    raise
                self.port = free_port()
                continue
            self._fixed_port = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        if self.running:
            raise RuntimeError(f"node {self.node_id} is already running")
        self._close_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("ab")
        self._log_file.write(f"--- start: {' '.join(self.command)}\n".encode())
        self._log_file.flush()
        self.process = subprocess.Popen(
            self.command,
            cwd=REPO_ROOT,
            env=self.environment,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = _START_TIMEOUT) -> None:
        """Poll ``GET /healthz`` until it answers 200; on failure raise
        :class:`NodeStartError` with the exit code and the log tail."""
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=1.0) as http:
            while True:
                code = self.returncode
                if code is not None:
                    raise NodeStartError(
                        f"node {self.node_id} exited with code {code} before /healthz "
                        f"answered; log tail:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{self.http_url}/healthz").status_code == 200:
                        return
                if time.monotonic() >= deadline:
                    self.kill()
                    raise NodeStartError(
                        f"node {self.node_id} did not answer /healthz within {timeout:g}s; "
                        f"log tail:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def wait_ready(self, timeout: float = _START_TIMEOUT) -> None:
        """Poll ``GET /readyz`` until it answers 200 (backplane connected)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(trust_env=False, timeout=1.0) as http:
            while True:
                if not self.running:
                    raise NodeStartError(
                        f"node {self.node_id} exited with code {self.returncode} before "
                        f"/readyz answered 200; log tail:\n{self.log_tail()}"
                    )
                try:
                    response = http.get(f"{self.http_url}/readyz")
                except httpx.HTTPError as exc:
                    last = repr(exc)
                else:
                    if response.status_code == 200:
                        return
                    last = f"{response.status_code} {response.text[:200]}"
                if time.monotonic() >= deadline:
                    raise NodeStartError(
                        f"node {self.node_id} not ready within {timeout:g}s (last: {last}); "
                        f"log tail:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait (SIGKILL if it takes longer than ``timeout``);
        returns the exit code."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)  # in case it was paused
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()
        return self.returncode

    def kill(self) -> int | None:
        """SIGKILL: the node dies without any chance to clean up."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._close_log()
        return self.returncode

    def pause(self) -> None:
        """SIGSTOP: the node hangs (keeps its sockets, answers nothing)."""
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.process is not None and self.running:
            self.process.send_signal(signal.SIGCONT)

    def restart(self, *, timeout: float = _START_TIMEOUT) -> NodeProcess:
        """Stop (if running) and start again with the same id, port and settings."""
        self.stop()
        return self.start(timeout=timeout)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- log ---------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def assert_log_clean(self, forbidden: Sequence[str] = ("Traceback",)) -> None:
        """Fail when the node's output contains any of ``forbidden``."""
        text = self.log_text()
        for needle in forbidden:
            if needle in text:
                raise AssertionError(
                    f"node {self.node_id} logged {needle!r}; log tail:\n{self.log_tail(80)}"
                )

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self.returncode}"
        return f"<NodeProcess {self.node_id} {self.http_url} {state}>"


class NodeFactory(Protocol):
    """What the ``start_node`` fixtures return: start a node and wait for it."""

    def __call__(
        self,
        *,
        node_id: str | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        wait: bool = True,
        **settings: object,
    ) -> NodeProcess: ...


class NodePool:
    """Every node started through it; :meth:`close` stops them all and
    (with ``check_logs``) fails when any of them logged a traceback."""

    def __init__(self, log_dir: Path, *, check_logs: bool = True) -> None:
        self.log_dir = Path(log_dir)
        self.check_logs = check_logs
        self.nodes: list[NodeProcess] = []

    def start(
        self,
        *,
        node_id: str | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        wait: bool = True,
        **settings: object,
    ) -> NodeProcess:
        node = NodeProcess(
            self.log_dir, node_id=node_id, port=port, env=env, args=args, **settings
        )
        self.nodes.append(node)
        return node.start(wait=wait)

    def close(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.check_logs:
            for node in self.nodes:
                node.assert_log_clean()
