"""State machine benchmark: with 100,000 historical bookings in state.db, how long do the
supervisor's due-work query and one transition commit take? Goals: both <= 5 ms median.

    .venv/bin/python bench/fsm.py [--bookings 100000] [--json bench/results/fsm.json]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert

from bench._table import emit
from controller.db import Booking, Database, TransitionRow
from controller.fsm import BookingStore

HAPPY = ["start", "finish", "process", "upload"]
PATH = ["confirmed", "recording", "completed", "video_processed", "video_uploaded"]


def populate(db: Database, n: int, now: datetime) -> None:
    rng = random.Random(1)
    batch = 5000
    for lo in range(0, n, batch):
        bookings, history = [], []
        for i in range(lo, min(n, lo + batch)):
            start = now - timedelta(days=400) + timedelta(minutes=90 * i)
            # Mostly finished history, a few of everything else, like a box after a year.
            done = start < now - timedelta(hours=2)
            state = "video_uploaded" if done else "confirmed"
            if done and rng.random() < 0.01:
                state = rng.choice(["cancelled", "missed", "upload_failed"])
            steps = 4 if state == "video_uploaded" else (1 if state != "confirmed" else 0)
            bookings.append({
                "id": f"h{i:07d}", "user_id": f"u{i % 500}", "camera_id": f"court{i % 2}",
                "device_id": "bench", "start_time": start, "end_time": start + timedelta(hours=1),
                "state": state, "version": steps, "attempts": 0, "extra_json": "{}",
                "next_attempt_at": now + timedelta(hours=1) if state == "upload_failed" else None,
                "created_at": start, "updated_at": start,
            })
            for k in range(steps):
                history.append({
                    "booking_id": f"h{i:07d}", "seq": k + 1, "from_state": PATH[k],
                    "to_state": PATH[k + 1] if state == "video_uploaded" else state,
                    "trigger": HAPPY[k] if state == "video_uploaded" else "cancel",
                    "at": start,
                })
        with db.session() as session:
            session.execute(insert(Booking), bookings)
            if history:
                session.execute(insert(TransitionRow), history)


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'state.db'}")
        t = time.perf_counter()
        populate(db, args.bookings, now)
        fill_s = time.perf_counter() - t
        store = BookingStore(db, device_id="bench")
        due_ms = timed(lambda: store.due(now, 3.0), args.repeat)
        ids = [f"live{i}" for i in range(args.repeat)]
        for i, booking_id in enumerate(ids):
            start = now + timedelta(days=1000, minutes=90 * i)
            store.create(start, start + timedelta(hours=1), booking_id=booking_id,
                         camera_id="benchcam")
        it = iter(ids)
        commit_ms = timed(lambda: store.fire(next(it), "start"), args.repeat)
        db.dispose()
    due_med, commit_med = statistics.median(due_ms), statistics.median(commit_ms)
    p95 = lambda xs: statistics.quantiles(xs, n=20)[-1]  # noqa: E731
    rows = [
        ("bookings in state.db", f"{args.bookings:,}", "", ""),
        ("fill time", f"{fill_s:.1f} s", "", ""),
        ("due-work query median", f"{due_med:.2f} ms", "<= 5 ms", "yes" if due_med <= 5 else "NO"),
        ("due-work query p95", f"{p95(due_ms):.2f} ms", "", ""),
        ("transition commit median", f"{commit_med:.2f} ms", "<= 5 ms",
         "yes" if commit_med <= 5 else "NO"),
        ("transition commit p95", f"{p95(commit_ms):.2f} ms", "", ""),
    ]
    emit("bench/fsm.py: booking state machine on SQLite (WAL)", rows, {
        "bookings": args.bookings, "due_query_median_ms": due_med,
        "due_query_p95_ms": p95(due_ms), "commit_median_ms": commit_med,
        "commit_p95_ms": p95(commit_ms), "fill_s": fill_s,
    }, args.json_path)


if __name__ == "__main__":
    main()
