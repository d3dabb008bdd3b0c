"""`ezrec api` as a real process on a free loopback port, driven over HTTP with httpx."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

TOKEN = "server-test-token-0123456789"
EZREC = [sys.executable, "-m", "controller"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EZREC")}
    env.update(EZREC_DATA_DIR=str(data_dir), EZREC_CAMERA_DRIVER="synthetic",
               EZREC_WIDTH="320", EZREC_HEIGHT="240", EZREC_FPS="10", EZREC_DEVICE_ID="srv")
    env.update(extra)
    return env


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ezrec api exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("ezrec api did not answer /health in time")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*EZREC, "api", "--port", str(port)],
            env=env_for(tmp_path, EZREC_API_TOKEN=TOKEN),
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield Server(proc, url, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_real_server_round_trip(server: Server) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        body = {"start_time": "2031-03-01T18:00:00+01:00", "end_time": "2031-03-01T19:00:00+01:00",
                "id": "live-1", "user_id": "u1"}
        r = http.post("/bookings", json=body)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = http.post("/bookings", json=body, headers=auth)
        assert r.status_code == 201, r.text
        assert http.post("/bookings", json=body, headers=auth).status_code == 409
        assert [b["id"] for b in http.get("/bookings").json()] == ["live-1"]
        r = http.patch("/bookings/live-1", json={"end_time": "2031-03-01T19:30:00+01:00"},
                       headers=auth)
        assert r.status_code == 200 and r.json()["end_time"] == "2031-03-01T18:30:00+00:00"
        assert http.delete("/bookings/live-1", headers=auth).json()["state"] == "cancelled"
        shown = http.get("/bookings/live-1").json()
        assert [h["trigger"] for h in shown["history"]] == ["reschedule", "cancel"]
        assert http.get("/status").json()["queue"]["cancelled"] == 1
        assert "ezrec_bookings{state=\"cancelled\"} 1.0" in http.get("/metrics").text
        r = http.get("/cameras/0/preview.jpg")
        assert r.status_code == 200 and r.content.startswith(b"\xff\xd8")
        r = http.post("/bookings", content=b"x" * 70_000, headers=auth | {
            "Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
        assert "server" not in r.headers  # no version banner
    # The same database is seen by the CLI, in another process.
    out = subprocess.run([*EZREC, "show", "live-1", "--json"], capture_output=True, text=True,
                         env=env_for(server.log.parent), cwd=server.log.parent, timeout=60)
    assert '"state": "cancelled"' in out.stdout, out.stderr
    server.proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal (systemd counts that as clean).
    assert server.proc.wait(timeout=10) in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Application shutdown complete" in log
    assert TOKEN not in log and "Traceback" not in log


@pytest.mark.parametrize(
    ("extra", "args", "needle"),
    [
        ({"EZREC_API_HOST": "0.0.0.0"}, [], "EZREC_API_TOKEN is not set"),
        ({}, ["--host", "192.0.2.10"], "EZREC_API_TOKEN is not set"),
        ({"EZREC_API_TOKEN": "tiny-tok"}, ["--host", "::"], "shorter than 16"),
    ],
)
def test_refuses_a_non_loopback_bind_without_a_token(
    tmp_path: Path, extra: dict[str, str], args: list[str], needle: str
) -> None:
    done = subprocess.run([*EZREC, "api", *args], env=env_for(tmp_path, **extra),
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing"), done.stderr
    assert needle in lines[0]
    assert "tiny-tok" not in lines[0]  # a token is never printed, not even a bad one


@pytest.mark.slow
def test_port_in_use_is_a_failure(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([*EZREC, "api", "--port", str(port)], env=env_for(tmp_path),
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    assert "address already in use" in done.stderr
