"""The video built in chunks (builder.incremental, chunks, fmp4) against real ffmpeg.

Small real inputs (320x240, 15 fps, 1 s segments) and 1 s chunks, so that a few seconds of
recording give several chunks."""

from __future__ import annotations

import itertools
import json
import os
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
    fmp4,
    incremental,
)
from controller.drivers.builder import chunks as chunks_mod
from controller.drivers.builder.runner import decide
from controller.drivers.cameras.children import spawn_child
from controller.drivers.ffprobe import ffprobe
from controller.recordings import chunk_dir
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
T0 = 1_000_000.0


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chunks")
    make_camera(root / "raw", 0, 4, started_at=T0)
    make_camera(root / "raw", 1, 4, started_at=T0 + 0.4, source="testsrc2")
    return {
        "raw": root / "raw",
        "intro": make_intro(root / "intro.mp4", 1),
        "intro_audio": make_intro(root / "intro_audio.mp4", 1, audio=True),
        "logo": make_logo(root / "logo.png", (64, 32), (255, 0, 0, 255)),
    }


def feeds_of(raw_dir: Path, keep: int | None = None) -> list[Feed]:
    from controller.drivers.builder import feeds_from_raw_dir

    feeds = feeds_from_raw_dir(raw_dir)
    return feeds if keep is None else [replace(f, segments=f.segments[:keep]) for f in feeds]


def spec(tmp: Path, feeds: list[Feed], **kw: object) -> BuildSpec:
    kw.setdefault("start_at", T0)
    kw.setdefault("cache_dir", tmp / "media")
    kw.setdefault("chunk_s", 1)
    (tmp / "media").mkdir(parents=True, exist_ok=True)
    out = kw.pop("output", tmp / "out" / "b1.mp4")
    return BuildSpec("b1", feeds, out, "side_by_side", W, H, FPS, **kw)  # type: ignore[arg-type]


def frames_and_duration(path: Path) -> tuple[int, float]:
    info = ffprobe(path, "-count_frames", "-show_format", "-show_streams", "-select_streams", "v")
    stream = info["streams"][0]
    return int(stream["nb_read_frames"]), float(info["format"]["duration"])


def count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = incremental.run_ffmpeg

    def counting(argv: list[str], *args: object, **kw: object) -> float:
        calls.append(argv)
        return real(argv, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(incremental, "run_ffmpeg", counting)
    return calls


# -- fmp4: pieces joined -------------------------------------------------------------------
def _piece(path: Path, seconds: int, source: str) -> Path:
    ffmpeg(
        "-f", "lavfi", "-i", f"{source}=size=160x120:rate=10", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "ultrafast", "-x264-params", "stitchable=1",
        "-pix_fmt", "yuv420p", "-movflags", "+frag_keyframe+empty_moov+default_base_moof",
        "-fflags", "+bitexact", "-f", "mp4", str(path),
    )  # fmt: skip
    return path


def test_pieces_join_into_one_file_with_its_duration_declared(tmp_path: Path) -> None:
    a = fmp4.read_piece(_piece(tmp_path / "a.mp4", 2, "testsrc"))
    b = fmp4.read_piece(_piece(tmp_path / "b.mp4", 3, "testsrc"))
    assert a.init == b.init  # stitchable: the same headers whatever the content
    assert a.seconds(1) == pytest.approx(2.0) and b.seconds(1) == pytest.approx(3.0)
    joined = bytearray(fmp4.header_with_duration(a.init, 5.0))
    joined += fmp4.rebased(a, 1, {1: 0})
    joined += fmp4.rebased(b, 1 + a.count, {1: a.ticks[1]})
    out = tmp_path / "joined.mp4"
    out.write_bytes(joined)
    assert fmp4.header_duration(joined) == pytest.approx(5.0)
    assert frames_and_duration(out) == (50, pytest.approx(5.0))
    # Every fragment number once, in order, and decode times that never go back.
    sequences, times = [], []
    for box in fmp4.boxes(joined):
        if box.type == "moof":
            mfhd = fmp4.child(joined, box, "mfhd")
            assert mfhd is not None
            sequences.append(int.from_bytes(joined[mfhd.body + 4 : mfhd.body + 8], "big"))
            traf = fmp4.child(joined, box, "traf")
            assert traf is not None
            tfdt = fmp4.child(joined, traf, "tfdt")
            assert tfdt is not None
            times.append(int.from_bytes(joined[tfdt.body + 4 : tfdt.body + 12], "big"))
    assert sequences == list(range(1, len(sequences) + 1))
    assert times == sorted(times) and times[0] == 0


def test_the_declared_duration_is_corrected_in_place(tmp_path: Path) -> None:
    a = fmp4.read_piece(_piece(tmp_path / "a.mp4", 2, "testsrc"))
    out = tmp_path / "j.mp4"
    out.write_bytes(fmp4.header_with_duration(a.init, 60.0) + fmp4.rebased(a, 1, {1: 0}))
    before = out.read_bytes()
    assert fmp4.set_duration(out, 2.0) is True
    after = out.read_bytes()
    assert len(after) == len(before)
    assert sum(x != y for x, y in zip(before, after, strict=True)) <= 8  # only the numbers
    assert fmp4.header_duration(after) == pytest.approx(2.0)
    assert fmp4.set_duration(out, 2.0) is False


def test_a_cut_piece_is_refused(tmp_path: Path) -> None:
    path = _piece(tmp_path / "a.mp4", 2, "testsrc")
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) - 500])
    with pytest.raises(fmp4.Fmp4Error):
        fmp4.read_piece(cut)


