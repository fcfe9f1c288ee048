"""Graceful drain: what a node does between SIGTERM and exit.

1. The node turns unready at once (``/readyz`` answers 503) and refuses new
   sockets with close code 1012.
2. After ``--drain-delay`` seconds (default 0; on Kubernetes the pod's
   preStop hook usually waits instead) uvicorn stops listening and asks every
   socket to shut down: each flushes the frames it already accepted for
   delivery, then closes with 1012 ("reconnect at once, elsewhere").
3. The node leaves the cluster (its memberships disappear from every count
   at once) and exits, at the latest ``--drain-timeout`` seconds after the
   drain began. A second SIGTERM or SIGINT skips the delay.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

__all__ = ["DrainingServer"]

log = logging.getLogger("rtforge.drain")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, marking the node as draining on the first signal."""

    def __init__(
        self, config: uvicorn.Config, start_drain: Callable[[], None], drain_delay: float
    ) -> None:
        super().__init__(config)
        self._start_drain = start_drain
        self._drain_delay = drain_delay
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._drain_delay <= 0:
            if not self._draining:
                self._begin(sig)
            super().handle_exit(sig, frame)
            return
        self._begin(sig)
        # Signal handlers must not block: let a timer end the delay.
        timer = threading.Timer(self._drain_delay, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()

    def _begin(self, sig: int) -> None:
        self._draining = True
        log.warning("signal %s: draining (unready, closing sockets with 1012)", sig)
        self._start_drain()
