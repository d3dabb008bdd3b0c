"""Supabase sync against a loopback PostgREST stand-in, through the real `supabase` client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from controller import booking_media
from controller.cli import main
from controller.config import Settings, load_settings
from controller.context import Context, open_context
from controller.drivers.supabase import parse_remote_time
from controller.health import collect
from controller.sync import GIVE_UP_AFTER, SupabaseSync, SyncWorker, start_sync
from tests._postgrest import FakeSupabase

DEVICE = "court-1"


@pytest.fixture
def fake() -> Iterator[FakeSupabase]:
    server = FakeSupabase()
    yield server
    server.close()


@pytest.fixture
def sync_settings(tmp_path: Path, fake: FakeSupabase) -> Settings:
    return load_settings(
        data_dir=tmp_path,
        device_id=DEVICE,
        camera_driver="synthetic",
        min_free_disk_mb=1,
        supabase_url=fake.url,
        supabase_key=fake.key,
    )


@pytest.fixture
def sctx(sync_settings: Settings) -> Iterator[Context]:
    c = open_context(sync_settings)
    yield c
    c.close()


@pytest.fixture
def sync(sctx: Context) -> SupabaseSync:
    return SupabaseSync(
        sctx.settings, sctx.store, status_fn=lambda: collect(sctx.settings, sctx.store)
    )


def slot(hours: float, length_min: float = 60) -> tuple[str, str]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=hours)
    return start.isoformat(), (start + timedelta(minutes=length_min)).isoformat()


def remote_booking(fake: FakeSupabase, booking_id: str, hours: float, **more: Any) -> None:
    start, end = slot(hours)
    values = {"id": booking_id, "user_id": "u1", "camera_id": DEVICE, "start_time": start,
              "end_time": end, "status": "confirmed"} | more
    fake.add("bookings", **values)


def walk_to_uploaded(ctx: Context, booking_id: str) -> None:
    """The transitions the supervisor fires for a good recording, with the same changes."""
    store = ctx.store
    store.fire(booking_id, "start", changes={"raw_dir": f"/data/raw/{booking_id}"})
    store.fire(booking_id, "finish")
    store.fire(booking_id, "process", changes={
        "processed_path": f"/data/processed/{booking_id}.mp4",
        "extra": {"outputs": [f"/data/processed/{booking_id}.mp4"], "duration_s": 3601.4},
    })
    key = f"venue/{DEVICE}/2026/01/02/{booking_id}.mp4"
    store.fire(booking_id, "upload", changes={
        "video_url": f"s3://bucket/{key}",
        "extra": {"uploaded": [{
            "url": f"s3://bucket/{key}", "key": key, "size": 123456, "sha256": "ab" * 32,
            "etag": None, "presigned_url": None, "uploaded_at": "2026-01-02T19:05:00+01:00",
        }], "presigned_url": None},
    })


def patches(fake: FakeSupabase, booking_id: str) -> list[dict[str, Any]]:
    return [
        r.body for r in fake.requests
        if r.method == "PATCH" and r.table == "bookings" and r.param("id") == f"eq.{booking_id}"
    ]


# -- pull ----------------------------------------------------------------------------------


def test_pull_creates_this_devices_new_bookings_with_the_users_media(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b-new", 2)
    remote_booking(fake, "b-other-court", 2, camera_id="court-2")
    remote_booking(fake, "b-past", -3)
    remote_booking(fake, "b-no-user", 5, user_id=None)
    fake.add("user_settings", user_id="u1", intro_video_path="u1/intro.mp4",
             logo_path="https://cdn.example.test/u1/logo.png",
             sponsor_logo1_path="u1/gone.png", sponsor_logo2_path="usermedia/u1/s2.png",
             sponsor_logo3_path=None)
    fake.objects |= {("usermedia", "u1/intro.mp4"), ("usermedia", "u1/s2.png")}

    result = sync.pull()

    assert result.created == ["b-new", "b-no-user"]
    assert result.seen == 2  # the other court and the past slot are filtered by the server
    booking = sctx.store.get("b-new")
    assert booking.state == "confirmed" and booking.user_id == "u1"
    assert booking.camera_id == DEVICE and booking.extra["source"] == "supabase"
    media = booking.extra["media"]
    assert media["intro"].startswith(f"{fake.url}/storage/v1/object/sign/usermedia/u1/intro.mp4")
    assert "token=" in media["intro"]
    assert media["logo"] == "https://cdn.example.test/u1/logo.png"
    assert len(media["sponsors"]) == 1 and "/usermedia/u1/s2.png?token=" in media["sponsors"][0]
    assert any("u1/gone.png" in note for note in result.notes)
    assert "media" not in sctx.store.get("b-no-user").extra
    # The media the video builder will use are the user's own, over the venue's defaults.
    sources = booking_media.media_sources(sctx.settings, booking)
    assert sources["intro"] == media["intro"] and sources["user_logo"] == media["logo"]

    get = next(r for r in fake.requests if r.method == "GET" and r.table == "bookings")
    assert get.param("camera_id") == f"eq.{DEVICE}"
    assert (get.param("end_time") or "").startswith("gte.")
    assert get.param("select") == "*"
    settings_get = next(r for r in fake.requests if r.table == "user_settings")
    assert settings_get.param("user_id") == "in.(u1)"
    sign = next(r for r in fake.requests if r.path.endswith("/u1/intro.mp4"))
    # Valid until a week after the booking, so that a build days later can still fetch it.
    assert int(sign.body["expiresIn"]) > 7 * 24 * 3600
    # Pulling again changes nothing and creates nothing twice.
    version = booking.version
    again = sync.pull()
    assert again.created == [] and again.refused == {}
    assert sctx.store.get("b-new").version == version


def test_pull_reschedules_and_cancels_confirmed_bookings(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b1", 2)
    remote_booking(fake, "b2", 4)
    sync.pull()
    start, end = slot(6, 90)
    fake.set("bookings", {"id": "b1"}, start_time=start, end_time=end)
    fake.set("bookings", {"id": "b2"}, status="Cancelled")

    result = sync.pull()

    assert result.rescheduled == ["b1"] and result.cancelled == ["b2"]
    b1 = sctx.store.get("b1")
    assert b1.state == "confirmed"
    assert b1.start_time == datetime.fromisoformat(start)
    assert b1.end_time == datetime.fromisoformat(end)
    assert [h.trigger for h in sctx.store.history("b1")] == ["reschedule"]
    assert sctx.store.get("b2").state == "cancelled"
    assert sync.pull().cancelled == []  # already cancelled: nothing more happens


def test_pull_never_changes_a_booking_that_is_recording(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b1", 0.001)
    sync.pull()
    sctx.store.fire("b1", "start")
    before = sctx.store.get("b1")
    start, end = slot(3)
    fake.set("bookings", {"id": "b1"}, start_time=start, end_time=end)

    moved = sync.pull()
    fake.set("bookings", {"id": "b1"}, status="cancelled")
    cancelled = sync.pull()

    after = sctx.store.get("b1")
    assert (after.state, after.version, after.start_time) == (
        "recording", before.version, before.start_time
    )
    assert "recording here" in moved.refused["b1"]
    assert "recording here" in cancelled.refused["b1"]


def test_pull_refuses_an_overlap_and_carries_on(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "a", 2)
    remote_booking(fake, "b-overlap", 2.5)
    remote_booking(fake, "c", 5)
    remote_booking(fake, "bad id!", 6)

    result = sync.pull()

    assert result.created == ["a", "c"]
    assert "overlaps booking a" in result.refused["b-overlap"]
    assert "bad id!" in result.refused
    assert {b.id for b in sctx.store.list()} == {"a", "c"}


def test_seed_date_and_bare_times_are_venue_wall_clock() -> None:
    day = (datetime.now() + timedelta(days=1)).date()
    wall = datetime.combine(day, datetime.min.time()).replace(hour=18)
    assert parse_remote_time("18:00", day.isoformat()) == wall.astimezone(UTC)
    assert parse_remote_time("19:30:00", day) == wall.replace(hour=19, minute=30).astimezone(UTC)
    # A naive timestamp is the same wall clock; one with an offset is taken as it is.
    assert parse_remote_time(wall.isoformat()) == wall.astimezone(UTC)
    assert parse_remote_time("2026-03-01T18:00:00Z") == datetime(2026, 3, 1, 18, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                    timezones=st.sampled_from([UTC, datetime.now().astimezone().tzinfo])))
def test_remote_times_round_trip(moment: datetime) -> None:
    assert parse_remote_time(moment.isoformat()) == moment
    assert parse_remote_time(moment.isoformat()).tzinfo is UTC


def test_bad_remote_time_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no date"):
        parse_remote_time("18:00")
    with pytest.raises(ValueError, match="missing"):
        parse_remote_time(None)


# -- push ----------------------------------------------------------------------------------


def test_push_delivers_every_change_in_order_and_upserts_the_video(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b1", 0.001)
    sync.pull()
    walk_to_uploaded(sctx, "b1")

    result = sync.push()

    assert result.error is None and result.delivered == 5  # created + 4 transitions
    assert [p["status"] for p in patches(fake, "b1")] == [
        "confirmed", "recording", "completed", "video_processed", "video_uploaded"
    ]
    remote = fake.row("bookings", id="b1")
    assert remote is not None
    assert remote["status"] == "video_uploaded"
    key = f"venue/{DEVICE}/2026/01/02/b1.mp4"
    assert remote["video_url"] == f"s3://bucket/{key}"
    videos = fake.rows("videos")
    assert len(videos) == 1
    video = videos[0]
    start = sctx.store.get("b1").start_time
    assert {k: video[k] for k in (
        "user_id", "booking_id", "video_url", "storage_path", "filename", "date",
        "duration_seconds", "uploaded_at", "size")} == {
        "user_id": "u1", "booking_id": "b1", "video_url": f"s3://bucket/{key}",
        "storage_path": key, "filename": "b1.mp4",
        "date": start.astimezone().date().isoformat(), "duration_seconds": 3601,
        "uploaded_at": "2026-01-02T19:05:00+01:00", "size": 123456,
    }
    upsert = fake.writes("videos")[0]
    assert upsert.param("on_conflict") == "booking_id"
    assert "resolution=merge-duplicates" in upsert.headers["prefer"]
    # Writes ask for nothing back, so the key needs no read right on what it only writes.
    assert all("return=minimal" in w.headers["prefer"] for w in fake.writes())
    assert sctx.store.outbox_pending() == []
    assert sync.push().delivered == 0  # nothing left, nothing sent again


def test_outage_grows_the_outbox_then_it_drains_in_order(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b1", 0.001)
    remote_booking(fake, "b2", 3, status=None)
    sync.pull()
    assert sync.push().delivered == 2
    assert fake.row("bookings", id="b2")["status"] == "confirmed"  # type: ignore[index]

    fake.down("refuse")
    sctx.store.fire("b1", "start")
    sctx.store.fire("b2", "cancel")
    refused = sync.push()
    fake.up()
    fake.down("error")
    sctx.store.fire("b1", "finish")
    errored = sync.push()

    assert refused.delivered == 0 and "ConnectError" in (refused.error or "")
    assert errored.delivered == 0 and "PGRST000" in (errored.error or "")
    pending = sctx.store.outbox_pending()
    assert [(r.booking_id, r.data["booking"]["state"]) for r in pending] == [
        ("b1", "recording"), ("b2", "cancelled"), ("b1", "completed")
    ]
    assert pending[0].attempts == 2 and pending[1].attempts == 0  # stopped at the first
    assert fake.row("bookings", id="b1")["status"] == "confirmed"  # type: ignore[index]

    fake.up()
    sent_before = len(fake.requests)
    drained = sync.push()

    assert drained.delivered == 3 and drained.error is None
    order = [(r.param("id"), r.body["status"]) for r in fake.requests[sent_before:]]
    assert order == [("eq.b1", "recording"), ("eq.b2", "cancelled"), ("eq.b1", "completed")]
    assert fake.row("bookings", id="b1")["status"] == "completed"  # type: ignore[index]
    assert fake.row("bookings", id="b2")["status"] == "cancelled"  # type: ignore[index]
    assert sctx.store.outbox_pending() == []


def test_a_redelivered_change_is_harmless(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b1", 0.001)
    sync.pull()
    walk_to_uploaded(sctx, "b1")
    last = sctx.store.outbox_pending()[-1]
    # A crash after the server answered but before the row was marked delivered: the same
    # change goes out twice.
    sync.deliver(last.data)
    first = (fake.rows("bookings"), fake.rows("videos"))

    assert sync.push().delivered == 5
    sync.deliver(last.data)

    assert len(fake.rows("videos")) == 1
    assert (fake.rows("bookings"), fake.rows("videos")) == first


def test_a_cancellation_up_there_is_not_overwritten_by_older_news_from_here(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b1", 2)
    sync.pull()
    sync.push()
    # The operator moves it on the box while the customer cancels it in the app.
    start, end = slot(3)
    sctx.store.fire("b1", "reschedule", changes={
        "start_time": datetime.fromisoformat(start), "end_time": datetime.fromisoformat(end)})
    fake.set("bookings", {"id": "b1"}, status="Cancelled")

    assert sync.push().delivered == 1
    assert fake.row("bookings", id="b1")["status"] == "Cancelled"  # type: ignore[index]
    assert sync.pull().cancelled == ["b1"]
    assert sync.push().delivered == 1
    assert fake.row("bookings", id="b1")["status"] == "cancelled"  # type: ignore[index]
    guarded = patches(fake, "b1")
    assert [p["status"] for p in guarded] == ["confirmed", "confirmed", "cancelled"]
    ors = [r.param("or") for r in fake.requests if r.method == "PATCH"]
    assert ors == ["(status.is.null,status.not.ilike.cancel*)"] * 2 + [None]


def test_a_booking_unknown_to_the_booking_system_is_pushed_harmlessly(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    start, end = slot(1)
    sctx.store.create(datetime.fromisoformat(start), datetime.fromisoformat(end),
                      booking_id="local-1")
    sctx.store.fire("local-1", "cancel")

    assert sync.push().delivered == 2
    assert fake.rows("bookings") == [] and fake.rows("videos") == []


def test_a_rejected_row_is_set_aside_only_after_retries_and_only_for_its_content(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    # Made on the box with a user, so the booking system has no `bookings` row: the videos
    # upsert breaks the foreign key (23503) every time.
    start = datetime.now(UTC) + timedelta(minutes=1)
    sctx.store.create(start, start + timedelta(hours=1), booking_id="orphan", user_id="u1")
    walk_to_uploaded(sctx, "orphan")
    remote_booking(fake, "b2", 3)
    sync.pull()
    uploaded_row = sctx.store.outbox_pending()[4]

    results = [sync.push() for _ in range(GIVE_UP_AFTER)]

    assert all(r.error and "23503" in r.error for r in results[:-1])
    assert results[-1].error is None and results[-1].set_aside == 1
    assert results[-1].delivered == 1  # b2's creation got through behind it
    assert results[0].delivered == 4  # the four changes before the rejected one
    assert sctx.store.outbox_pending() == []
    with sctx.db.reader() as session:
        from controller.db import OutboxRow

        kept = session.get(OutboxRow, uploaded_row.id)
        assert kept is not None and kept.delivered_at is not None
        assert kept.attempts == GIVE_UP_AFTER and "23503" in (kept.last_error or "")

    # An outage is never a reason to skip: it waits however long it lasts.
    sctx.store.fire("b2", "cancel")
    fake.down("error")
    for _ in range(GIVE_UP_AFTER + 2):
        assert sync.push().delivered == 0
    assert len(sctx.store.outbox_pending()) == 1
    fake.up()
    assert sync.push().delivered == 1


def test_a_wrong_key_stops_the_sync_without_losing_anything(
    fake: FakeSupabase, sctx: Context
) -> None:
    settings = sctx.settings.model_copy(update={"supabase_key": SecretStr("not-the-key")})
    bad = SupabaseSync(settings, sctx.store)
    start, end = slot(1)
    sctx.store.create(datetime.fromisoformat(start), datetime.fromisoformat(end))

    with pytest.raises(Exception, match="PGRST301"):
        bad.pull()
    assert "PGRST301" in (bad.push().error or "")
    assert len(sctx.store.outbox_pending()) == 1


# -- status --------------------------------------------------------------------------------


def test_push_status_upserts_one_row_per_device_and_the_camera(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    fake.add("cameras", id=DEVICE, name="Court 1", status="unknown")
    fake.add("cameras", id="court-2", name="Court 2", status="online")
    sctx.store.kv_set("supervisor", {"status": "idle", "recording": ["b1"],
                                      "cameras": [{"index": 0, "up": True},
                                                  {"index": 1, "up": True}]})

    sync.push_status()
    sync.push_status()

    rows = fake.rows("system_status")
    assert len(rows) == 1
    row = rows[0]
    assert row["device_id"] == DEVICE and row["status"] == "recording"
    assert row["is_recording"] is True and row["cameras_up"] == 2
    assert row["queue"]["confirmed"] == 0 and isinstance(row["cpu_usage"], float)
    assert row["details"]["device_id"] == DEVICE
    assert fake.row("cameras", id=DEVICE)["status"] == "recording"  # type: ignore[index]
    assert fake.row("cameras", id="court-2")["status"] == "online"  # type: ignore[index]
    upsert = fake.writes("system_status")[0]
    assert upsert.param("on_conflict") == "device_id"


def test_status_says_offline_when_the_supervisor_is_not_running(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    sync.push_status()
    assert fake.rows("system_status")[0]["status"] == "offline"


# -- the worker and the faces ----------------------------------------------------------------


def test_worker_backs_off_during_an_outage_and_catches_up(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    remote_booking(fake, "b1", 2)
    fake.down("refuse")
    worker = SyncWorker(sync, interval_s=0.05, max_backoff_s=0.4)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while worker.failures < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.failures >= 3 and worker.is_alive()
        assert worker.delay() <= 0.4
        rounds_down = worker.rounds
        start, end = slot(4)
        sctx.store.create(datetime.fromisoformat(start), datetime.fromisoformat(end),
                          booking_id="local-1")
        fake.up()
        worker.wake()
        while (worker.failures or sctx.store.outbox_pending()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.failures == 0 and sctx.store.outbox_pending() == []
        assert worker.rounds > rounds_down
        assert sctx.store.get("b1").state == "confirmed"
        assert fake.rows("system_status")[0]["device_id"] == DEVICE
        report = sctx.store.kv_get("sync")
        assert report is not None and report[0]["errors"] == []
    finally:
        worker.stop()
    assert not worker.is_alive()


class CountingSync:
    """Stands in for SupabaseSync: counts rounds, fails while `down` is set."""

    def __init__(self) -> None:
        self.down = False
        self.rounds = threading.Semaphore(0)

    def run_once(self, stop: threading.Event | None = None) -> dict[str, Any]:
        self.rounds.release()
        return {"pull": {}, "errors": ["connection refused"] if self.down else []}


def test_a_wake_pushes_at_once_but_never_cuts_a_back_off_short() -> None:
    fake = CountingSync()
    worker = SyncWorker(fake, interval_s=30, max_backoff_s=600)  # type: ignore[arg-type]
    worker.start()
    try:
        assert fake.rounds.acquire(timeout=5)  # the first round runs at start
        worker.wake()
        assert fake.rounds.acquire(timeout=5), "a wake while healthy runs a round now"
        fake.down = True
        worker.wake()
        assert fake.rounds.acquire(timeout=5)  # this round fails: back-off of 30 s or more
        assert worker.failures == 1
        worker.wake()
        assert not fake.rounds.acquire(timeout=1.0), "a wake must not cut the back-off short"
    finally:
        worker.stop()
    assert not worker.is_alive()


def test_the_supervisor_pushes_its_own_changes_as_they_happen(
    fake: FakeSupabase, sync_settings: Settings
) -> None:
    from controller.supervisor import create_supervisor

    remote_booking(fake, "b1", 2)
    settings = sync_settings.model_copy(update={"supabase_sync_s": 300.0})
    ctx = open_context(settings)
    sup = create_supervisor(settings, ctx.store)
    try:
        (worker,) = [s for s in sup.sidecars if isinstance(s, SyncWorker)]
        deadline = time.monotonic() + 10
        while worker.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ctx.store.get("b1").state == "confirmed"  # the first round pulled it
        ctx.store.fire("b1", "cancel", detail="court closed")
        # With a 300 s tick only the store's outbox listener can bring this within seconds.
        while time.monotonic() < deadline:
            if (fake.row("bookings", id="b1") or {}).get("status") == "cancelled":
                break
            time.sleep(0.02)
        assert (fake.row("bookings", id="b1") or {}).get("status") == "cancelled"
    finally:
        sup.shutdown()
        ctx.close()


def test_start_sync_needs_the_url_and_key(tmp_path: Path, sctx: Context) -> None:
    plain = load_settings(data_dir=tmp_path / "x", device_id=DEVICE)
    assert start_sync(plain, sctx.store, status_fn=None) is None
    worker = start_sync(sctx.settings, sctx.store, status_fn=None, interval_s=60)
    assert worker is not None and worker.is_alive()
    worker.stop()
    assert not worker.is_alive()


def test_cli_sync_once(fake: FakeSupabase, sync_settings: Settings,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "EZREC_DATA_DIR": str(sync_settings.data_dir),
        "EZREC_DEVICE_ID": DEVICE,
        "EZREC_SUPABASE_URL": fake.url,
        "EZREC_SUPABASE_KEY": fake.key,
        "EZREC_MIN_FREE_DISK_MB": "1",
    }.items():
        monkeypatch.setenv(name, value)
    remote_booking(fake, "b1", 2)
    runner = CliRunner()

    done = runner.invoke(main, ["sync", "--once", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["pull"]["created"] == ["b1"] and report["push"]["delivered"] == 1
    assert report["status_pushed"] is True

    fake.down("refuse")
    failed = runner.invoke(main, ["sync", "--once"])
    assert failed.exit_code == 1
    assert "error pull:" in failed.output and "ConnectError" in failed.output

    monkeypatch.delenv("EZREC_SUPABASE_KEY")
    unset = runner.invoke(main, ["sync", "--once"])
    assert unset.exit_code == 1 and "EZREC_SUPABASE_KEY" in unset.output


def test_a_videos_table_without_the_replay_columns_still_gets_the_video(
    fake: FakeSupabase, sctx: Context, sync: SupabaseSync
) -> None:
    """A booking system set up before clips and share links existed: PostgREST refuses the
    unknown columns (PGRST204), and the video row and the status must still arrive."""
    from controller.drivers.supabase import REPLAY_COLUMNS

    fake.tables["videos"].columns -= set(REPLAY_COLUMNS)
    remote_booking(fake, "b1", 0.001)
    sync.pull()
    walk_to_uploaded(sctx, "b1")
    result = sync.push()
    assert result.error is None
    assert (fake.row("bookings", id="b1") or {})["status"] == "video_uploaded"
    video = fake.row("videos", booking_id="b1")
    assert video is not None and video["size"] == 123456
    assert sctx.store.outbox_pending() == []


def test_the_doctors_check_uses_the_sync_client(
    fake: FakeSupabase, sync_settings: Settings, tmp_path: Path
) -> None:
    from controller.drivers import supabase

    assert supabase.check(sync_settings) == supabase.Check(
        True, f"Supabase {fake.url}: bookings readable"
    )
    off = supabase.check(load_settings(data_dir=tmp_path / "x", device_id=DEVICE))
    assert off.ok and "sync off" in off.detail
    wrong = supabase.check(sync_settings.model_copy(update={"supabase_key": SecretStr("nope")}))
    assert not wrong.ok and "refused the key (401)" in wrong.detail
    fake.down("error")
    failing = supabase.check(sync_settings)
    assert not failing.ok and "answered 503" in failing.detail
    fake.down("refuse")
    away = supabase.check(sync_settings)
    assert not away.ok and "unreachable" in away.detail