@given(
    frames=st.integers(min_value=1, max_value=100_000),
    fps=st.sampled_from([10, 15, 25, 30, 60]),
    chunk_s=st.integers(min_value=1, max_value=120),
    phase=st.integers(min_value=-10_000, max_value=10_000),
)
def test_windows_cover_the_recording_once(frames: int, fps: int, chunk_s: int, phase: int) -> None:
    wins = chunks_mod.windows(frames, fps, chunk_s, phase)
    size = chunk_s * fps
    assert wins[0].first == 0 and wins[-1].last == frames
    assert all(a.last == b.first for a, b in itertools.pairwise(wins))
    assert all(0 < w.frames < size * 1.25 for w in wins)
    assert all(w.first % size == phase % size for w in wins[1:])  # cut where segments begin
    assert [w.index for w in wins] == list(range(len(wins)))


# -- the chunked build ---------------------------------------------------------------------
@pytest.mark.slow
def test_chunks_give_the_one_pass_video(raw: dict[str, Path], tmp_path: Path) -> None:
    overlays = [Overlay(raw["logo"], "venue_logo", "top_right")]
    chunked = build(spec(tmp_path, feeds_of(raw["raw"]), intro=raw["intro"], overlays=overlays))
    one = build(spec(tmp_path, feeds_of(raw["raw"]), intro=raw["intro"], overlays=overlays,
                     incremental=False, output=tmp_path / "one" / "b1.mp4"))  # fmt: skip
    assert chunked.chunks == 5 and one.chunks == 0  # camera 1 ends 0.4 s after camera 0
    assert chunked.cpu_s > 0 and one.cpu_s > 0
    a, b = chunked.outputs[0], one.outputs[0]
    assert frames_and_duration(a) == frames_and_duration(b)
    assert list(chunked.timeline) == [a]
    assert chunked.timeline[a].to_dict() == pytest.approx(one.timeline[b].to_dict())
    for t in (0.5, 1.7, 2.6, 4.1, 4.9):  # the intro, then every chunk and its joins
        pa, pb = frame_at(a, t, tmp_path / "a.png"), frame_at(b, t, tmp_path / "b.png")
        assert mean_diff(pa, pb, (0, 0, 2 * W, H)) < 4, t
    assert not list(chunk_dir(a).glob("chunk-*.mp4"))  # joined, then deleted


