"""The video builder against real ffmpeg on small real inputs (320x240, 15 fps, 2-3 s)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.drivers.builder import (
    BuildError,
    BuildSpec,
    Feed,
    Overlay,
    build,
    command_lines,
    feeds_from_raw_dir,
    output_paths,
    overlays_from_settings,
    spec_from_settings,
    validate,
)
from controller.drivers.builder.ffmpeg_run import run_ffmpeg
from controller.drivers.builder.plan import place_overlays
from controller.drivers.ffprobe import ffprobe
from tests._media_fixtures import (
    FPS,
    ffmpeg,
    frame_at,
    make_camera,
    make_intro,
    make_logo,
    mean_color,
    mean_diff,
)

W, H = 320, 240
T0 = 1_000_000.0  # camera 0's first frame (epoch s); camera 1 starts 0.5 s later


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two cameras of unequal length, an intro (with sound), a red and a green logo."""
    root = tmp_path_factory.mktemp("assets")
    make_camera(root / "raw", 0, 3, started_at=T0)
    make_camera(root / "raw", 1, 2, started_at=T0 + 0.5, source="testsrc2")
    return {
        "root": root,
        "raw": root / "raw",
        "intro": make_intro(root / "intro.mp4", 1),
        "intro_audio": make_intro(root / "intro_audio.mp4", 1, audio=True),
        "red": make_logo(root / "red.png", (64, 32), (255, 0, 0, 255)),
        "green": make_logo(root / "green.png", (64, 32), (0, 255, 0, 255)),
    }


def spec_for(tmp: Path, feeds: list[Feed], layout: str = "side_by_side", **kw: object) -> BuildSpec:
    kw.setdefault("start_at", T0)
    kw.setdefault("cache_dir", tmp / "media")
    (tmp / "media").mkdir(parents=True, exist_ok=True)
    return BuildSpec("b1", feeds, tmp / "out" / "b1.mp4", layout, W, H, FPS, **kw)  # type: ignore[arg-type]


def probe(path: Path) -> tuple[float, int, int, list[str]]:
    info = ffprobe(path, "-show_format", "-show_streams")
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    kinds = sorted(s["codec_type"] for s in info["streams"])
    return float(info["format"]["duration"]), video["width"], video["height"], kinds


