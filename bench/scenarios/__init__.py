"""The four scenarios, each run against one target at a time.

Every run starts a fresh server (or cluster), connects its clients, measures
only its measured phase, checks what arrived, closes everything and scans
the server's log. A run returns flat dicts for the report; a failure
becomes ``{"error": ...}`` rather than stopping the whole bench.
"""

from .common import Result, RunContext
from .fanout import fanout
from .latency import latency
from .memory import memory
from .storm import storm

__all__ = ["Result", "RunContext", "fanout", "latency", "memory", "storm"]
