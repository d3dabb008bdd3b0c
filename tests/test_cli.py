from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import main


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EZREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EZREC_DEVICE_ID", "court1")
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> tuple[int, str, str]:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output + result.stderr
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_add_list_show_cancel(run) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = run("add", "--start", "2030-06-01T18:00:00+02:00", "--end",
                    "2030-06-01T19:00:00+02:00", "--user", "u-7", "--id", "match-1")
    assert "created match-1" in out
    _, out, _ = run("bookings", "--json")
    listed = json.loads(out)
    assert [b["id"] for b in listed] == ["match-1"]
    assert listed[0]["start_time"] == "2030-06-01T16:00:00+00:00"
    assert listed[0]["camera_id"] == "court1" and listed[0]["user_id"] == "u-7"
    _, out, _ = run("bookings")
    assert "match-1" in out and "confirmed" in out and "STATE" in out
    run("cancel", "match-1")
    _, out, _ = run("show", "match-1", "--json")
    shown = json.loads(out)
    assert shown["state"] == "cancelled"
    assert [(h["from"], h["to"], h["trigger"]) for h in shown["history"]] == [
        ("confirmed", "cancelled", "cancel")
    ]
    _, out, _ = run("show", "match-1")
    assert "cancelled by operator" in out
    _, out, _ = run("bookings", "--state", "confirmed", "--json")
    assert json.loads(out) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "--start", "2030-06-01T18:00:00", "--end", "+1h"), "no UTC offset"),
        (("add", "--start", "+2h", "--end", "+1h"), "is not after start"),
        (("add", "--start", "tomorrow", "--end", "+1h"), "is not an ISO 8601 time"),
        (("show", "nope"), "no booking 'nope'"),
        (("retry", "nope"), "no booking 'nope'"),
    ],
)
def test_bad_input_is_one_clear_line(run, args: tuple[str, ...], message: str) -> None:  # type: ignore[no-untyped-def]
    code, _out, err = run(*args, ok=False)
    assert code != 0
    assert message in err and "Traceback" not in err


def test_overlap_and_invalid_admin_actions(run) -> None:  # type: ignore[no-untyped-def]
    run("add", "--start", "+1h", "--end", "+2h", "--id", "a")
    code, _, err = run("add", "--start", "+90m", "--end", "+3h", ok=False)
    assert code != 0 and "overlaps booking a" in err
    code, _, err = run("retry", "a", ok=False)
    assert code != 0 and "cannot retry a booking in state 'confirmed'" in err
    run("add", "--start", "+90m", "--end", "+3h", "--camera", "court2")


def test_graph(run) -> None:  # type: ignore[no-untyped-def]
    _, out, _ = run("graph")
    assert "stateDiagram-v2" in out and "recording --> completed: finish" in out
    _, out, _ = run("graph", "--format", "dot")
    assert out.startswith("digraph")