@pytest.mark.slow
def test_built_while_recording_equals_built_after_the_fact(
    raw: dict[str, Path], tmp_path: Path
) -> None:
    live_dir, late_dir = tmp_path / "live", tmp_path / "late"
    for keep in (2, 3):  # the segments closed so far
        plan = decide(spec(live_dir, feeds_of(raw["raw"], keep), intro=raw["intro"], duration=4))
        status = incremental.advance(plan, live=True)
        assert status is not None and 0 < status.joined < status.total == 4
    live = build(spec(live_dir, feeds_of(raw["raw"]), intro=raw["intro"], duration=4))
    late = build(spec(late_dir, feeds_of(raw["raw"]), intro=raw["intro"], duration=4))
    assert live.outputs[0].read_bytes() == late.outputs[0].read_bytes()
    assert fmp4.header_duration(live.outputs[0].read_bytes()) == pytest.approx(5.0)


@pytest.mark.slow
def test_a_window_no_camera_covers_is_black(tmp_path: Path) -> None:
    """Both cameras started 1.5 s into the booking (a loaded box): the first windows show
    black in both halves, as the one-pass build does, and the build does not fail on them."""
    make_camera(tmp_path / "raw", 0, 2, started_at=T0 + 1.5)
    make_camera(tmp_path / "raw", 1, 2, started_at=T0 + 1.5, source="testsrc2")
    chunked = build(spec(tmp_path, feeds_of(tmp_path / "raw"), duration=4))
    one = build(spec(tmp_path, feeds_of(tmp_path / "raw"), duration=4, incremental=False,
                     output=tmp_path / "one" / "b1.mp4"))  # fmt: skip
    assert chunked.chunks >= 3
    a, b = chunked.outputs[0], one.outputs[0]
    (frames_a, seconds_a), (frames_b, seconds_b) = frames_and_duration(a), frames_and_duration(b)
    assert frames_a == frames_b == 53  # 3.5 s at 15 fps: frame 52 starts at 3.467 s, kept
    assert seconds_a == pytest.approx(seconds_b, abs=0.001)  # one-pass MP4: millisecond ticks
    early = frame_at(a, 0.8, tmp_path / "early.png")
    assert max(mean_color(early, (0, 0, 2 * W, H))) < 20
    for t in (0.8, 2.5):
        pa, pb = frame_at(a, t, tmp_path / "a.png"), frame_at(b, t, tmp_path / "b.png")
        assert mean_diff(pa, pb, (0, 0, 2 * W, H)) < 4, t


@pytest.mark.slow
@pytest.mark.parametrize("offset", [-0.01, 0.01], ids=["cam1-first", "cam1-second"])
def test_cameras_ms_apart_need_one_segment_each_per_window(offset: float, tmp_path: Path) -> None:
    """Two cameras started 10 ms apart (a third of a frame): every window reads one segment of
    each, and while recording a window is made as soon as those have closed, whichever camera
    started first (cut at the later one's edges, it waited a whole segment for the other)."""
    make_camera(tmp_path / "raw", 0, 4, started_at=T0)
    make_camera(tmp_path / "raw", 1, 4, started_at=T0 + offset, source="testsrc2")
    plan = decide(spec(tmp_path, feeds_of(tmp_path / "raw"), duration=4))
    wins = chunks_mod.windows(60, FPS, 1, chunks_mod.phase_of(plan))
    assert len(wins) == 4
    for w in wins:
        for f in plan.feeds:
            piece = chunks_mod.feed_slice(f, w)
            assert piece is not None and len(piece.segments) == 1, (w, f.feed.camera)
    live = decide(spec(tmp_path, feeds_of(tmp_path / "raw", 2), duration=4))
    status = incremental.advance(live, live=True)
    assert status is not None and status.joined == 2  # both closed seconds, not one
    chunked = build(spec(tmp_path, feeds_of(tmp_path / "raw"), duration=4))
    one = build(spec(tmp_path, feeds_of(tmp_path / "raw"), duration=4, incremental=False,
                     output=tmp_path / "one" / "b1.mp4"))  # fmt: skip
    a, b = chunked.outputs[0], one.outputs[0]
    assert frames_and_duration(a) == frames_and_duration(b)
    for t in (0.0, 0.97, 1.0, 2.03, 3.5):  # the joins, and the frames beside them
        pa, pb = frame_at(a, t, tmp_path / "a.png"), frame_at(b, t, tmp_path / "b.png")
        assert mean_diff(pa, pb, (0, 0, 2 * W, H)) < 4, t


