"""The local backend, the key scheme, checkpoints and the retention rule (no server needed)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.config import Settings, load_settings
from controller.context import open_storage
from controller.drivers.storage import (
    FileCheckpoint,
    KeyScheme,
    Storage,
    StorageError,
    UploadInterrupted,
    retention_due,
)
from controller.drivers.storage.local import LocalStorage

TEMPLATE = "{prefix}/{device}/{yyyy}/{mm}/{dd}/{booking}.mp4"
START = datetime(2024, 3, 7, 18, 30, tzinfo=UTC)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "b1.mp4"
    path.parent.mkdir()
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    return path


@pytest.fixture
def local(settings: Settings) -> LocalStorage:
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage)
    return storage


def test_default_is_local_under_data_dir(settings: Settings, local: LocalStorage) -> None:
    assert local.root == settings.data_dir / "uploads"
    assert local.url == f"file://{settings.data_dir / 'uploads'}"
    assert isinstance(local, Storage)
    assert "writable" in local.check()


def test_upload_copies_verifies_and_reports_progress(local: LocalStorage, video: Path) -> None:
    seen: list[tuple[int, int]] = []
    key = local.key_for("b1", START)
    assert key == "testdev/2024/03/07/b1.mp4"
    obj = local.upload(video, key, on_progress=lambda d, t: seen.append((d, t)))
    dest = local.root / key
    assert dest.read_bytes() == video.read_bytes()
    assert obj.size == video.stat().st_size
    assert obj.sha256 == hashlib.sha256(video.read_bytes()).hexdigest()
    assert obj.url == f"file://{dest}"
    assert obj.presigned_url is None and local.presign(key, 60) is None
    assert seen[-1] == (obj.size, obj.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # No temporary copy is left beside it.
    assert [p.name for p in dest.parent.iterdir()] == ["b1.mp4"]
    local.verify(obj, deep=True)


def test_verify_catches_changes_behind_its_back(local: LocalStorage, video: Path) -> None:
    obj = local.upload(video, "k/b1.mp4")
    dest = local.root / "k/b1.mp4"
    data = bytearray(dest.read_bytes())
    data[1000] ^= 0xFF
    dest.write_bytes(bytes(data))
    local.verify(obj)  # same size: only the deep check reads the content
    with pytest.raises(StorageError, match="sha256"):
        local.verify(obj, deep=True)
    dest.write_bytes(b"short")
    with pytest.raises(StorageError, match="5 bytes, expected") as exc:
        local.verify(obj)
    assert exc.value.retryable
    dest.unlink()
    with pytest.raises(StorageError, match="missing"):
        local.verify(obj)


def test_stop_interrupts_and_leaves_nothing(local: LocalStorage, video: Path) -> None:
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        stop.set()

    with pytest.raises(UploadInterrupted) as exc:
        local.upload(video, "k/b1.mp4", on_progress=progress, stop=stop)
    assert exc.value.retryable
    assert not (local.root / "k").exists() or not any((local.root / "k").iterdir())
    # The next call, without the stop, completes.
    obj = local.upload(video, "k/b1.mp4")
    local.verify(obj, deep=True)


def test_overwrite_replaces_whole_file(local: LocalStorage, video: Path, tmp_path: Path) -> None:
    local.upload(video, "k/b1.mp4")
    other = tmp_path / "other.mp4"
    other.write_bytes(b"x" * 10)
    obj = local.upload(other, "k/b1.mp4")
    assert (local.root / "k/b1.mp4").read_bytes() == b"x" * 10
    assert obj.size == 10


def test_missing_source_is_not_retryable(local: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot read") as exc:
        local.upload(tmp_path / "nope.mp4", "k/x.mp4")
    assert not exc.value.retryable
    with pytest.raises(StorageError, match="not a regular file"):
        local.upload(tmp_path, "k/x.mp4")


@pytest.mark.parametrize("key", ["../evil.mp4", "/abs.mp4", "a//b.mp4", "a/./b.mp4", ""])
def test_keys_cannot_leave_the_root(local: LocalStorage, video: Path, key: str) -> None:
    with pytest.raises(StorageError, match="bad storage key"):
        local.upload(video, key)
    with pytest.raises(StorageError):
        local.delete(key)


def test_unwritable_root_is_a_clear_error(tmp_path: Path, video: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    storage = LocalStorage(blocker / "uploads", KeyScheme(TEMPLATE, prefix="", device="d"))
    with pytest.raises(StorageError, match="not writable"):
        storage.check()
    with pytest.raises(StorageError, match="cannot create"):
        storage.upload(video, "a/b.mp4")


def test_abort_stale_removes_old_temporary_copies(local: LocalStorage, video: Path) -> None:
    local.upload(video, "k/b1.mp4")
    crumb = local.root / "k" / ".ezrec-tmp-123-4-b2.mp4"
    crumb.write_bytes(b"half")
    assert local.abort_stale(3600) == 0
    old = time.time() - 7200
    os.utime(crumb, (old, old))
    assert local.abort_stale(3600) == 1
    assert not crumb.exists()
    assert (local.root / "k/b1.mp4").exists()


def test_relative_file_url_is_under_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, storage_url="file://videos", device_id="d")
    storage = open_storage(settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "videos"


# -- key scheme -----------------------------------------------------------------------------


def test_key_scheme_fields_and_suffix() -> None:
    scheme = KeyScheme(TEMPLATE, prefix="/venue/a/", device="pi-1")
    assert scheme.render("b7", START) == "venue/a/pi-1/2024/03/07/b7.mp4"
    assert scheme.render("b7", START, "-cam0") == "venue/a/pi-1/2024/03/07/b7-cam0.mp4"
    assert scheme.static_prefix() == "venue/a/pi-1/"
    flat = KeyScheme("{date}_{hh}h_{booking}.mp4", prefix="", device="d")
    assert flat.render("x", START) == "2024-03-07_18h_x.mp4"
    assert flat.static_prefix() == ""
    assert KeyScheme(TEMPLATE, prefix="", device="d").render("b", START).startswith("d/2024/")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{prefix}/{user}/{booking}.mp4", "unknown field {user}"),
        ("{prefix}/{device}.mp4", "must contain {booking}"),
        ("{prefix}/../{booking}.mp4", "not a clean relative path"),
    ],
)
def test_bad_templates_fail_at_start(template: str, message: str) -> None:
    with pytest.raises(StorageError, match=message) as exc:
        KeyScheme(template, prefix="p", device="d")
    assert not exc.value.retryable


def test_bad_template_setting_fails_open_storage(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, s3_key_template="{nope}/{booking}")
    with pytest.raises(StorageError, match="EZREC_S3_KEY_TEMPLATE"):
        open_storage(settings)


@given(st.text(min_size=1, max_size=40))
def test_any_booking_id_gives_a_clean_key_or_a_clear_error(booking: str) -> None:
    scheme = KeyScheme(TEMPLATE, prefix="p", device="d")
    try:
        key = scheme.render(booking, START)
    except StorageError as exc:
        assert "cannot be used in a storage key" in str(exc)
        assert not exc.retryable
        return
    parts = key.split("/")
    assert parts[:5] == ["p", "d", "2024", "03", "07"]
    assert parts[5] == f"{booking}.mp4"
    assert all(part not in ("", ".", "..") for part in parts)
    assert "\\" not in key and "\0" not in key


# -- checkpoints ----------------------------------------------------------------------------


def test_file_checkpoint_roundtrip_and_corruption(tmp_path: Path) -> None:
    cp = FileCheckpoint(tmp_path / "sub" / "v.mp4.upload.json")
    assert cp.load() is None
    cp.save({"upload_id": "u", "parts": [{"number": 1, "etag": "e", "size": 5}]})
    assert cp.load() == {"upload_id": "u", "parts": [{"number": 1, "etag": "e", "size": 5}]}
    assert [p.name for p in cp.path.parent.iterdir()] == [cp.path.name]  # no temp left
    cp.path.write_text('{"upload_id": "u", "par')  # torn write by something else
    assert cp.load() is None
    cp.path.write_text(json.dumps([1, 2]))
    assert cp.load() is None
    cp.clear()
    cp.clear()
    assert not cp.path.exists()


# -- retention ------------------------------------------------------------------------------


def test_retention_due_after_grace() -> None:
    up = datetime(2024, 1, 1, 12, tzinfo=UTC)
    assert not retention_due(up, up + timedelta(hours=23, minutes=59), 24)
    assert retention_due(up, up + timedelta(hours=24), 24)
    assert retention_due(up, up, 0)
    with pytest.raises(ValueError):
        retention_due(up, up, -1)
    with pytest.raises(TypeError):
        retention_due(up, datetime(2024, 1, 3), 1)


@given(
    st.datetimes(timezones=st.just(UTC)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)),
    st.floats(min_value=0, max_value=24 * 30),
)
def test_retention_is_monotonic(uploaded: datetime, extra: timedelta, grace_h: float) -> None:
    try:
        later = uploaded + extra
    except OverflowError:
        return
    # Once due, it stays due; and it is never due before the grace has passed.
    if retention_due(uploaded, uploaded, grace_h):
        assert retention_due(uploaded, later, grace_h)
    assert retention_due(uploaded, later, grace_h) == (extra >= timedelta(hours=grace_h))
