"""Upload benchmark: a 200 MB file to a loopback S3 server (moto, in its own process).

Measures our resumable multipart upload against one boto3 ``upload_file`` of the same file,
then kills an upload at ~50 % — once with SIGKILL (a power cut) and once with SIGTERM (the
supervisor's clean stop) — and counts, from the bytes botocore hands to the socket, what the
resume sends again. Goal: at most one part re-sent after a clean stop, and after a hard kill at
most the parts that were in flight (``S3_CONCURRENCY`` of them).

    .venv/bin/python bench/upload.py [--size-mb 200] [--part-mb 8] [--concurrency 1]
                                      [--json bench/results/upload.json]

Loopback numbers measure CPU cost (hashing, HTTP, moto), not a venue's uplink.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3

from bench._table import emit
from controller.drivers.storage import FileCheckpoint, KeyScheme, UploadInterrupted
from controller.drivers.storage.s3 import S3Storage
from controller.drivers.storage.s3_plan import MiB, plan_file

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
BUCKET = "ezrec-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def storage(endpoint: str, part_mb: int, concurrency: int) -> S3Storage:
    return S3Storage(
        bucket=BUCKET, scheme=KeyScheme("{prefix}/{booking}.mp4", prefix="bench", device="b"),
        endpoint_url=endpoint, part_size=part_mb * MiB, concurrency=concurrency,
    )


class Wire:
    """Part numbers and body bytes as botocore hands them to the socket."""

    def __init__(self, s3: S3Storage, echo: bool = False) -> None:
        self.bytes = 0
        self.numbers: set[int] = set()
        self.echo = echo
        self._lock = threading.Lock()
        s3.client.meta.events.register("before-send.s3.UploadPart", self._hook)

    def _hook(self, request: Any, **_: Any) -> None:
        # The body may be bytes or a file-like wrapper by now; its length header is exact.
        size = int(request.headers.get("Content-Length", 0))
        with self._lock:
            self.bytes += size
            for n in parse_qs(urlsplit(request.url).query).get("partNumber", []):
                self.numbers.add(int(n))
                if self.echo:
                    os.write(1, f"start {n}\n".encode())


def child(args: argparse.Namespace) -> int:
    """The process that gets killed: uploads, echoing started parts and progress."""
    s3 = storage(args.endpoint, args.part_mb, args.concurrency)
    Wire(s3, echo=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def progress(done: int, total: int) -> None:
        os.write(1, f"progress {done} {total}\n".encode())

    try:
        s3.upload(Path(args.file), args.key, checkpoint=FileCheckpoint(Path(args.checkpoint)),
                  on_progress=progress, stop=stop)
    except UploadInterrupted:
        return 3
    return 0


def kill_and_resume(args: argparse.Namespace, endpoint: str, path: Path, sig: int,
                    key: str, work: Path) -> dict[str, Any]:
    cp = work / f"{key}.json"
    cmd = [sys.executable, __file__, "--child", "--endpoint", endpoint, "--file", str(path),
           "--key", key, "--checkpoint", str(cp), "--part-mb", str(args.part_mb),
           "--concurrency", str(args.concurrency)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=os.environ)
    started: set[int] = set()
    killed_at = 0
    assert proc.stdout is not None
    for raw in proc.stdout:
        word, *rest = raw.decode().split()
        if word == "start":
            started.add(int(rest[0]))
        elif word == "progress":
            done, total = int(rest[0]), int(rest[1])
            if not killed_at and done >= total // 2:
                killed_at = done
                proc.send_signal(sig)
    proc.wait()
    recorded = {p["number"] for p in (FileCheckpoint(cp).load() or {}).get("parts", [])}
    s3 = storage(endpoint, args.part_mb, args.concurrency)
    wire = Wire(s3)
    t0 = time.perf_counter()
    obj = s3.upload(path, key, checkpoint=FileCheckpoint(cp))
    resume_s = time.perf_counter() - t0
    s3.verify(obj, deep=False)
    plan = plan_file(path, args.part_mb * MiB)
    again = wire.numbers & started
    resent = sum(plan.span(n)[1] for n in again)
    return {
        "signal": signal.Signals(sig).name, "exit": proc.returncode, "killed_at_bytes": killed_at,
        "parts_total": plan.parts, "parts_recorded": len(recorded),
        "parts_started_before_kill": len(started), "parts_resent": len(again),
        "bytes_resent": resent, "bytes_sent_on_resume": wire.bytes, "resume_s": resume_s,
        "recorded_part_resent": bool(wire.numbers & recorded),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--part-mb", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.update(FAKE_AWS)
    if args.child:
        return child(args)

    server, endpoint = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="ezrec-bench-") as tmp:
            work = Path(tmp)
            path = work / "video.mp4"
            with path.open("wb") as fh:
                for _ in range(args.size_mb):
                    fh.write(os.urandom(MiB))
            size = path.stat().st_size
            client = boto3.session.Session().client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket=BUCKET)

            # Alternate the two (A B B A) and delete after each, so neither pays for the
            # other's objects in moto's memory; the best of two runs each is reported.
            s3 = storage(endpoint, args.part_mb, args.concurrency)
            runs: dict[str, list[float]] = {"boto3": [], "ours": []}

            def run(which: str) -> None:
                t0 = time.perf_counter()
                if which == "boto3":
                    client.upload_file(str(path), BUCKET, "bench/run.mp4")
                else:
                    s3.upload(path, "bench/run.mp4")
                runs[which].append(time.perf_counter() - t0)
                client.delete_object(Bucket=BUCKET, Key="bench/run.mp4")

            for which in ("boto3", "ours", "ours", "boto3"):
                run(which)
            boto_s, ours_s = min(runs["boto3"]), min(runs["ours"])

            t0 = time.perf_counter()
            plan_file(path, args.part_mb * MiB)
            hash_s = time.perf_counter() - t0

            hard = kill_and_resume(args, endpoint, path, signal.SIGKILL, "hard", work)
            soft = kill_and_resume(args, endpoint, path, signal.SIGTERM, "soft", work)
    finally:
        server.terminate()
        server.wait(timeout=10)

    mb = size / MiB
    part = args.part_mb * MiB
    rows = [
        ("file", f"{mb:.0f} MiB, {args.part_mb} MiB parts, {args.concurrency} in flight", "", ""),
        ("boto3 upload_file", f"{boto_s:.2f} s  {mb / boto_s:.0f} MiB/s", "", ""),
        ("ours (verified)", f"{ours_s:.2f} s  {mb / ours_s:.0f} MiB/s", ">= 0.7 x boto3",
         "yes" if ours_s <= boto_s / 0.7 else "NO"),
        ("  of which hashing", f"{hash_s:.2f} s", "", ""),
    ]
    for name, res, goal_bytes in (("SIGKILL", hard, args.concurrency * part),
                                  ("SIGTERM", soft, part)):
        ok = res["bytes_resent"] <= goal_bytes and not res["recorded_part_resent"]
        rows.append((
            f"{name} at {res['killed_at_bytes'] / size:.0%}: re-sent",
            f"{res['bytes_resent'] / MiB:.0f} MiB ({res['parts_resent']} parts)",
            f"<= {goal_bytes // MiB} MiB", "yes" if ok else "NO",
        ))
    data = {
        "size_bytes": size, "part_size": part, "concurrency": args.concurrency,
        "boto3_upload_file_s": boto_s, "ours_s": ours_s, "hash_s": hash_s,
        "boto3_mib_s": mb / boto_s, "ours_mib_s": mb / ours_s, "sigkill": hard, "sigterm": soft,
        "runs_s": runs,
    }
    emit("S3 upload to a loopback moto server", rows, data, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
