# ruff: noqa: PLR0915, ASYNC110 - a linear measurement script that polls on purpose
"""Cross-node latency and throughput of rtforge on NATS and Redis.

Starts a broker (local nats-server / redis-server binary on a free port) and
two real `rtforge serve` nodes A and B on it. 100 WebSocket subscribers on
node B subscribe to one channel; one publisher on node A sends the client
`publish` command at a fixed rate (default 200 msg/s for 10 s), each payload
carrying its send time (perf_counter_ns; publisher and subscribers live in
this one process, so the clocks agree). Latency = receive time at a
subscriber on B minus send time on A, over every delivered frame.

Then a saturation phase: the publisher sends as fast as the node acknowledges
(a window of 64 unacknowledged publishes) for a few seconds; throughput is the
number of frames delivered per second across the 100 subscribers on B.

Run from the repository root:
    .venv/bin/python bench/xnode_latency.py [--backends nats redis] [--rate 200]
        [--seconds 10] [--subscribers 100] [--saturate-seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

import msgspec  # noqa: E402
from support.brokers import ProcessBroker, find_nats_server, find_redis_server  # noqa: E402
from support.nodes import NodeProcess  # noqa: E402

from service.settings import OPTIONS  # noqa: E402

OPTION_NAMES = {option.name for option in OPTIONS}
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

CHANNEL = "bench:xnode"
decode = msgspec.json.decode


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


async def open_ws(url: str) -> ClientConnection:
    ws = await connect(url, proxy=None, compression=None, ping_interval=None, max_size=2**24)
    await ws.recv()  # welcome
    return ws


async def command(ws: ClientConnection, name: str, **fields: object) -> None:
    await ws.send(json.dumps({"type": "system", "payload": {"command": name, **fields}}))


class Subscriber:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.latencies_us: list[float] = []
        self.received = 0
        self.per_run: dict[str, int] = {}
        self.seen: set[int] = set()

    async def run(self) -> None:
        try:
            async for raw in self.ws:
                now = time.perf_counter_ns()
                frame = decode(raw)
                payload = frame.get("payload")
                if frame.get("channel") != CHANNEL or not isinstance(payload, dict):
                    continue
                self.received += 1
                run = payload["run"]
                self.per_run[run] = self.per_run.get(run, 0) + 1
                if run == "latency":
                    self.latencies_us.append((now - payload["t"]) / 1000)
                    self.seen.add(payload["i"])
        except Exception:
            return


async def measure(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    binary = find_nats_server() if backend == "nats" else find_redis_server()
    assert binary is not None, f"no {backend} server binary"
    broker = ProcessBroker(backend, binary, workdir)  # type: ignore[arg-type]
    broker.start()
    cluster = f"lat{uuid.uuid4().hex[:8]}"
    settings: dict[str, object] = {
        "backend": backend, f"{backend}_url": broker.url, "cluster_name": cluster,
        "log_level": "warning", "send_queue_size": 65536,
    }
    # Newer nodes limit client frames per second (token bucket): the
    # publisher sends 200/s for 10 s, so switch the limit off where it exists.
    optional = {"rate_limit": 0, "demo": "false"}
    settings.update({k: v for k, v in optional.items() if k in OPTION_NAMES})
    a = NodeProcess(workdir, node_id=f"{cluster}-a", **settings).start()
    b = NodeProcess(workdir, node_id=f"{cluster}-b", **settings).start()
    try:
        a.wait_ready()
        b.wait_ready()
        subs = [Subscriber(await open_ws(b.ws_url)) for _ in range(args.subscribers)]
        for sub in subs:
            await command(sub.ws, "subscribe", channel=CHANNEL)
            await sub.ws.recv()
        readers = [asyncio.create_task(s.run()) for s in subs]
        publisher = await open_ws(a.ws_url)
        # wait until node A counts every subscriber on B (membership replicated)
        probe = await open_ws(a.ws_url)
        while True:
            await command(probe, "presence", channel=CHANNEL)
            if decode(await probe.recv())["payload"]["count"] == args.subscribers:
                break
            await asyncio.sleep(0.05)
        acks = asyncio.Queue[None]()

        async def read_acks() -> None:
            async for _raw in publisher:
                acks.put_nowait(None)

        ack_reader = asyncio.create_task(read_acks())

        # -- phase 1: fixed rate --------------------------------------------------
        total = int(args.rate * args.seconds)
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            data = {"t": time.perf_counter_ns(), "i": i, "run": "latency"}
            await command(publisher, "publish", channel=CHANNEL, data=data)
        sent_seconds = time.perf_counter() - start
        expected = total * args.subscribers
        deadline = time.monotonic() + 10
        while sum(s.per_run.get("latency", 0) for s in subs) < expected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        delivered = sum(s.per_run.get("latency", 0) for s in subs)
        missing = sorted(set(range(total)) - subs[0].seen)
        assert not missing, f"lost at subscriber 0: {missing[:10]}"
        latencies = [v for s in subs for v in s.latencies_us]
        for _ in range(total):
            await acks.get()

        # -- phase 2: saturation ----------------------------------------------------
        # Closed loop on delivery: at most `window` messages published but not
        # yet received by the slowest subscriber on B, so no queue overflows.
        ack_reader.cancel()

        async def drain_acks() -> None:
            async for _raw in publisher:
                pass

        releaser = asyncio.create_task(drain_acks())
        window = 50
        before = sum(s.received for s in subs)
        sat_start = time.perf_counter()
        published = 0
        while time.perf_counter() - sat_start < args.saturate_seconds:
            while published - min(s.per_run.get("saturate", 0) for s in subs) >= window:
                await asyncio.sleep(0.0005)
            data = {"t": time.perf_counter_ns(), "i": published, "run": "saturate"}
            await command(publisher, "publish", channel=CHANNEL, data=data)
            published += 1
        sat_target = published * args.subscribers
        drain_deadline = time.monotonic() + 30
        while sum(s.per_run.get("saturate", 0) for s in subs) < sat_target:
            if time.monotonic() > drain_deadline:
                break
            await asyncio.sleep(0.01)
        sat_seconds = time.perf_counter() - sat_start
        sat_delivered = sum(s.received for s in subs) - before
        releaser.cancel()
        for task in readers:
            task.cancel()
        for sub in subs:
            await sub.ws.close()
        await publisher.close()
        await probe.close()
        return {
            "backend": backend,
            "messages": total,
            "subscribers": args.subscribers,
            "publish_rate_achieved": round(total / sent_seconds, 1),
            "delivered": delivered,
            "expected": expected,
            "latency_ms_p50": round(pct(latencies, 50) / 1000, 3),
            "latency_ms_p90": round(pct(latencies, 90) / 1000, 3),
            "latency_ms_p99": round(pct(latencies, 99) / 1000, 3),
            "latency_ms_max": round(max(latencies) / 1000, 3),
            "latency_ms_mean": round(statistics.fmean(latencies) / 1000, 3),
            "fixed_rate_frames_per_s": round(delivered / sent_seconds),
            "saturation_publishes_per_s": round(published / sat_seconds, 1),
            "saturation_frames_per_s": round(sat_delivered / sat_seconds),
            "saturation_delivered": f"{sat_delivered}/{sat_target}",
        }
    finally:
        a.stop()
        b.stop()
        broker.close()
        for node in (a, b):
            node.assert_log_clean()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["nats", "redis"])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--saturate-seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            workdir = Path(tmp) / backend
            workdir.mkdir()
            result = await measure(backend, args, workdir)
            print(json.dumps(result), flush=True)
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
