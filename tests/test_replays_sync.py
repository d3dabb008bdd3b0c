"""The booking system's `videos` row carries the clips and the share links, and is upserted
again when the links are made and revoked (the loopback PostgREST stand-in, real client)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controller import share
from controller.config import load_settings
from controller.context import Context, open_context, open_storage
from controller.sync import SupabaseSync
from tests._postgrest import FakeSupabase
from tests.test_share import uploaded_booking


@pytest.fixture
def fake() -> Iterator[FakeSupabase]:
    server = FakeSupabase()
    yield server
    server.close()


@pytest.fixture
def sctx(tmp_path: Path, fake: FakeSupabase) -> Iterator[Context]:
    settings = load_settings(
        data_dir=tmp_path, device_id="court-1", supabase_url=fake.url, supabase_key=fake.key,
        share_url_template="https://watch.example/v/{booking}/{clip}?t={token}",
    )  # fmt: skip
    c = open_context(settings)
    yield c
    c.close()


def test_the_videos_row_lists_clips_and_share_links_and_follows_a_revoke(
    fake: FakeSupabase, sctx: Context
) -> None:
    start = "2030-06-01T18:00:00+00:00"
    fake.add("bookings", id="bk1", user_id="u1", camera_id="court-1", start_time=start,
             end_time="2030-06-01T18:40:00+00:00", status="confirmed")  # fmt: skip
    uploaded_booking(sctx, sctx.settings, user_id="u1")
    sync = SupabaseSync(sctx.settings, sctx.store)
    assert sync.push().error is None
    row = fake.rows("videos")[0]
    assert row["share_url"] is None and row["clips"][0]["name"] == "clip01"
    assert row["clips"][0]["storage_path"].endswith("bk1-clip01.mp4")

    storage = open_storage(sctx.settings)
    booking = share.ensure(sctx.settings, sctx.store, storage, "bk1")
    assert sync.push().error is None
    row = fake.rows("videos")[0]
    assert row["share_url"] == share.link(booking)
    assert row["clips"][0]["share_url"] == share.link(booking, "clip01")
    assert row["clips"][0]["marks"] == ["2030-06-01T18:00:30+00:00"]

    share.revoke(sctx.store, storage, "bk1")
    assert sync.push().error is None
    row = fake.rows("videos")[0]
    assert row["share_url"] is None and row["clips"][0]["share_url"] is None
    assert len(fake.rows("videos")) == 1  # one row per booking, upserted
