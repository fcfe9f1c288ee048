"""rtforge's own benchmark: rtforge against bare ASGI baselines, side by side.

``python -m bench`` runs, in one invocation, four scenarios (fan-out,
latency, memory, connection storm) against rtforge and a bare ASGI
broadcast app under each WebSocket implementation uvicorn offers, with the
servers pinned to one core and this load process to another. It prints a
Markdown report and writes it, with a JSON one, to ``bench/results/``.
See docs/performance.md.
"""
