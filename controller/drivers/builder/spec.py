"""What a build is asked for and what it gives back: feeds, overlays, spec, result."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from controller import recordings

if TYPE_CHECKING:
    from controller.config import Settings

LAYOUTS = ("side_by_side", "stacked", "pip", "single", "separate")
POSITIONS = (
    "top_left", "top", "top_right", "left", "right", "bottom_left", "bottom", "bottom_right"
)  # fmt: skip


ProgressFn = Callable[[float], None]


# -- public data ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Feed:
    """One camera's recording: its segments in time order, possibly from several runs."""

    camera: int
    segments: list[Path]
    started_at: float | None  # wall-clock epoch of the first frame (from the first run)
    rotation: int = 0  # 0/90/180/270, clockwise
    # (run, started_at) for every run with a manifest: the downtime between runs is kept.
    run_starts: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Overlay:
    path: Path  # a cached, checked PNG (alpha) from the media cache
    name: str  # "venue_logo", "user_logo", "sponsor1".."sponsor3"
    position: str  # one of POSITIONS
    width_frac: float = 0.12  # logo width relative to the output frame width
    margin: int = 24
    opacity: float = 1.0


@dataclass
class BuildSpec:
    booking_id: str
    feeds: list[Feed]
    output: Path  # for layout "separate": <stem>-cam<N>.mp4 next to it
    layout: str
    width: int  # per-camera size every feed is normalised to
    height: int
    fps: int
    start_at: float | None = None  # booking start (epoch): the pre-roll before it is cut
    duration: float | None = None  # booking length (s): the video never exceeds it
    intro: Path | None = None
    overlays: list[Overlay] = field(default_factory=list)
    encoder: str = "libx264"
    preset: str = "veryfast"
    crf: int = 23
    bitrate_kbps: int | None = None  # for encoders without CRF (h264_v4l2m2m)
    cache_dir: Path | None = None  # where re-encoded intros are kept (the media dir)
    fast_path: bool = True  # allow the stream-copy path when nothing is drawn on the recording
    # Encode the merged layouts chunk by chunk, joined by stream copy (builder.incremental);
    # False: the one-pass encode of the whole recording.
    incremental: bool = True
    chunk_s: int = 10
    max_bitrate_kbps: int | None = None  # VBV ceiling of the encode (None: CRF alone)
    nice: int = 0  # CPU priority of the build's ffmpeg processes


@dataclass
class BuildResult:
    outputs: list[Path]
    duration_s: float  # of the first output, intro included
    width: int
    height: int
    notes: list[str]  # degradations, for the booking's history
    fast_path: bool = False
    elapsed_s: float = 0.0
    # Per output: where the recording sits in it (the clips of replay marks are cut by this).
    timeline: dict[Path, Timeline] = field(default_factory=dict)
    cpu_s: float = 0.0  # of every ffmpeg run for this result (chunks built earlier included)
    chunks: int = 0  # how many chunks the video was joined from (0: not built in chunks)


@dataclass(frozen=True)
class Timeline:
    """Where a finished video shows the booking: the intro ends at `intro_s`, the booking's
    start time is shown at `booking_start_s` (later than the intro's end when stream copy
    began on a keyframe before the start; earlier when the camera started late), and the
    video lasts `duration_s`."""

    intro_s: float
    booking_start_s: float
    duration_s: float

    def to_dict(self) -> dict[str, float]:
        return {
            "intro_s": round(self.intro_s, 6),
            "booking_start_s": round(self.booking_start_s, 6),
            "duration_s": round(self.duration_s, 6),
        }


class BuildError(Exception):
    """The build failed; str(exc) is the reason stored as the booking's last_error."""


# -- inputs: raw dir -> feeds --------------------------------------------------------------
def feeds_from_raw_dir(raw_dir: Path, rotations: Sequence[int] = ()) -> list[Feed]:
    """The feeds of a booking's raw dir, as `controller.recordings` reads its layout (a run
    the camera went on recording for the next booking is cut where this booking's part ends)."""
    return [
        Feed(f.camera, f.segments, f.started_at,
             int(rotations[f.camera]) if f.camera < len(rotations) else 0, f.run_starts)
        for f in recordings.footage(raw_dir)
    ]


def spec_from_settings(
    settings: Settings,
    booking_id: str,
    feeds: list[Feed],
    output: Path,
    start_at: float | None,
    duration: float | None,
    intro: Path | None,
    overlays: list[Overlay],
) -> BuildSpec:
    """A BuildSpec with the layout, size and encoder the settings ask for."""
    wide = settings.layout in ("side_by_side", "stacked")
    kbps = settings.camera_bitrate_kbps * (settings.cameras if wide else 1)
    return BuildSpec(
        booking_id=booking_id,
        feeds=[replace(f, rotation=settings.rotation_for(f.camera)) for f in feeds],
        output=output,
        layout=settings.layout,
        width=settings.width,
        height=settings.height,
        fps=settings.fps,
        start_at=start_at,
        duration=duration,
        intro=intro,
        overlays=overlays,
        encoder=settings.video_encoder,
        preset=settings.x264_preset,
        crf=settings.crf,
        bitrate_kbps=kbps,
        cache_dir=settings.media_dir,
        incremental=settings.chunk_s > 0,
        chunk_s=settings.chunk_s or 10,
        max_bitrate_kbps=settings.max_bitrate_kbps or None,
        nice=settings.build_nice,
    )


def overlays_from_settings(
    settings: Settings,
    venue_logo: Path | None = None,
    user_logo: Path | None = None,
    sponsors: Sequence[Path | None] = (),
) -> list[Overlay]:
    """The five overlay slots of the seed system, placed where the settings say."""
    common = {
        "width_frac": settings.logo_width,
        "margin": settings.logo_margin,
        "opacity": settings.logo_opacity,
    }
    out: list[Overlay] = []
    if venue_logo is not None:
        out.append(Overlay(venue_logo, "venue_logo", settings.logo_position, **common))
    if user_logo is not None:
        out.append(Overlay(user_logo, "user_logo", settings.user_logo_position, **common))
    for i, sponsor in enumerate(list(sponsors)[:3], start=1):
        if sponsor is not None:
            out.append(Overlay(sponsor, f"sponsor{i}", settings.sponsor_position, **common))
    return out


def output_paths(spec: BuildSpec, cameras: Iterable[int] | None = None) -> list[Path]:
    """Where the finished video(s) go: one file, or one per camera for layout separate."""
    if spec.layout != "separate":
        return [spec.output]
    cams = list(cameras) if cameras is not None else [f.camera for f in spec.feeds]
    return [spec.output.with_name(f"{spec.output.stem}-cam{c}{spec.output.suffix}") for c in cams]
