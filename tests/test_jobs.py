"""Media per booking (the booking user's own media over the venue's, resolved through the cache),
and what a job's outcome does to its booking."""

from __future__ import annotations

import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller import booking_media, video_jobs
from controller.context import Context
from controller.drivers.media_cache import MediaCache
from controller.job_runner import transition


def png(path: Path, colour: str) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"color=c={colour}@0.8:s=64x32,format=rgba", "-frames:v", "1", str(path)],
        check=True,
    )
    return path


def test_user_media_override_venue_and_bad_media_become_notes(
    ctx: Context, tmp_path: Path
) -> None:
    venue = png(tmp_path / "venue.png", "red")
    user = png(tmp_path / "user.png", "blue")
    sponsor = png(tmp_path / "sponsor.png", "green")
    ctx.settings.logo = str(venue)
    ctx.settings.sponsor_logos = [str(tmp_path / "gone.png")]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    booking = ctx.store.create(
        start, start + timedelta(minutes=5), booking_id="b1", user_id="u-1",
        extra={"media": {"logo": str(user), "sponsors": [str(sponsor), str(tmp_path / "x.png")]}},
    )
    cache = MediaCache(ctx.settings.media_dir)
    intro, overlays, notes = booking_media.resolve_media(ctx.settings, booking, cache)
    assert intro is None
    names = {o.name: o for o in overlays}
    assert set(names) == {"venue_logo", "user_logo", "sponsor1"}
    assert names["user_logo"].position == ctx.settings.user_logo_position
    assert names["venue_logo"].position == ctx.settings.logo_position
    # The user's sponsors replace the venue's; the unreadable one is a note, not a failure.
    assert any("sponsor2" in n for n in notes) and not any("gone.png" in n for n in notes)
    # Cached by content hash inside media/, never under a path made from the user id.
    for overlay in overlays:
        assert overlay.path.parent == ctx.settings.media_dir or (
            ctx.settings.media_dir in overlay.path.parents
        )
        assert "u-1" not in str(overlay.path)


def test_media_nothing_uses_any_more_is_dropped(ctx: Context, tmp_path: Path) -> None:
    old, new = png(tmp_path / "old.png", "red"), png(tmp_path / "new.png", "blue")
    cache = MediaCache(ctx.settings.media_dir)
    old_copy = cache.resolve(str(old), "image").path
    assert old_copy is not None and old_copy.exists()
    ctx.settings.logo = str(new)  # the venue changed its logo
    new_copy = cache.resolve(str(new), "image").path
    booking_media.forget_stale_media(ctx.settings, ctx.store, cache)
    assert not old_copy.exists()
    assert new_copy is not None and new_copy.exists()
    assert booking_media.media_in_use(ctx.settings, ctx.store)["image"] == [str(new)]


@pytest.mark.parametrize(
    ("outcome", "trigger", "fields"),
    [
        (video_jobs.RetryLater("network down"), "fail", {"error": "network down"}),
        (video_jobs.NeedsOperator("NoSuchBucket"), "fail",
         {"error": "NoSuchBucket (needs an operator: fix the setting, then `ezrec retry`)",
          "permanent": True}),
        (video_jobs.Rebuild("processed video missing: x.mp4"), "rebuild",
         {"detail": "processed video missing: x.mp4: building it again"}),
    ],
)  # fmt: skip
def test_each_failed_outcome_is_one_transition(
    outcome: video_jobs.Outcome, trigger: str, fields: dict[str, object]
) -> None:
    step = transition("b1", "upload", outcome, {})
    assert (step.trigger, step.fields) == (trigger, fields)
    assert step.error == f"b1: upload failed: {outcome.reason}"  # type: ignore[union-attr]


def test_a_finished_job_is_its_transition_with_what_it_made(tmp_path: Path) -> None:
    built = video_jobs.Built([tmp_path / "b1.mp4"], 60.0, ["intro unreadable"])
    step = transition("b1", "build", built, {"clips": []})
    assert step.trigger == "process" and step.error is None
    assert step.fields["detail"] == "built 1 file(s), 60.0 s; intro unreadable"
    assert step.fields["changes"]["extra"]["clips"] == []  # type: ignore[index]
    uploaded = video_jobs.Uploaded([{"url": "file:///x"}], "file:///x")
    step = transition("b1", "upload", uploaded, {})
    assert step.trigger == "upload" and step.fields["changes"]["video_url"] == "file:///x"  # type: ignore[index]


def test_a_build_with_nothing_on_disk_is_retried_later(ctx: Context) -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    booking = ctx.store.create(start, start + timedelta(minutes=5), booking_id="b1")
    outcome = video_jobs.build_video(ctx.settings, booking, MediaCache(ctx.settings.media_dir),
                                     lambda _f, **_detail: None, threading.Event())  # fmt: skip
    assert outcome == video_jobs.RetryLater("no recorded segments on disk")
