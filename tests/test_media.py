"""The media cache against real files, real ffmpeg and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from controller.drivers.media_cache import MediaCache, Resolved
from tests._media_fixtures import make_intro, make_logo

HASHED = re.compile(r"^[0-9a-f]{64}\.(png|mp4|ts|mov|mkv|webm)$")


class Server:
    """A loopback HTTP server whose files and failures the test controls; counts requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits.append(self.path)
                body = outer.files.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("src")
    return {
        "logo": make_logo(root / "logo.png", (80, 40), (255, 0, 0, 128)),
        "blue": make_logo(root / "blue.png", (80, 40), (0, 0, 255, 255)),
        "intro": make_intro(root / "intro.mp4", 1),
    }


def cached_files(media_dir: Path) -> list[str]:
    return sorted(p.name for p in media_dir.iterdir() if not p.name.startswith("."))


def test_local_logo_is_decoded_and_stored_as_rgba_png(
    media: dict[str, Path], tmp_path: Path
) -> None:
    cache = MediaCache(tmp_path / "media")
    got = cache.resolve(str(media["logo"]), "image")
    assert got.note is None and got.path is not None
    assert HASHED.match(got.path.name) and got.path.parent == tmp_path / "media"
    with Image.open(got.path) as img:
        assert img.mode == "RGBA" and img.size == (80, 40)
        assert img.getpixel((10, 10)) == (255, 0, 0, 128)  # alpha kept
    index = json.loads((tmp_path / "media" / "index.json").read_text())
    (entry,) = index.values()
    assert entry["source"] == str(media["logo"]) and entry["path"] == got.path.name


def test_second_resolve_does_not_check_again(media: dict[str, Path], tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "media")
    first = cache.resolve(str(media["intro"]), "video")
    checked_at = json.loads((tmp_path / "media" / "index.json").read_text())
    again = MediaCache(tmp_path / "media").resolve(str(media["intro"]), "video")
    assert again == first and first.path is not None and first.path.suffix == ".mp4"
    assert json.loads((tmp_path / "media" / "index.json").read_text()) == checked_at


def test_a_local_file_replaced_in_place_is_picked_up(
    media: dict[str, Path], tmp_path: Path
) -> None:
    src = tmp_path / "venue.png"
    src.write_bytes(media["logo"].read_bytes())
    cache = MediaCache(tmp_path / "media")
    first = cache.resolve(str(src), "image")
    src.write_bytes(media["blue"].read_bytes())
    second = cache.resolve(str(src), "image")
    assert first.path != second.path and second.path is not None
    with Image.open(second.path) as img:
        assert img.getpixel((1, 1)) == (0, 0, 255, 255)


@pytest.mark.parametrize(
    ("content", "kind", "reason"),
    [
        (b"this is not an image at all", "image", "not a decodable image"),
        (b"", "image", "empty file"),
        (b"\x00garbage" * 2000, "video", "not a readable video"),
    ],
)
def test_bad_media_give_a_note_never_an_exception(
    content: bytes, kind: str, reason: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    got = MediaCache(tmp_path / "media").resolve(str(bad), kind)  # type: ignore[arg-type]
    assert got.path is None
    label = "logo" if kind == "image" else "intro"
    assert got.note is not None and got.note.startswith(f"{label} {bad}: {reason}")
    assert cached_files(tmp_path / "media") == ["index.json"]


def test_missing_source_and_no_source(tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "media")
    assert cache.resolve(None, "image") == Resolved(None)
    assert cache.resolve("  ", "video") == Resolved(None)
    got = cache.resolve(str(tmp_path / "nope.png"), "image", label="sponsor2")
    assert got == Resolved(None, f"sponsor2 {tmp_path / 'nope.png'}: no such file")


def test_url_is_fetched_once_and_named_by_content_only(
    media: dict[str, Path], server: Server, tmp_path: Path
) -> None:
    server.files["/u/..%2F..%2Fetc%2Fpasswd.png"] = media["logo"].read_bytes()
    url = f"{server.url}/u/..%2F..%2Fetc%2Fpasswd.png?user=../../evil"
    cache = MediaCache(tmp_path / "media", timeout_s=5)
    got = cache.resolve(url, "image", label="user_logo")
    assert got.note is None and got.path is not None
    assert cache.resolve(url, "image") == got
    assert len(server.hits) == 1  # the second resolve came from the index
    # Nothing from the URL or the user reached the file system.
    assert all(HASHED.match(n) or n == "index.json" for n in cached_files(tmp_path / "media"))


def test_url_errors_are_notes(server: Server, tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "media", timeout_s=5)
    got = cache.resolve(f"{server.url}/missing.png", "image")
    assert got == Resolved(None, f"logo {server.url}/missing.png: fetch failed: HTTP 404")
    server.stop()
    down = cache.resolve(f"{server.url}/other.png", "image")
    assert down.path is None and down.note is not None and "fetch failed" in down.note


def test_refresh_refetches_and_deletes_the_stale_copy(
    media: dict[str, Path], server: Server, tmp_path: Path
) -> None:
    server.files["/logo.png"] = media["logo"].read_bytes()
    url = f"{server.url}/logo.png"
    cache = MediaCache(tmp_path / "media", timeout_s=5)
    old = cache.resolve(url, "image").path
    assert old is not None and old.exists()

    server.files["/logo.png"] = media["blue"].read_bytes()  # the venue uploaded a new logo
    assert cache.resolve(url, "image").path == old  # cached until told
    cache.refresh([url])
    new = cache.resolve(url, "image").path
    assert new is not None and new != old and new.exists()
    assert not old.exists()  # the stale copy is gone

    # The server is down at the next refresh: the last good copy stays in use.
    server.stop()
    cache.refresh([url])
    assert cache.resolve(url, "image").path == new and new.exists()


def test_forget_removes_sources_no_longer_configured(
    media: dict[str, Path], tmp_path: Path
) -> None:
    cache = MediaCache(tmp_path / "media")
    logo = cache.resolve(str(media["logo"]), "image").path
    intro = cache.resolve(str(media["intro"]), "video").path
    assert logo is not None and intro is not None
    # A file derived from the intro (the builder's re-encode) lives while the intro does.
    derived = intro.with_name(intro.name.split(".")[0] + ".intro-abc.ts")
    derived.write_bytes(b"x")
    cache.forget([str(media["intro"])])
    assert not logo.exists() and intro.exists() and derived.exists()
    cache.forget([])
    assert cached_files(tmp_path / "media") == ["index.json"]


def test_refresh_with_a_kind_adds_new_sources(media: dict[str, Path], tmp_path: Path) -> None:
    cache = MediaCache(tmp_path / "media")
    cache.refresh([str(media["intro"])], kind="video")
    index = json.loads((tmp_path / "media" / "index.json").read_text())
    assert [e["kind"] for e in index.values()] == ["video"]
    assert all(e.get("path") for e in index.values())