def test_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    env = {"EZREC_DATA_DIR": str(tmp_path), "EZREC_FPS": "lots", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "bookings"],
        env=env, capture_output=True, text=True, check=False,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("error: bad setting EZREC_FPS")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_doctor_says_what_to_fix(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("EZREC_CAMERA_DRIVER", "synthetic")
    monkeypatch.setenv("EZREC_WIDTH", "160")
    monkeypatch.setenv("EZREC_HEIGHT", "120")
    monkeypatch.setenv("EZREC_MIN_FREE_DISK_MB", "1")
    _, out, _ = run("doctor", "--json")
    checks = {c["check"]: c for c in json.loads(out)}
    assert checks["ffmpeg"]["ok"] and "libx264" in checks["ffmpeg"]["detail"]
    assert checks["camera 0"]["ok"] and checks["storage"]["ok"] and checks["disk"]["ok"]
    # The other drivers are listed for information: what they see, not a failure.
    assert checks["v4l2"]["ok"] is None and "not found" in checks["v4l2"]["detail"]
    assert checks["picamera2"]["ok"] is None
    monkeypatch.setenv("EZREC_LOGO", "/nonexistent/logo.png")
    monkeypatch.setenv("EZREC_MIN_FREE_DISK_MB", str(10**9))
    code, out, _ = run("doctor", ok=False)
    assert code == 1
    assert "FAIL  logo" in out and "FAIL  disk" in out


def test_status_without_supervisor(run) -> None:  # type: ignore[no-untyped-def]
    run("add", "--start", "+1h", "--end", "+2h", "--id", "a")
    _, out, _ = run("status", "--json")
    report = json.loads(out)
    assert report["supervisor"]["running"] is False
    assert report["queue"]["confirmed"] == 1
    assert report["disk"]["free_mb"] > 0
    _, out, _ = run("status")
    assert "NOT running" in out and "confirmed=1" in out


def test_operator_retry_of_an_exhausted_failure(run) -> None:  # type: ignore[no-untyped-def]
    from controller.context import open_context

    run("add", "--start", "+1h", "--end", "+2h", "--id", "late")
    ctx = open_context()
    try:
        ctx.store.fire("late", "fail", error="camera 0 not found")
        for _ in range(ctx.settings.max_attempts):
            ctx.store.fire("late", "retry")
            ctx.store.fire("late", "fail", error="camera 0 not found")
        failed = ctx.store.get("late")
        assert failed.state == "recording_failed" and failed.next_attempt_at is None
    finally:
        ctx.close()
    _, out, _ = run("retry", "late")
    assert out.strip() == "late: confirmed"
    _, out, _ = run("show", "late", "--json")
    shown = json.loads(out)
    assert shown["state"] == "confirmed" and shown["attempts"] == 0
    assert shown["history"][-1]["detail"] == "retry requested by operator"


def test_doctor_checks_are_data(tmp_path: Path) -> None:
    from controller.config import load_settings
    from controller.doctor import Check, Level, check_cloud, check_disk

    s = load_settings(data_dir=tmp_path, min_free_disk_mb=10**9)
    disk = check_disk(s)
    assert disk.level is Level.FAIL and disk.ok is False
    assert "EZREC_MIN_FREE_DISK_MB=1000000000" in disk.detail
    assert check_cloud(s).ok and "sync off" in check_cloud(s).message
    assert Check("x", Level.FAIL, "found", "do this").to_dict() == {
        "check": "x", "ok": False, "detail": "found: do this"
    }
    assert Check("v4l2", Level.INFO, "seen").to_dict() == {
        "check": "v4l2", "ok": None, "detail": "seen", "info": True
    }


def test_verb_modules_never_import_the_group() -> None:
    """The group imports the verbs; a verb importing the group back would be a circle."""
    import ast

    import controller.cli

    for path in Path(controller.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "controller.cli", f"{path.name} imports controller.cli"


@pytest.mark.slow
def test_build_now_prints_and_builds_in_chunks(run, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime

    from tests._media_fixtures import make_camera

    for key, value in {"EZREC_WIDTH": "320", "EZREC_HEIGHT": "240", "EZREC_FPS": "15",
                       "EZREC_CHUNK_S": "1", "EZREC_CAMERAS": "2"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    start = datetime.fromisoformat("2030-06-01T18:00:00+00:00")
    run("add", "--start", start.isoformat(), "--end", "2030-06-01T18:00:03+00:00", "--id", "b1")
    raw = tmp_path / "recordings" / "raw" / "b1"
    make_camera(raw, 0, 3, started_at=start.timestamp())
    make_camera(raw, 1, 3, started_at=start.timestamp(), source="testsrc2")
    _, out, _ = run("build", "b1", "--print")
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("ffmpeg ") for line in lines)
    _, out, _ = run("build", "b1")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["chunks"] == 3 and result["cpu_s"] > 0
    assert result["duration_s"] == pytest.approx(3.0, abs=0.1)
    assert Path(result["outputs"][0]).is_file()
    # Nothing recorded: one clear line, no traceback.
    run("add", "--start", "2030-06-01T19:00:00+00:00", "--end", "2030-06-01T19:00:03+00:00",
        "--id", "b2")
    code, out, err = run("build", "b2", ok=False)
    assert code != 0 and "no recorded segments on disk" in err and "Traceback" not in err + out
