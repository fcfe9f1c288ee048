"""Helpers shared by rtforge's test modules: real node processes, a real
WebSocket test client and polling utilities. Nothing here is a mock."""

from __future__ import annotations

from .client import WsClient, WsClosed
from .nodes import NodeProcess, NodeStartError, free_port
from .polling import eventually, wait_for

__all__ = [
    "NodeProcess",
    "NodeStartError",
    "WsClient",
    "WsClosed",
    "eventually",
    "free_port",
    "wait_for",
]