@pytest.mark.slow
def test_a_restart_reuses_the_joined_chunks_and_mends_a_torn_append(
    raw: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = build(spec(tmp_path / "ref", feeds_of(raw["raw"]), duration=4)).outputs[0]
    work = tmp_path / "w"
    plan = decide(spec(work, feeds_of(raw["raw"], 3), duration=4))
    incremental.advance(plan, live=True)
    joined = incremental.joined_path(work / "out" / "b1.mp4")
    journal = json.loads((joined.parent / "join.json").read_text())
    assert len(journal["pieces"]) == 3  # both cameras have 3 closed seconds
    with joined.open("ab") as fh:  # a kill in the middle of the next append
        fh.write(os.urandom(5000))
    calls = count_encodes(monkeypatch)
    result = build(spec(work, feeds_of(raw["raw"]), duration=4))
    assert len(calls) == 1  # only the chunk that was not joined yet
    assert result.outputs[0].read_bytes() == reference.read_bytes()
    # A second build of a finished booking makes nothing again.
    assert build(spec(work, feeds_of(raw["raw"]), duration=4)).outputs == result.outputs
    assert len(calls) == 1


@pytest.mark.slow
def test_what_changes_the_picture_changes_the_chunks(
    raw: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(spec(tmp_path, feeds_of(raw["raw"]), duration=4))
    calls = count_encodes(monkeypatch)
    logo = [Overlay(raw["logo"], "venue_logo", "top_left")]
    result = build(spec(tmp_path, feeds_of(raw["raw"]), duration=4, overlays=logo))
    assert len(calls) == 4
    corner = frame_at(result.outputs[0], 2.0, tmp_path / "c.png").crop((24, 24, 60, 40))
    assert corner.getpixel((10, 5))[0] > 200  # the red logo is drawn


@pytest.mark.slow
def test_stopped_build_keeps_the_finished_chunks(
    raw: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = threading.Event()
    seen: list[tuple[int, int]] = []

    def chunks(built: int, total: int) -> None:
        seen.append((built, total))
        if built == 2:
            stop.set()

    with pytest.raises(BuildError, match="stopped"):
        build(spec(tmp_path, feeds_of(raw["raw"]), duration=4), stop=stop, on_chunks=chunks)
    assert seen[-1] == (2, 4)
    assert not (tmp_path / "out" / "b1.mp4").exists()
    # The chunk encoded ahead may have finished before the stop: kept, and not made again.
    ready = len(list(chunk_dir(tmp_path / "out" / "b1.mp4").glob("chunk-*.mp4")))
    assert ready <= 1
    calls = count_encodes(monkeypatch)
    build(spec(tmp_path, feeds_of(raw["raw"]), duration=4))
    assert len(calls) == 2 - ready


@pytest.mark.slow
def test_after_the_slot_two_chunks_are_encoded_at_once(
    raw: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build after the fact keeps two encoders busy (one's start and drain leave a core
    idle); its progress still only rises, and the result is the same file."""
    running, most = [0], [0]
    lock = threading.Lock()
    real = incremental.run_ffmpeg

    def counting(argv: list[str], *args: object, **kw: object) -> float:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(argv, *args, **kw)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(incremental, "run_ffmpeg", counting)
    shown: list[float] = []
    result = build(spec(tmp_path, feeds_of(raw["raw"]), duration=4), on_progress=shown.append)
    assert most[0] == 2
    assert shown == sorted(shown) and shown[-1] == 1.0
    monkeypatch.setattr(incremental, "run_ffmpeg", real)
    live = tmp_path / "live"
    plan = decide(spec(live, feeds_of(raw["raw"], 2), duration=4))
    incremental.advance(plan, live=True)  # one at a time, as while recording
    again = build(spec(live, feeds_of(raw["raw"]), duration=4))
    assert again.outputs[0].read_bytes() == result.outputs[0].read_bytes()


@pytest.mark.slow
def test_intro_sound_is_kept_in_the_joined_file(raw: dict[str, Path], tmp_path: Path) -> None:
    result = build(spec(tmp_path, feeds_of(raw["raw"]), intro=raw["intro_audio"], duration=4))
    info = ffprobe(result.outputs[0], "-show_streams", "-show_format")
    kinds = sorted(s["codec_type"] for s in info["streams"])
    assert kinds == ["audio", "video"]
    assert float(info["format"]["duration"]) == pytest.approx(5.0, abs=0.1)
    audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    # The picture starts at 0 like the sound (an edit list undoes x264's B-frame delay).
    assert float(video["start_time"]) == pytest.approx(0.0, abs=0.001)
    assert float(audio["start_time"]) == pytest.approx(0.0, abs=0.03)
    assert result.chunks == 4


@pytest.mark.slow
def test_the_bitrate_ceiling_holds(tmp_path: Path) -> None:
    raw_dir = tmp_path / "raw"
    # Noise barely compresses: uncapped it needs several Mbit/s even at this size.
    make_camera(raw_dir, 0, 3, started_at=T0, source="mandelbrot")
    make_camera(raw_dir, 1, 3, started_at=T0, source="life")
    free = build(spec(tmp_path / "a", feeds_of(raw_dir), chunk_s=3))
    capped = build(spec(tmp_path / "b", feeds_of(raw_dir), chunk_s=3, max_bitrate_kbps=300))

    def kbps(path: Path) -> float:
        return path.stat().st_size * 8 / 1000 / frames_and_duration(path)[1]

    assert kbps(free.outputs[0]) > 600
    # One 3 s chunk may spend its initial 0.9 s of buffer on top of the ceiling.
    assert kbps(capped.outputs[0]) < 300 * (1 + 0.9 / 3) * 1.05


def test_build_encoders_run_at_the_lowest_priority() -> None:
    proc = spawn_child(["sleep", "5"], nice=19)
    try:
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, os.getpriority(
            os.PRIO_PROCESS, 0) + 19)  # fmt: skip
    finally:
        proc.kill()
        proc.wait()


def test_only_libx264_and_merged_layouts_are_chunked(raw: dict[str, Path], tmp_path: Path) -> None:
    base = spec(tmp_path, feeds_of(raw["raw"]))
    assert incremental.why_not(decide(base)) is None
    assert "h264_v4l2m2m" in (incremental.why_not(decide(replace(base, encoder="h264_v4l2m2m")))
                              or "")  # fmt: skip
    assert incremental.why_not(decide(replace(base, layout="separate"))) is not None
    assert incremental.why_not(decide(replace(base, incremental=False))) is not None


def test_chunk_commands_can_be_pasted(raw: dict[str, Path], tmp_path: Path) -> None:
    from controller.drivers.builder import command_lines

    lines = command_lines(spec(tmp_path, feeds_of(raw["raw"]), duration=4))
    assert len(lines) == 4
    out = Path(lines[1][-1] if lines[1][-1] != "-y" else lines[1][-2])
    subprocess.run(lines[1], check=True, capture_output=True, timeout=120)
    assert fmp4.read_piece(out).seconds(1) == pytest.approx(1.0)
