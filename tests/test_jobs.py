"""Media per booking: the booking user's own media over the venue's, resolved through the cache."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller import jobs
from controller.context import Context
from controller.drivers.media_cache import MediaCache


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
    intro, overlays, notes = jobs.resolve_media(ctx.settings, booking, cache)
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
    jobs.forget_stale_media(ctx.settings, ctx.store, cache)
    assert not old_copy.exists()
    assert new_copy is not None and new_copy.exists()
    assert jobs.media_in_use(ctx.settings, ctx.store)["image"] == [str(new)]
