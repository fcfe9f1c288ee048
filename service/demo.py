"""The demo web app a node serves (``--demo on``, the default).

* ``GET /`` — one page with a chat (rooms, presence counts, join/leave
  notices) and a live dashboard of the cluster (connections and deliveries
  per second over time), plain HTML/JS/CSS from ``service/static/``.
* ``GET /demo/<file>`` — the page's scripts and style sheet.
* ``GET /clients/rtforge.js`` — the JavaScript client (``service/static/rtforge.js``,
  linked from ``clients/js/rtforge.js``), served also with ``--demo off``.

While anyone in the cluster watches the dashboard (subscribes to
``dashboard:metrics``), every node sends one :class:`DashboardMetrics` sample
per second through :class:`DashboardService`: its own connections,
deliveries and client frames per second, memory and CPU, and the cluster's
connection count. The page adds the nodes up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ControllerRouterHandler

from backends import BackplaneError

from .errors import RtforgeError
from .examples.live_updates import DashboardMetrics, DashboardService
from .manager import WebSocketManager
from .node import node_of
from .settings import Settings

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["STATIC_DIR", "NodeSampler", "dashboard_feed_lifespan", "demo_routes"]

log = logging.getLogger("rtforge.demo")

STATIC_DIR = Path(__file__).resolve().parent / "static"
FEED_INTERVAL = 1.0
_NO_CACHE = CacheControlHeader(no_cache=True)


@get("/", include_in_schema=False, cache_control=_NO_CACHE)
async def demo_index() -> File:
    return File(STATIC_DIR / "index.html", media_type="text/html",
                content_disposition_type="inline")


@get("/clients/rtforge.js", include_in_schema=False, cache_control=_NO_CACHE)
async def js_client() -> File:
    return File(STATIC_DIR / "rtforge.js", media_type="text/javascript",
                content_disposition_type="inline")


@get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response[bytes]:
    return Response(b"", status_code=204)


def demo_routes(settings: Settings) -> list[ControllerRouterHandler]:
    """The JavaScript client, always; the demo's pages unless ``settings.demo`` is off."""
    if not settings.demo:
        return [js_client]
    static = create_static_files_router(
        path="/demo", directories=[STATIC_DIR], name="demo", cache_control=_NO_CACHE
    )
    return [demo_index, js_client, favicon, static]


class NodeSampler:
    """Rates of this node since the previous sample (one per dashboard tick)."""

    def __init__(self, manager: WebSocketManager) -> None:
        self.manager = manager
        self._last = self._counters()

    def _counters(self) -> tuple[float, float, float, float]:
        registry = self.manager.metrics.registry
        deliveries = registry.get_sample_value("rtforge_deliveries_total") or 0.0
        frames = sum(
            sample.value
            for metric in registry.collect()
            if metric.name == "rtforge_frames_received"
            for sample in metric.samples
            if sample.name == "rtforge_frames_received_total"
        )
        return time.monotonic(), time.process_time(), deliveries, frames

    async def sample(self) -> DashboardMetrics:
        now = self._counters()
        wall, cpu, deliveries, frames = (a - b for a, b in zip(now, self._last, strict=True))
        self._last = now
        wall = max(wall, 1e-6)
        return DashboardMetrics(
            active_users=await self.manager.connection_count(),
            requests_per_second=round(frames / wall, 2),
            memory_usage_mb=round(_rss_bytes() / (1024 * 1024), 1),
            cpu_usage_percent=round(100.0 * cpu / wall, 1),
            node_id=self.manager.node_id,
            connections=self.manager.local_connection_count(),
            deliveries_per_second=round(deliveries / wall, 2),
        )


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _feed(manager: WebSocketManager, interval: float) -> None:
    """One sample per ``interval`` while anyone in the cluster watches;
    nothing but a cheap count while nobody does."""
    dashboard = DashboardService(manager)
    sampler: NodeSampler | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            if await dashboard.viewers() == 0:
                sampler = None
                continue
            if sampler is None:  # rates start from the first watched tick
                sampler = NodeSampler(manager)
                continue
            await dashboard.send_metrics(await sampler.sample())
        except (BackplaneError, RtforgeError) as exc:
            log.debug("dashboard sample not sent: %s", exc)


def dashboard_feed_lifespan(app: Litestar) -> contextlib.AbstractAsyncContextManager[None]:
    """Litestar lifespan hook: feed the demo dashboard while the app runs."""
    return _feed_lifespan(app)


@contextlib.asynccontextmanager
async def _feed_lifespan(app: Litestar) -> AsyncIterator[None]:
    node = node_of(app.state)
    if not node.settings.demo:
        yield
        return
    task = asyncio.get_running_loop().create_task(
        _feed(node.manager, FEED_INTERVAL), name="rtforge-dashboard-feed"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
