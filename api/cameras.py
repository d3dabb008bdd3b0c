"""`/cameras` and `/cameras/{n}/preview.jpg`: what the operator needs to aim the cameras.

While the supervisor records, the cameras belong to it: the list comes from its heartbeat and a
preview is decoded from the newest segment on disk (files only: the live recording is never
touched). When nothing records, the API asks the camera driver itself. It refuses to open a
camera shortly before a booking starts, so a preview can never make a recording miss its start.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.errors import ApiError
from api.openapi import Answer, operation
from api.responses import CameraList
from api.state import ApiState, api_state
from controller.config import Settings
from controller.db import utcnow
from controller.drivers.cameras import CameraError
from controller.drivers.cameras.ffmpeg_tools import snapshot_from_segments
from controller.fsm.states import State
from controller.health import HEARTBEAT_STALE_S
from controller.recordings import booking_files

# How long before a booking's pre-roll the cameras are left alone.
PREVIEW_GUARD_S = 15.0
PREVIEW_WAIT_S = 15.0


def _plain_camera(info: Any) -> dict[str, Any]:
    data = dict(info) if isinstance(info, dict) else dict(vars(info))
    return {
        "index": data.get("index"),
        "driver": data.get("driver"),
        "model": data.get("model"),
        "mode": data.get("mode"),
        "up": bool(data.get("up")),
        "detail": data.get("detail") or "",
    }


def _discover(state: ApiState) -> list[dict[str, Any]]:
    try:
        found = state.camera_driver().discover()
    except CameraError as exc:
        raise ApiError(503, f"camera driver unavailable: {exc}") from None
    return [_plain_camera(info) for info in found]


@operation(
    id="listCameras", summary="Each camera: driver, model, mode, up or down",
    answers={200: Answer("Cameras.", CameraList)}, errors=(503,),
)  # fmt: skip
async def list_cameras(request: Request) -> JSONResponse:
    state = api_state(request)
    report = await state.status.get()
    supervisor = report["supervisor"]
    if supervisor.get("running") and report.get("cameras"):
        source, cameras = "supervisor", [_plain_camera(c) for c in report["cameras"]]
    else:
        source, cameras = "driver", await run_in_threadpool(_discover, state)
    return JSONResponse({"source": source, "cameras": cameras})


def _newest_segments(settings: Settings, bookings: list[str], camera: int) -> list[Path]:
    """The segments of camera `camera` in the recording that wrote last."""
    best: list[Path] = []
    best_mtime = -1.0
    for booking_id in bookings:
        segments = booking_files(settings, booking_id).segments(camera)
        if not segments:
            continue
        mtime = segments[-1].stat().st_mtime
        if mtime > best_mtime:
            best, best_mtime = segments, mtime
    return best


def _still(state: ApiState, camera: int, recording: list[str]) -> bytes:
    settings = state.settings
    if recording:
        segments = _newest_segments(settings, recording, camera)
        if not segments:
            raise ApiError(
                503, f"camera {camera}: a recording is running but has no segment of this "
                "camera yet; try again in a few seconds",
            )
        return snapshot_from_segments(segments)
    soon = utcnow() + timedelta(seconds=settings.preroll_s + PREVIEW_GUARD_S)
    upcoming = state.store.list(state=State.CONFIRMED, start_from=utcnow(), start_to=soon, limit=1)
    if upcoming:
        raise ApiError(
            503, f"booking {upcoming[0].id} starts at {upcoming[0].start_time.isoformat()}: "
            "the cameras are kept free for it; a preview is available once it records",
        )
    return state.camera_driver().snapshot(camera)


def _recording_now(state: ApiState) -> list[str]:
    """Bookings the supervisor records right now: read fresh, not from the status cache."""
    beat = state.store.kv_get("supervisor")
    if beat is None:
        return []
    value, at = beat
    if (utcnow() - at).total_seconds() >= HEARTBEAT_STALE_S:
        return []  # no live supervisor: its cameras died with it
    return [str(b) for b in value.get("recording") or []]


def _guarded_still(state: ApiState, camera: int) -> bytes:
    if not state.preview_slots.acquire(timeout=PREVIEW_WAIT_S):
        raise ApiError(503, "too many previews in progress; try again")
    try:
        return _still(state, camera, _recording_now(state))
    except CameraError as exc:
        raise ApiError(503, f"camera {camera}: no still available ({exc})") from None
    finally:
        state.preview_slots.release()


@operation(
    id="cameraPreview", summary="A current still, for aiming the camera (never cached)",
    description="Taken from the newest recorded segment while a booking records (the "
    "recording is not touched), else from the camera.",
    answers={200: Answer("A JPEG image.", media_type="image/jpeg",
                         headers={"Cache-Control": {"type": "string", "enum": ["no-store"]}})},
    errors=(404, 503),
)  # fmt: skip
async def preview(request: Request) -> Response:
    camera: int = request.path_params["n"]
    state = api_state(request)
    if camera >= state.settings.cameras:
        raise ApiError(
            404, f"no camera {camera} (EZREC_CAMERAS is {state.settings.cameras})"
        )
    jpeg = await run_in_threadpool(_guarded_still, state, camera)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