def decoded_md5s(path: Path, *args: str) -> list[str]:
    """The md5 of every decoded frame: equal lists mean bit-identical pictures."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", *args, "-i", str(path), "-map", "0:v:0"]
    cmd += ["-f", "framemd5", "-"]
    out = subprocess.run(cmd, capture_output=True, check=True, text=True, timeout=60).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if not line.startswith("#")]


# -- layouts, intro, overlays --------------------------------------------------------------
LAYOUT_SIZES = {
    "side_by_side": (2 * W, H),
    "stacked": (W, 2 * H),
    "pip": (W, H),
    "single": (W, H),
    "separate": (W, H),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUT_SIZES))
def test_every_layout_with_intro_and_logo(
    layout: str, assets: dict[str, Path], tmp_path: Path
) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    logo = Overlay(assets["red"], "venue_logo", "top_right")
    spec = spec_for(tmp_path, feeds, layout, intro=assets["intro"], overlays=[logo])
    seen: list[float] = []
    result = build(spec, on_progress=seen.append)

    # Camera 0 lasts 3 s from the booking start; camera 1 is shorter and padded, not cut.
    want_w, want_h = LAYOUT_SIZES[layout]
    assert (result.width, result.height) == (want_w, want_h)
    # Separate files stay in sync with each other: camera 1's is padded to the same length.
    expected = [4.0, 4.0] if layout == "separate" else [4.0]
    assert len(result.outputs) == len(expected)
    for out, seconds in zip(result.outputs, expected, strict=True):
        duration, width, height, kinds = probe(out)
        assert (width, height) == (want_w, want_h)
        assert duration == pytest.approx(seconds, abs=0.15)
        assert kinds == ["video"]
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)
    assert not list(spec.output.parent.glob(".b1.work*"))
    assert not result.fast_path  # a logo is drawn: the recording must be encoded


@pytest.mark.slow
def test_logo_is_drawn_on_the_recording_and_not_on_the_intro(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    logo = Overlay(assets["red"], "venue_logo", "top_right", width_frac=0.2, margin=10)
    with_logo = build(spec_for(tmp_path / "a", feeds, intro=assets["intro"], overlays=[logo]))
    without = build(spec_for(tmp_path / "b", feeds, intro=assets["intro"]))
    out_w = 2 * W
    lw = round(0.2 * out_w / 2) * 2
    box = (out_w - 10 - lw + 4, 10 + 4, out_w - 10 - 4, 10 + lw // 2 - 4)  # inside the logo

    rec_a = frame_at(with_logo.outputs[0], 2.0, tmp_path / "a.png")
    rec_b = frame_at(without.outputs[0], 2.0, tmp_path / "b.png")
    r, g, b = mean_color(rec_a, box)
    assert r > 200 and g < 60 and b < 60  # the red logo is there...
    assert mean_diff(rec_a, rec_b, box) > 60  # ...and it is not what the camera shows
    assert mean_diff(rec_a, rec_b, (0, 0, W, H)) < 8  # the rest of the frame is unchanged

    intro_a = frame_at(with_logo.outputs[0], 0.5, tmp_path / "ia.png")
    intro_b = frame_at(without.outputs[0], 0.5, tmp_path / "ib.png")
    assert mean_diff(intro_a, intro_b, box) < 8  # no logo on the intro


@pytest.mark.slow
def test_logos_at_the_same_position_sit_side_by_side(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    overlays = [
        Overlay(assets["red"], "sponsor1", "bottom", width_frac=0.1, margin=8, opacity=1.0),
        Overlay(assets["green"], "sponsor2", "bottom", width_frac=0.1, margin=8, opacity=1.0),
    ]
    result = build(spec_for(tmp_path, feeds, "single", overlays=overlays))
    frame = frame_at(result.outputs[0], 1.0, tmp_path / "f.png")
    # Two 32x16 logos, 8 px apart, centred at the bottom: x 124..156 and 164..196, y 216..232.
    red, green = (128, 220, 152, 228), (168, 220, 192, 228)
    assert mean_color(frame, red)[0] > 200 and mean_color(frame, red)[1] < 60
    assert mean_color(frame, green)[1] > 200 and mean_color(frame, green)[0] < 60


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["top_left", "top", "top_right", "left", "right", "bottom"]),
            st.floats(0.02, 0.3),
            st.integers(8, 400),
            st.integers(8, 400),
        ),
        max_size=5,
    ),
    st.integers(0, 40),
)
def test_overlay_placement_stays_in_frame_without_overlap(
    logos: list[tuple[str, float, int, int]], margin: int
) -> None:
    items = [
        (Overlay(Path("x.png"), f"l{i}", pos, frac, margin), iw, ih)
        for i, (pos, frac, iw, ih) in enumerate(logos)
    ]
    placed = place_overlays(items, 640, 240)
    assert len(placed) == len(items)
    for o, x, y, w, h in placed:
        assert x >= 0 and x + w <= 640 and y >= 0 and y + h <= 240, o
        assert w % 2 == 0 and h % 2 == 0
    for i, (o1, x1, _, w1, _) in enumerate(placed):
        for o2, x2, _, w2, _ in placed[i + 1 :]:
            if o1.position == o2.position and 3 * (w1 + w2) + 2 * margin <= 640:
                assert x1 + w1 <= x2 or x2 + w2 <= x1  # side by side, never on top


@pytest.mark.slow
def test_intro_sound_is_kept_with_silence_under_the_recording(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    result = build(spec_for(tmp_path, feeds, intro=assets["intro_audio"]))
    duration, _, _, kinds = probe(result.outputs[0])
    assert kinds == ["audio", "video"]
    assert duration == pytest.approx(4.0, abs=0.15)


# -- alignment -----------------------------------------------------------------------------
@pytest.mark.slow
def test_preroll_is_cut_and_duration_capped(assets: dict[str, Path], tmp_path: Path) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    spec = spec_for(tmp_path, feeds, "single", start_at=T0 + 1.0, duration=1.5, fast_path=False)
    result = build(spec)
    assert probe(result.outputs[0])[0] == pytest.approx(1.5, abs=0.1)
    # The first frame kept is the camera's frame at 1.0 s (testsrc shows a running counter).
    first = frame_at(result.outputs[0], 0.0, tmp_path / "o.png")
    raw = tmp_path / "raw0.mp4"
    ffmpeg("-i", str(feeds[0].segments[1]), "-c", "copy", str(raw))
    want = frame_at(raw, 0.0, tmp_path / "r.png")
    other = frame_at(raw, 0.5, tmp_path / "r2.png")
    assert mean_diff(first, want, (0, 0, W, H)) < 8
    assert mean_diff(first, other, (0, 0, W, H)) > mean_diff(first, want, (0, 0, W, H))


@pytest.mark.slow
def test_late_camera_is_padded_black_in_front(assets: dict[str, Path], tmp_path: Path) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    result = build(spec_for(tmp_path, feeds))
    early = frame_at(result.outputs[0], 0.2, tmp_path / "a.png")  # camera 1 not yet recording
    later = frame_at(result.outputs[0], 1.0, tmp_path / "b.png")
    end = frame_at(result.outputs[0], 2.8, tmp_path / "c.png")  # camera 1 already stopped
    right = (W, 0, 2 * W, H)
    assert max(mean_color(early, right)) < 20
    assert max(mean_color(later, right)) > 60
    assert max(mean_color(end, right)) < 20
    assert max(mean_color(end, (0, 0, W, H))) > 60  # camera 0 still runs: nothing was cut


@pytest.mark.slow
def test_rotation_turns_the_camera(assets: dict[str, Path], tmp_path: Path) -> None:
    feeds = feeds_from_raw_dir(assets["raw"], rotations=[90])
    assert feeds[0].rotation == 90
    result = build(spec_for(tmp_path, feeds, "single", fast_path=True))
    assert not result.fast_path  # rotating needs an encode
    frame = frame_at(result.outputs[0], 1.0, tmp_path / "f.png")
    # 240x320 upright fitted in 320x240: black bars left and right, picture in the middle.
    assert max(mean_color(frame, (0, 0, 60, H))) < 20
    assert max(mean_color(frame, (W - 60, 0, W, H))) < 20
    assert max(mean_color(frame, (110, 0, 210, H))) > 60


# -- degradation ---------------------------------------------------------------------------
@pytest.mark.slow
def test_corrupt_segment_in_the_middle_is_skipped_and_sync_kept(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    segs = make_camera(raw, 0, 3, started_at=T0)
    make_camera(raw, 1, 3, started_at=T0, source="testsrc2")
    segs[1].write_bytes(os.urandom(30_000))
    feeds = feeds_from_raw_dir(raw)
    result = build(spec_for(tmp_path, feeds))
    assert any("000-00001.ts" in n and "camera 0" in n for n in result.notes), result.notes
    # The lost second stays in the timeline (frozen frame): camera 0 keeps its 3 s.
    assert probe(result.outputs[0])[0] == pytest.approx(3.0, abs=0.15)
    after = frame_at(result.outputs[0], 2.5, tmp_path / "a.png")
    raw_ref = tmp_path / "ref.mp4"
    ffmpeg("-i", str(segs[2]), "-c", "copy", str(raw_ref))
    ref = frame_at(raw_ref, 0.5, tmp_path / "r.png")
    assert mean_diff(after, ref, (0, 0, W, H)) < 6  # camera 0 is still in sync after the gap


@pytest.mark.slow
def test_runs_after_a_crash_keep_the_downtime(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_camera(raw, 0, 2, started_at=T0)
    make_camera(raw, 0, 1, run=1, started_at=T0 + 3.0)  # down for 1 s between the runs
    feeds = feeds_from_raw_dir(raw)
    assert [r for r, _ in feeds[0].run_starts] == [0, 1]
    encoded = build(spec_for(tmp_path / "e", feeds, "single", fast_path=False))
    copied = build(spec_for(tmp_path / "c", feeds, "single"))
    assert copied.fast_path and not encoded.fast_path
    for result in (encoded, copied):
        assert probe(result.outputs[0])[0] == pytest.approx(4.0, abs=0.15)


@pytest.mark.slow
def test_a_downtime_across_the_slot_start_is_kept_not_collapsed(tmp_path: Path) -> None:
    """Killed during the pre-roll, back 1.5 s into the slot: the cut of the pre-roll lands in
    the downtime, which must stay (a held frame), not shrink the recording to its last run."""
    raw = tmp_path / "raw"
    make_camera(raw, 0, 1, started_at=T0)  # pre-roll only: the slot starts at T0 + 1.5
    make_camera(raw, 0, 1, run=1, started_at=T0 + 3.0)
    feeds = feeds_from_raw_dir(raw)
    spec = spec_for(tmp_path, feeds, "single", start_at=T0 + 1.5, duration=2.5, fast_path=False)
    result = build(spec)
    assert probe(result.outputs[0])[0] == pytest.approx(2.5, abs=0.15)
    # The footage sits where it was recorded: the last second is run 1's.
    last = frame_at(result.outputs[0], 2.3, tmp_path / "last.png")
    ref = tmp_path / "run1.mp4"
    ffmpeg("-i", str(feeds[0].segments[-1]), "-c", "copy", str(ref))
    assert mean_diff(last, frame_at(ref, 0.8, tmp_path / "ref.png"), (0, 0, W, H)) < 8


@pytest.mark.slow
def test_unreadable_intro_and_logo_are_left_out_with_notes(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    bad_intro = tmp_path / "intro.mp4"
    bad_intro.write_bytes(b"\x00\x01garbage" * 500)
    overlays = [Overlay(tmp_path / "missing.png", "user_logo", "top_left")]
    feeds = feeds_from_raw_dir(assets["raw"])
    result = build(spec_for(tmp_path, feeds, intro=bad_intro, overlays=overlays))
    assert probe(result.outputs[0])[0] == pytest.approx(3.0, abs=0.15)
    assert any(n.startswith("intro unreadable") for n in result.notes), result.notes
    assert any(n.startswith("user_logo unreadable") for n in result.notes), result.notes


@pytest.mark.slow
def test_missing_camera_gives_single_layout(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_camera(raw, 0, 2, started_at=T0)
    (raw / "cam1").mkdir()
    (raw / "cam1" / "000-00000.ts").write_bytes(b"")
    result = build(spec_for(tmp_path, feeds_from_raw_dir(raw), "side_by_side"))
    assert (result.width, result.height) == (W, H)
    assert "camera 1 has no video (no readable segment)" in result.notes
    assert "only camera 0 has video: single layout" in result.notes


def test_nothing_to_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no camera has any readable video"):
        build(spec_for(tmp_path, []))
    with pytest.raises(BuildError, match="unknown layout 'grid'"):
        build(spec_for(tmp_path, [], "grid"))
    feeds = [Feed(0, [], None, rotation=45)]
    with pytest.raises(BuildError, match="rotation 45"):
        build(spec_for(tmp_path, feeds))


# -- the zero-re-encode fast path ----------------------------------------------------------
@pytest.mark.slow
def test_fast_path_copies_the_recording_and_caches_the_intro(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    spec = spec_for(tmp_path, feeds, "single", intro=assets["intro"], start_at=T0)
    lines = command_lines(spec)
    assert len(lines) == 2 and "-x264-params" in lines[0] and "copy" in lines[1]
    result = build(spec)
    assert result.fast_path
    duration, width, height, _ = probe(result.outputs[0])
    assert (width, height) == (W, H) and duration == pytest.approx(4.0, abs=0.1)

    # The recording's pictures are bit-identical to the camera's: it was never re-encoded.
    joined = tmp_path / "cam0.ts"
    listing = tmp_path / "l.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in feeds[0].segments))
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(joined))
    camera = decoded_md5s(joined)
    out = decoded_md5s(result.outputs[0])
    assert out[-len(camera) :] == camera
    assert len(out) == len(camera) + FPS  # plus the 1 s intro
    # And the whole file decodes without a single error.
    subprocess.run(
        ["ffmpeg", "-v", "error", "-xerror", "-i", str(result.outputs[0]), "-f", "null", "-"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip

    # The intro was encoded once; the next booking only joins.
    assert len(list((tmp_path / "media").glob("*.intro-*.ts"))) == 1
    assert len(command_lines(spec)) == 1


@pytest.mark.slow
def test_fast_path_separate_gives_one_file_per_camera_with_intro_sound(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    feeds = feeds_from_raw_dir(assets["raw"])
    result = build(spec_for(tmp_path, feeds, "separate", intro=assets["intro_audio"]))
    assert result.fast_path
    names = [p.name for p in result.outputs]
    assert names == ["b1-cam0.mp4", "b1-cam1.mp4"]
    assert probe(result.outputs[0])[3] == ["audio", "video"]
    assert probe(result.outputs[1])[0] == pytest.approx(1.0 + 2.0, abs=0.15)


@pytest.mark.slow
def test_fast_path_falls_back_when_the_intro_cannot_match(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    # Without x264's SEI the recording's encoder settings are unknown: no exact match.
    # (sps-id 3: no intro encoded with unknown settings can carry the same parameter sets.)
    raw = tmp_path / "raw"
    for seg in make_camera(raw, 0, 2, started_at=T0, x264_params="sps-id=3"):
        tmp = seg.with_suffix(".tmp.ts")
        ffmpeg("-i", str(seg), "-c", "copy", "-bsf:v", "filter_units=remove_types=6",
               "-f", "mpegts", str(tmp))  # fmt: skip
        tmp.replace(seg)
    ffmpeg_src = assets["intro"]
    spec = spec_for(tmp_path, feeds_from_raw_dir(raw), "single", intro=ffmpeg_src)
    result = build(spec)
    assert not result.fast_path
    assert any("stream copy impossible" in n for n in result.notes), result.notes
    assert probe(result.outputs[0])[0] == pytest.approx(3.0, abs=0.15)
    assert list((tmp_path / "media").glob("*.mismatch"))  # not tried again next time


@pytest.mark.slow
def test_fast_path_refuses_runs_with_other_encoder_settings(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_camera(raw, 0, 1, started_at=T0)
    make_camera(raw, 0, 1, run=1, started_at=T0 + 1.0, x264_params="ref=2")
    result = build(spec_for(tmp_path, feeds_from_raw_dir(raw), "single"))
    assert not result.fast_path
    assert any("changes H.264 parameters between runs" in n for n in result.notes), result.notes
    assert probe(result.outputs[0])[0] == pytest.approx(2.0, abs=0.15)


# -- running: command line, progress, stop, validation -------------------------------------
@pytest.mark.slow
def test_printed_command_is_the_one_that_runs(assets: dict[str, Path], tmp_path: Path) -> None:
    spec = spec_for(
        tmp_path, feeds_from_raw_dir(assets["raw"]), intro=assets["intro"], incremental=False
    )
    (argv,) = command_lines(spec)
    assert argv[0] == "ffmpeg" and "-filter_complex" in argv
    graph = argv[argv.index("-filter_complex") + 1]
    assert "hstack=inputs=2" in graph and "concat=" in graph
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    temp = Path(argv[-2] if argv[-1] == "-y" else argv[-1])
    validate(temp, 4.0, 2 * W, H)


@pytest.mark.slow
def test_stop_kills_the_encode_and_leaves_nothing(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    make_camera(raw, 0, 20, started_at=T0, size=(640, 480))
    spec = spec_for(tmp_path, feeds_from_raw_dir(raw), "single", fast_path=False)
    spec.preset = "veryslow"  # long enough to be stopped in the middle
    spec.width, spec.height = 640, 480
    stop = threading.Event()
    seen: list[float] = []

    def progress(p: float) -> None:
        seen.append(p)
        if p > 0.05:
            stop.set()

    with pytest.raises(BuildError, match="stopped"):
        build(spec, on_progress=progress, stop=stop)
    assert seen and max(seen) < 0.9
    assert not spec.output.exists()
    assert not list(spec.output.parent.glob(".b1.work*"))
    left = subprocess.run(["pgrep", "-f", str(spec.output.parent)], capture_output=True)
    assert left.stdout == b""  # no encoder left running


def test_validate_names_what_is_wrong(assets: dict[str, Path], tmp_path: Path) -> None:
    video = assets["intro"]  # 640x360, 1 s
    validate(video, 1.0, 640, 360)
    with pytest.raises(BuildError, match="expected 320x240"):
        validate(video, 1.0, 320, 240)
    with pytest.raises(BuildError, match=r"lasts 1\.00 s, expected 5\.00 s"):
        validate(video, 5.0, 640, 360)
    with pytest.raises(BuildError, match="no video stream"):
        sound = tmp_path / "a.m4a"
        ffmpeg("-f", "lavfi", "-i", "sine", "-t", "1", str(sound))
        validate(sound, 1.0, 640, 360)
    with pytest.raises(BuildError, match="output unreadable"):
        junk = tmp_path / "junk.mp4"
        junk.write_bytes(b"not a video")
        validate(junk, 1.0, 640, 360)


@pytest.mark.slow
def test_broken_output_is_never_put_in_place(assets: dict[str, Path], tmp_path: Path) -> None:
    # An encoder that cannot run: the reason comes back and no file appears.
    spec = spec_for(tmp_path, feeds_from_raw_dir(assets["raw"]), encoder="no_such_encoder")
    with pytest.raises(BuildError, match="ffmpeg failed"):
        build(spec)
    assert not spec.output.exists()


def test_feeds_from_raw_dir_reads_the_manifests(tmp_path: Path) -> None:
    cam = tmp_path / "raw" / "cam1"
    cam.mkdir(parents=True)
    for name in ("001-00000.ts", "000-00001.ts", "000-00000.ts"):
        (cam / name).write_bytes(b"x")
    (cam / "run-000.json").write_text(json.dumps({"run": 0, "started_at": 5.0}))
    (cam / "run-001.json").write_text(json.dumps({"run": 1, "started_at": 9.0}))
    (cam / "run-002.json").write_text("{broken")
    (tmp_path / "raw" / "notes").mkdir()
    (feed,) = feeds_from_raw_dir(tmp_path / "raw", rotations=[0, 180])
    assert feed.camera == 1 and feed.rotation == 180 and feed.started_at == 5.0
    assert [p.name for p in feed.segments] == ["000-00000.ts", "000-00001.ts", "001-00000.ts"]
    assert feed.run_starts == ((0, 5.0), (1, 9.0))
    assert feeds_from_raw_dir(tmp_path / "nowhere") == []


def test_tools_are_installed() -> None:
    assert shutil.which("ffmpeg") and shutil.which("ffprobe")


def test_spec_and_overlays_follow_the_settings(tmp_path: Path) -> None:
    from controller.config import load_settings

    settings = load_settings(
        None, data_dir=tmp_path, layout="stacked", rotation=[0, 270], width=640, height=360,
        fps=25, x264_preset="faster", crf=20, logo_position="bottom_left", logo_width=0.2,
        sponsor_position="top", logo_opacity=0.5,
    )  # fmt: skip
    feeds = [Feed(0, [], None), Feed(1, [], None)]
    logos = overlays_from_settings(
        settings, tmp_path / "v.png", None, [tmp_path / "s1.png", None, tmp_path / "s3.png"]
    )
    spec = spec_from_settings(settings, "b9", feeds, tmp_path / "b9.mp4", 5.0, 60.0, None, logos)
    assert (spec.layout, spec.width, spec.height, spec.fps) == ("stacked", 640, 360, 25)
    assert (spec.preset, spec.crf, spec.encoder) == ("faster", 20, "libx264")
    assert [f.rotation for f in spec.feeds] == [0, 270]
    assert spec.cache_dir == tmp_path / "media"
    assert [(o.name, o.position) for o in spec.overlays] == [
        ("venue_logo", "bottom_left"),
        ("sponsor1", "top"),
        ("sponsor3", "top"),
    ]
    assert all(o.width_frac == 0.2 and o.opacity == 0.5 for o in spec.overlays)
    assert output_paths(replace(spec, layout="separate"), [0, 1]) == [
        tmp_path / "b9-cam0.mp4",
        tmp_path / "b9-cam1.mp4",
    ]


def test_a_failing_progress_callback_never_stalls_the_reader(tmp_path: Path) -> None:
    # A stand-in for ffmpeg that writes three progress reports, so the count does not depend
    # on how fast this machine encodes.
    fake = tmp_path / "fake-ffmpeg"
    fake.write_text(
        "#!/bin/sh\n"
        "for t in 1000000 2000000 3000000; do\n"
        "  printf 'out_time_us=%s\\nprogress=continue\\n' $t\n"
        "done\n"
    )
    fake.chmod(0o755)
    calls: list[float] = []

    def broken(seconds: float) -> None:
        calls.append(seconds)
        raise RuntimeError("database is locked")

    run_ffmpeg([str(fake)], 3.0, broken, None)
    assert calls == [1.0, 2.0, 3.0]


def test_a_failing_progress_callback_never_fails_the_build(
    assets: dict[str, Path], tmp_path: Path
) -> None:
    raw = tmp_path / "raw"
    make_camera(raw, 0, 3, started_at=T0, size=(640, 480))
    spec = spec_for(tmp_path, feeds_from_raw_dir(raw), "single", fast_path=False)
    spec.width, spec.height = 640, 480
    calls: list[float] = []

    def broken(p: float) -> None:
        calls.append(p)
        if p < 1:
            raise RuntimeError("database is locked")

    result = build(spec, on_progress=broken)
    assert result.outputs == [spec.output] and spec.output.exists()
    assert len(calls) >= 2 and calls[-1] == 1.0 and all(0 <= p < 1 for p in calls[:-1])
