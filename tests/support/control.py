"""A tiny HTTP server that lets a test in another process (node's test
runner, a browser page) kill, stop, start, pause and resume the
:class:`~support.nodes.NodeProcess` nodes of a Python test.

``POST /nodes/{index}/{action}`` with ``action`` one of ``kill`` (SIGKILL),
``stop`` (SIGTERM, waits for the exit), ``start`` (no-op when running; waits
for ``/healthz``), ``pause`` (SIGSTOP), ``resume`` (SIGCONT) answers
``{"index", "action", "running"}``; ``GET /nodes`` lists the nodes. It
listens on loopback only and runs in a daemon thread::

    with NodeControl([node_a, node_b]) as control:
        env["RTFORGE_TEST_CONTROL"] = control.url
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from .nodes import NodeProcess

__all__ = ["NodeControl"]


def _start(node: NodeProcess) -> None:
    if not node.running:
        node.start()


_ACTIONS: dict[str, Callable[[NodeProcess], object]] = {
    "kill": NodeProcess.kill,
    "stop": NodeProcess.stop,
    "start": _start,
    "pause": NodeProcess.pause,
    "resume": NodeProcess.resume,
}


class NodeControl:
    """The control server for ``nodes`` (indexed from 0)."""

    def __init__(self, nodes: Sequence[NodeProcess]) -> None:
        self.nodes = list(nodes)
        self.log: list[str] = []
        self._lock = threading.Lock()
        control = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/nodes":
                    self._reply(404, {"error": "not_found"})
                    return
                self._reply(200, {"nodes": [
                    {"index": i, "url": n.http_url, "running": n.running}
                    for i, n in enumerate(control.nodes)
                ]})

            def do_POST(self) -> None:
                parts = self.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "nodes" or parts[2] not in _ACTIONS:
                    self._reply(404, {"error": "not_found", "path": self.path})
                    return
                try:
                    node = control.nodes[int(parts[1])]
                except (ValueError, IndexError):
                    self._reply(404, {"error": "no_such_node"})
                    return
                action = parts[2]
                try:
                    with control._lock:
                        control.log.append(f"{action} {parts[1]}")
                        _ACTIONS[action](node)
                except Exception as exc:
                    self._reply(500, {"error": repr(exc)})
                    return
                self._reply(200, {"index": int(parts[1]), "action": action,
                                  "running": node.running})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="node-control", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
