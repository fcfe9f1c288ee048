"""The running node: settings, manager and protocol, shared by all routes.

One :class:`Node` lives in each Litestar app's state. :func:`get_websocket_manager`
returns the manager of the node started last in this process, as the seed's
``handler::get_websocket_manager()`` did.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar.datastructures import State

from .errors import RtforgeError
from .manager import WebSocketManager
from .protocol import ClientProtocol
from .settings import Settings

__all__ = ["STATE_KEY", "Node", "get_websocket_manager", "node_of"]

STATE_KEY = "rtforge_node"


@dataclass(slots=True)
class Node:
    settings: Settings
    manager: WebSocketManager
    protocol: ClientProtocol


_current: list[Node] = []


def set_current(node: Node | None) -> None:
    _current.clear()
    if node is not None:
        _current.append(node)


def get_websocket_manager() -> WebSocketManager:
    """The manager of the running node; raises when no node runs."""
    if not _current:
        raise RtforgeError("no rtforge node is running in this process")
    return _current[0].manager


def node_of(state: State) -> Node:
    node: Node = state[STATE_KEY]
    return node
