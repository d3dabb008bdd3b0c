"""Replay clips with real ffmpeg: cut from the finished video (intro in front, feeds aligned on
the booking start), checked frame by frame.

Camera 0's frames carry their own number as a barcode (16 bars, bit k = bar k white), so a
decoded frame says exactly which moment of the recording it shows. The test media are made
with ffmpeg directly (no 40 s of real-time recording), laid out like a camera driver's.
"""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import clips, video_jobs
from controller.config import Settings
from controller.context import Context, open_storage
from controller.drivers.builder.clips import cut_clip
from controller.drivers.media_cache import MediaCache
from controller.fsm.marks import record_mark
from controller.recordings import booking_files
from tests._media_fixtures import ffmpeg, make_intro

pytestmark = pytest.mark.slow

START = datetime(2030, 6, 1, 18, 0, tzinfo=UTC)
BAR = 20  # px per bit: 16 bits across a 320 px frame
BARCODE = "geq=lum='if(lt(Y,120),16+219*mod(floor(N/pow(2,floor(X/20))),2),128)':cb=128:cr=128"


def make_barcoded_camera(raw: Path, camera: int, seconds: float, started_at: float,
                         fps: int, gop: int) -> None:  # fmt: skip
    cam = raw / f"cam{camera}"
    cam.mkdir(parents=True)
    source = f"color=black:size=320x240:rate={fps},{BARCODE}" if camera == 0 else (
        f"testsrc=size=320x240:rate={fps}"
    )
    ffmpeg(
        "-f", "lavfi", "-i", source, "-t", str(seconds), "-c:v", "libx264",
        "-preset", "ultrafast", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
        "-pix_fmt", "yuv420p", "-f", "segment", "-segment_time", "2",
        "-segment_format", "mpegts", str(cam / "000-%05d.ts"),
    )  # fmt: skip
    manifest = {"camera": camera, "run": 0, "started_at": started_at, "width": 320,
                "height": 240, "fps": fps, "stopped_at": started_at + seconds}  # fmt: skip
    (cam / "run-000.json").write_text(json.dumps(manifest))


