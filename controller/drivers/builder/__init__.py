"""The video builder: a booking's raw camera segments -> one finished, validated MP4.

One ffmpeg process, one filter graph, one encode (the seed system re-encoded the whole video
once per step: merge, then intro, then logo). The graph is built with ffmpeg-python, one
function per stage:

    inputs   each camera's segments joined by the concat demuxer (no re-encode), the unreadable
             ones pruned first; gaps (a lost segment, the downtime between two runs after a
             crash) kept as declared durations so the cameras stay in sync
    align    pre-roll trimmed, feeds aligned on the booking start, the shorter padded in black
    layout   side_by_side / stacked / pip / single / separate, with per-camera rotation
    overlay  venue logo, user logo, sponsors; the ones sharing a position sit side by side
    intro    normalised to the output (size, fps, SAR, pixel format) and concatenated in front
    encode   H.264 yuv420p +faststart

When nothing has to be drawn on the recording (layout single or separate, no overlay, no
rotation) there is a faster way: the intro alone is encoded to the recording's exact H.264
parameters (cached in the media dir) and joined to the segments by stream copy, so the
recording is never re-encoded: what a Raspberry Pi 5, which has no H.264 encoder, needs.

Every output is written to a temporary name, checked with ffprobe (video stream, duration,
size) and only then renamed into place: a broken file is never what gets uploaded.

Modules: `spec` (what is asked and given back), `plan` (probing, alignment, overlay
placement), `graph` (the filter graph, one function per stage), `fastpath` (stream copy),
`ffmpeg_run` (running ffmpeg, validating its output), `runner` (a build from start to end) and
`clips` (replay clips cut from a finished video, stream copy between re-encoded edges).
"""

from controller.drivers.builder.ffmpeg_run import validate
from controller.drivers.builder.runner import build, command_lines, make_plan
from controller.drivers.builder.spec import (
    LAYOUTS,
    POSITIONS,
    BuildError,
    BuildResult,
    BuildSpec,
    Feed,
    Overlay,
    ProgressFn,
    Timeline,
    feeds_from_raw_dir,
    output_paths,
    overlays_from_settings,
    spec_from_settings,
)

__all__ = [
    "LAYOUTS",
    "POSITIONS",
    "BuildError",
    "BuildResult",
    "BuildSpec",
    "Feed",
    "Overlay",
    "ProgressFn",
    "Timeline",
    "build",
    "command_lines",
    "feeds_from_raw_dir",
    "make_plan",
    "output_paths",
    "overlays_from_settings",
    "spec_from_settings",
    "validate",
]
