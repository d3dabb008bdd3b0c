"""Staff page benchmark: what one open page costs the box. The real `ezrec api` server on
loopback, a year of finished bookings stored (10,000), a full page of bookings ahead (100,
the most the page shows) and a week of videos; the page's poll (`GET /page/live`, every 2 s
while it is open) and a load of `GET /` are timed one after another, as one browser does.

    .venv/bin/python bench/page.py [--polls 200] [--json bench/results/page.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import insert

from api.page import POLL_S
from api.page_view import BOOKINGS_SHOWN
from bench._table import emit
from bench.api import AUTH, CAMERA, free_port, percentile, populate, start_server
from controller.db import Booking, Database

GOAL_P99_MS = 200.0  # a tenth of the poll interval: one open page costs < 10 % of a core


def ahead_and_recent(db: Database, now: datetime) -> None:
    rows = []
    for i in range(BOOKINGS_SHOWN):  # the page's worth of bookings from now on
        start = now + timedelta(minutes=60 * i)
        rows.append({"id": f"next{i:03d}", "user_id": f"u{i}", "camera_id": CAMERA,
                     "device_id": "bench", "start_time": start,
                     "end_time": start + timedelta(minutes=45), "state": "confirmed",
                     "version": 0, "attempts": 0, "extra_json": "{}",
                     "created_at": now, "updated_at": now})
    for i in range(7 * 12):  # a week of finished videos, 12 a day
        start = now - timedelta(days=7) + timedelta(hours=2 * i)
        rows.append({"id": f"week{i:03d}", "user_id": f"u{i}", "camera_id": "court2",
                     "device_id": "bench", "start_time": start,
                     "end_time": start + timedelta(minutes=45), "state": "video_uploaded",
                     "version": 4, "attempts": 0,
                     "extra_json": '{"presigned_url": "https://bucket.example/v.mp4?sig=x"}',
                     "processed_path": f"/nowhere/week{i:03d}.mp4",
                     "created_at": start, "updated_at": start})
    with db.session() as session:
        session.execute(insert(Booking), rows)


def timed(http: httpx.Client, path: str, n: int, headers: dict[str, str]) -> dict[str, Any]:
    latencies, sizes = [], []
    for _ in range(n):
        t = time.perf_counter()
        r = http.get(path, headers=headers)
        latencies.append(time.perf_counter() - t)
        r.raise_for_status()
        sizes.append(len(r.content))
    return {"requests": n, "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "bytes": max(sizes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=10_000)
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ezrec-bench-page-") as tmp:
        data_dir = Path(tmp)
        db = Database(f"sqlite:///{data_dir / 'state.db'}")  # migrated on open
        now = datetime.now(UTC)
        populate(db, args.stored, now - timedelta(days=30))  # history, all finished
        ahead_and_recent(db, now)
        db.dispose()
        port = free_port()
        proc = start_server(data_dir, port, data_dir / "api.log")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                http.get("/page/live")  # warm: the status report's first CPU sample
                poll = timed(http, "/page/live", args.polls, AUTH)
                anonymous = timed(http, "/page/live", args.polls // 4, {})
                page = timed(http, "/", args.polls // 4, {})
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    cpu_share = poll["p50_ms"] / (POLL_S * 1000) * 100
    rows = [
        ("bookings stored", f"{args.stored + BOOKINGS_SHOWN + 84:,}", "", ""),
        ("GET /page/live p50 (with token)", f"{poll['p50_ms']:.1f} ms", "", ""),
        ("GET /page/live p99 (with token)", f"{poll['p99_ms']:.1f} ms",
         f"<= {GOAL_P99_MS:.0f} ms", "yes" if poll["p99_ms"] <= GOAL_P99_MS else "NO"),
        ("GET /page/live p50 (no token)", f"{anonymous['p50_ms']:.1f} ms", "", ""),
        ("GET /page/live size", f"{poll['bytes'] / 1000:.0f} kB", "", ""),
        ("GET / p50", f"{page['p50_ms']:.1f} ms", "", ""),
        (f"server busy for one open page (a poll every {POLL_S} s)", f"{cpu_share:.1f} %",
         "(info)", ""),
    ]
    emit("bench/page.py: the staff page's poll on ezrec api (1 worker, loopback)", rows,
         {"poll": poll, "anonymous_poll": anonymous, "page": page, "stored": args.stored,
          "poll_s": POLL_S, "bookings_shown": BOOKINGS_SHOWN}, args.json_path)


if __name__ == "__main__":
    main()