def frame_numbers(path: Path, width: int, height: int = 240) -> list[int]:
    """The barcode of every frame (camera 0 is the left 320 px of the frame)."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    size = width * height
    out = []
    for i in range(len(raw) // size):
        row = raw[i * size + 60 * width : i * size + 61 * width]
        out.append(sum(1 << k for k in range(16) if row[k * BAR + BAR // 2] > 128))
    return out


def recorded_booking(ctx: Context, marks_at: list[float], *, preroll: float, gop: int,
                     cameras: int) -> str:  # fmt: skip
    """A 40 s booking recorded `preroll` s early, marked at `marks_at` s, then finished."""
    clock = {"now": START + timedelta(seconds=1)}
    ctx.store.clock = lambda: clock["now"]
    booking = ctx.store.create(START, START + timedelta(seconds=40), booking_id="bk1",
                               allow_past=True)  # fmt: skip
    ctx.store.fire(booking.id, "start")
    for at in marks_at:
        clock["now"] = START + timedelta(seconds=at)
        record_mark(ctx.store, source="button", camera=ctx.settings.device_id)
    raw = booking_files(ctx.settings, booking.id).raw_dir
    for cam in range(cameras):
        make_barcoded_camera(raw, cam, 40 + preroll, START.timestamp() - preroll,
                             ctx.settings.fps, gop)  # fmt: skip
    ctx.store.fire(booking.id, "finish")
    return booking.id


def build_and_plan(ctx: Context, settings: Settings, booking_id: str) -> list[dict]:
    cache = MediaCache(settings.media_dir)
    outcome = video_jobs.build_video(settings, ctx.store.get(booking_id), cache,
                                     lambda _f, **_detail: None, threading.Event())  # fmt: skip
    extra = {"outputs": [str(p) for p in outcome.outputs]}
    extra |= clips.build_extra(settings, ctx.store, booking_id, outcome.timeline)
    ctx.store.fire(booking_id, "process", changes={"processed_path": str(outcome.outputs[0]),
                                                   "extra": extra})  # fmt: skip
    return extra["clips"]


def test_a_mark_30_s_into_a_40_s_recording_gives_the_right_30_s(ctx: Context,
                                                                   tmp_path: Path) -> None:
    settings = ctx.settings.model_copy(update={"intro": str(make_intro(tmp_path / "i.mp4"))})
    booking_id = recorded_booking(ctx, [30], preroll=2.0, gop=10, cameras=2)
    planned = build_and_plan(ctx, settings, booking_id)
    assert len(planned) == 1
    clip = planned[0]
    # The intro lasts 1 s: booking second 30 is video second 31.
    assert (clip["start_s"], clip["end_s"]) == (pytest.approx(6.0), pytest.approx(36.0))
    assert clip["from"].startswith("2030-06-01T18:00:05")
    booking = ctx.store.get(booking_id)
    storage = open_storage(settings)
    outcome = video_jobs.upload_video(settings, booking, storage, lambda _f, **_detail: None,
                                      threading.Event())  # fmt: skip
    path = Path(clip["path"])
    assert path.name == "bk1-clip01.mp4" and path.parent == settings.processed_dir
    numbers = frame_numbers(path, width=640)
    fps = settings.fps
    # Camera 0 started 2 s before the booking: its frame N shows booking second N/fps - 2.
    assert numbers[0] == pytest.approx((5 + 2) * fps, abs=1)
    assert numbers[-1] == pytest.approx((35 + 2) * fps - 1, abs=1)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # nothing lost
    assert len(numbers) == pytest.approx(30 * fps, abs=2)
    kinds = [(o["kind"], o["key"].rsplit("/", 1)[-1]) for o in outcome.objects]
    assert kinds == [("video", "bk1.mp4"), ("clip", "bk1-clip01.mp4")]


def test_stream_copy_build_keyframe_offset_and_crash_redoes_only_missing_clips(
    ctx: Context,
) -> None:
    # Layout single, nothing drawn: the video is stream-copied and starts on the keyframe
    # before the booking (2.5 s pre-roll, 1 s GOPs: 0.5 s early). Marks at 12 s, 16 s (their
    # clips overlap: one clip, 7 s to 21 s) and 30 s.
    settings = ctx.settings.model_copy(
        update={"layout": "single", "cameras": 1, "clip_before_s": 5.0, "clip_after_s": 5.0}
    )
    booking_id = recorded_booking(ctx, [12, 16, 30], preroll=2.5, gop=10, cameras=1)
    planned = build_and_plan(ctx, settings, booking_id)
    assert [c["name"] for c in planned] == ["clip01", "clip02"]
    timeline = next(iter(ctx.store.get(booking_id).extra["timeline"].values()))
    assert timeline["booking_start_s"] == pytest.approx(0.5, abs=0.01)
    cut: list[Path] = []
    assert clips.ensure_clips(settings, ctx.store.get(booking_id),
                              on_cut=lambda r: cut.append(r.path)) == []  # fmt: skip
    assert len(cut) == 2
    first = frame_numbers(Path(planned[0]["path"]), width=320)
    # Booking second s is camera frame 10 * s + 25: the marks at 12 and 16 s give 7 s to 21 s.
    assert first[0] == pytest.approx(95, abs=1) and first[-1] == pytest.approx(234, abs=1)
    assert len(planned[0]["marks"]) == 2 and len(planned[1]["marks"]) == 1
    second = frame_numbers(Path(planned[1]["path"]), width=320)
    assert second[0] == pytest.approx(275, abs=1) and second[-1] == pytest.approx(374, abs=1)
    # A crash while cutting: clip02 never reached its final name. Only it is cut again.
    Path(planned[1]["path"]).unlink()
    kept = Path(planned[0]["path"]).stat().st_mtime_ns
    cut.clear()
    clips.ensure_clips(settings, ctx.store.get(booking_id), on_cut=lambda r: cut.append(r.path))
    assert cut == [Path(planned[1]["path"])]
    assert Path(planned[0]["path"]).stat().st_mtime_ns == kept


def test_overlapping_marks_merge_and_windows_clamp_to_the_recording() -> None:
    timeline = {"intro_s": 3.0, "booking_start_s": 3.0, "duration_s": 43.0}
    at = [START + timedelta(seconds=s) for s in (30, 10, 20, 39.9)]
    got = clips.windows(at, START, timeline, before_s=25, after_s=5)
    # 10 s -> [3, 18], 20 s -> [3, 28], 30 s -> [8, 38], 39.9 s -> [17.9, 43]: one clip.
    assert [(w.start_s, w.end_s) for w in got] == [(3.0, 43.0)]
    assert len(got[0].marks) == 4
    apart = clips.windows(at[:2], START, timeline, before_s=2, after_s=2)
    assert [(w.start_s, w.end_s) for w in apart] == [(11.0, 15.0), (31.0, 35.0)]
    # A mark in the video's last instant leaves less than MIN_CLIP_S: no clip.
    assert clips.windows([START + timedelta(seconds=44.8)], START, timeline, 0, 5) == []


def test_cut_clip_is_frame_exact_with_edges_re_encoded(tmp_path: Path) -> None:
    source = tmp_path / "v.mp4"
    ffmpeg("-f", "lavfi", "-i", f"color=black:size=320x240:rate=15,{BARCODE}", "-t", "20",
           "-c:v", "libx264", "-preset", "veryfast", "-g", "75", "-pix_fmt", "yuv420p",
           str(source))  # fmt: skip
    result = cut_clip(source, 2.0, 17.0, tmp_path / "c.mp4")
    assert result.method == "smart" and 0 < result.copied_s < 15
    numbers = frame_numbers(result.path, width=320)
    assert numbers == list(range(30, 255))


def test_a_clip_that_cannot_be_cut_is_left_out_and_the_video_still_uploads(
    ctx: Context,
) -> None:
    settings = ctx.settings
    ctx.store.create(START, START + timedelta(seconds=40), booking_id="bk2", allow_past=True)
    for trigger in ("start", "finish"):
        ctx.store.fire("bk2", trigger)
    video = booking_files(settings, "bk2").processed_path
    video.parent.mkdir(parents=True, exist_ok=True)
    video.write_bytes(b"not a video at all")
    plan = [{"name": "clip01", "source": str(video), "path": str(clips.clip_path(video, 1)),
             "start_s": 5.0, "end_s": 35.0}]  # fmt: skip
    ctx.store.fire("bk2", "process", changes={"processed_path": str(video),
                                              "extra": {"outputs": [str(video)], "clips": plan}})
    outcome = video_jobs.upload_video(settings, ctx.store.get("bk2"), open_storage(settings),
                                lambda _f, **_detail: None, threading.Event())  # fmt: skip
    assert [o["kind"] for o in outcome.objects] == ["video"]
    assert len(outcome.notes) == 1 and outcome.notes[0].startswith("clip clip01 not cut:")
    assert not clips.clip_path(video, 1).exists()


def test_a_rebuild_drops_the_clips_of_the_earlier_build(ctx: Context) -> None:
    ctx.store.create(START, START + timedelta(seconds=40), booking_id="bk3", allow_past=True)
    video = booking_files(ctx.settings, "bk3").processed_path
    video.parent.mkdir(parents=True, exist_ok=True)
    stale = clips.clip_path(video, 1)
    stale.write_bytes(b"cut from the previous video")
    other = video.with_name("bk30-clip01.mp4")  # another booking's clip: not touched
    other.write_bytes(b"x")
    timeline = {str(video): {"intro_s": 1.0, "booking_start_s": 1.0, "duration_s": 41.0}}
    extra = clips.build_extra(ctx.settings, ctx.store, "bk3", timeline)
    assert extra["clips"] == [] and not stale.exists() and other.exists()
