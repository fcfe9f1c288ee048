"""Shared fixtures: real node processes, HTTP clients and WebSocket clients.

* ``start_node(**settings)`` starts a node for one test; ``module_start_node``
  for a whole module (tests then use unique channel names). Both stop every
  node they started at teardown and fail if any of them logged a traceback.
* ``node`` is a module-wide node with default settings; a module overrides
  it to change settings.
* ``http`` is an ``httpx.AsyncClient`` that ignores proxy settings;
  ``ws_connect(url)`` opens :class:`~support.WsClient` connections that are
  closed at teardown.
* ``channel_name`` is a fresh channel name per test.
* ``nats_broker`` and ``redis_broker`` (real brokers for cluster tests) come
  from the :mod:`support.broker_fixtures` plugin; ``cluster``, ``make_cluster``
  and ``shared_backend`` (nodes that share a backplane) from :mod:`support.cluster`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from support.client import WsClient, WsConnect
from support.nodes import NodeFactory, NodePool, NodeProcess

pytest_plugins = ["support.broker_fixtures", "support.cluster", "support.browser"]


@pytest.fixture
def start_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Start nodes for one test: ``start_node(heartbeat_interval=0.2, ...)``."""
    pool = NodePool(tmp_path_factory.mktemp("nodes"))
    try:
        yield pool.start
    finally:
        pool.close()


@pytest.fixture(scope="module")
def module_start_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFactory]:
    """Like ``start_node``, for nodes shared by a whole module."""
    pool = NodePool(tmp_path_factory.mktemp("nodes"))
    try:
        yield pool.start
    finally:
        pool.close()


@pytest.fixture(scope="module")
def node(module_start_node: NodeFactory) -> NodeProcess:
    """One node with default settings, shared by the module's tests."""
    return module_start_node()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
        yield client


@pytest.fixture
async def ws_connect() -> AsyncIterator[WsConnect]:
    """``await ws_connect(url, **options)``: a :class:`WsClient` that is
    closed when the test ends."""
    clients: list[WsClient] = []

    async def connect(url: str, **options: Any) -> WsClient:
        client = await WsClient.connect(url, **options)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()


@pytest.fixture
def channel_name(request: pytest.FixtureRequest) -> str:
    """A channel name no other test uses."""
    return f"t:{request.node.name[:40]}:{uuid.uuid4().hex[:8]}"
