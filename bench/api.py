"""HTTP API benchmark: the real `ezrec api` server (uvicorn, one worker) on loopback, with
10,000 bookings already stored on the camera that new bookings go to.

Goals (issue 6): GET /status >= 500 req/s; POST /bookings (non-overlapping) p99 <= 50 ms at
50 concurrent clients. The POST load is open-loop and bounded: 50 clients each send one booking
every --interval seconds (25 req/s by default), --per-client times. A closed-loop run (50
clients back to back, no pause) is also measured and reported for information: there, by
Little's law, latency is only 50 / throughput.

    .venv/bin/python bench/api.py [--stored 10000] [--json bench/results/api.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import func, insert, select

from bench._table import emit
from controller.db import Booking, Database

TOKEN = "bench-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAMERA = "court1"


def populate(db: Database, n: int, now: datetime) -> None:
    """A year of one court's bookings (mostly finished) plus some confirmed ones ahead."""
    rows = []
    for i in range(n):
        start = now - timedelta(days=365) + timedelta(minutes=50 * i)
        rows.append({
            "id": f"h{i:06d}", "user_id": f"u{i % 300}", "camera_id": CAMERA,
            "device_id": "bench", "start_time": start, "end_time": start + timedelta(minutes=45),
            "state": "video_uploaded" if start < now else "confirmed",
            "version": 4 if start < now else 0, "attempts": 0, "extra_json": "{}",
            "created_at": start, "updated_at": start,
        })
    with db.session() as session:
        for lo in range(0, n, 5000):
            session.execute(insert(Booking), rows[lo:lo + 5000])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def status_load(url: str, clients: int, total: int, max_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + max_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as http:
        await http.get("/status")  # fill the cache once: the first one measures CPU for 0.1 s

        async def worker(count: int) -> None:
            nonlocal errors
            for _ in range(count):
                if time.perf_counter() > deadline:
                    return
                t = time.perf_counter()
                r = await http.get("/status")
                latencies.append(time.perf_counter() - t)
                errors += r.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(total // clients) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {
        "requests": len(latencies), "errors": errors, "seconds": elapsed,
        "rps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


class Slots:
    """Non-overlapping future slots on the benchmark camera, one per POST."""

    def __init__(self, first: datetime) -> None:
        self.next = first

    def take(self) -> dict[str, str]:
        start = self.next
        self.next += timedelta(hours=1)
        return {"start_time": start.isoformat(), "end_time": (start + timedelta(minutes=45))
                .isoformat(), "camera_id": CAMERA, "user_id": "bench"}


async def post_load(url: str, clients: int, per_client: int, interval: float | None,
                    slots: Slots) -> dict[str, Any]:
    """interval None: closed loop (each client sends its next POST at once)."""
    latencies: list[float] = []
    lag: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30, headers=AUTH) as http:
        await asyncio.gather(*(http.get("/health") for _ in range(clients)))  # open connections
        rng = random.Random(7)
        t0 = time.perf_counter()

        async def client(offset: float) -> None:
            for k in range(per_client):
                if interval is not None:
                    due = t0 + offset + k * interval
                    await asyncio.sleep(max(0.0, due - time.perf_counter()))
                    lag.append(max(0.0, time.perf_counter() - due))
                t = time.perf_counter()
                r = await http.post("/bookings", json=slots.take())
                latencies.append(time.perf_counter() - t)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        # Clients start spread over one interval, as independent callers would.
        spread = interval or 0.0
        await asyncio.gather(*(client(rng.uniform(0, spread)) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {
        "requests": len(latencies), "statuses": statuses, "seconds": elapsed,
        "rps": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "client_lag_max_ms": (max(lag) * 1000) if lag else 0.0,
    }


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EZREC")}
    env.update(EZREC_DATA_DIR=str(data_dir), EZREC_CAMERA_DRIVER="synthetic",
               EZREC_DEVICE_ID="bench", EZREC_API_TOKEN=TOKEN)
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "controller", "api", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ezrec api exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("ezrec api did not start within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stored", type=int, default=10_000, help="bookings stored beforehand")
    parser.add_argument("--status-requests", type=int, default=5_000)
    parser.add_argument("--status-clients", type=int, default=8)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-client", type=int, default=20)
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between one client's POSTs (open loop)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    now = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="ezrec-bench-api-") as tmp:
        data_dir = Path(tmp)
        db = Database(f"sqlite:///{data_dir / 'state.db'}")
        populate(db, args.stored, now)
        port = free_port()
        proc = start_server(data_dir, port, data_dir / "api.log")
        url = f"http://127.0.0.1:{port}"
        try:
            status = asyncio.run(status_load(url, args.status_clients, args.status_requests, 30))
            slots = Slots(now + timedelta(days=400))
            open_loop = asyncio.run(
                post_load(url, args.clients, args.per_client, args.interval, slots))
            closed_loop = asyncio.run(post_load(url, args.clients, args.per_client, None, slots))
        except Exception:
            print((data_dir / "api.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with db.reader() as session:
            stored = session.scalar(select(func.count()).select_from(Booking))
        db.dispose()
    created = open_loop["statuses"].get(201, 0) + closed_loop["statuses"].get(201, 0)
    assert stored == args.stored + created, (stored, created)
    offered = args.clients / args.interval

    def ok(flag: bool) -> str:
        return "yes" if flag else "NO"

    all_201 = set(open_loop["statuses"]) == {201}
    rows = [
        ("bookings stored before", f"{args.stored:,}", "10,000", ok(args.stored >= 10_000)),
        (f"GET /status ({args.status_clients} clients)", f"{status['rps']:.0f} req/s",
         ">= 500 req/s", ok(status["rps"] >= 500 and status["errors"] == 0)),
        ("GET /status p99", f"{status['p99_ms']:.1f} ms", "", ""),
        (f"POST /bookings p50 ({args.clients} clients, {offered:.0f} req/s offered)",
         f"{open_loop['p50_ms']:.1f} ms", "", ""),
        ("POST /bookings p95", f"{open_loop['p95_ms']:.1f} ms", "", ""),
        ("POST /bookings p99", f"{open_loop['p99_ms']:.1f} ms", "<= 50 ms",
         ok(open_loop["p99_ms"] <= 50 and all_201)),
        ("POST /bookings max", f"{open_loop['max_ms']:.1f} ms", "", ""),
        ("POST statuses", ", ".join(f"{k}: {v}" for k, v in open_loop["statuses"].items()),
         "all 201", ok(all_201)),
        ("load generator lag max", f"{open_loop['client_lag_max_ms']:.1f} ms", "", ""),
        (f"closed loop POST throughput ({args.clients} clients)",
         f"{closed_loop['rps']:.0f} req/s", "(info)", ""),
        ("closed loop POST p50 / p99",
         f"{closed_loop['p50_ms']:.0f} / {closed_loop['p99_ms']:.0f} ms", "(info)", ""),
    ]
    emit("bench/api.py: ezrec api (uvicorn, 1 worker) on 127.0.0.1", rows, {
        "stored": args.stored, "cpus": os.cpu_count(), "status": status,
        "post_open_loop": open_loop | {"offered_rps": offered, "clients": args.clients},
        "post_closed_loop": closed_loop | {"clients": args.clients},
    }, args.json_path)


if __name__ == "__main__":
    main()
