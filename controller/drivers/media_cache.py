"""The media cache: intros, logos and sponsor logos, fetched once and checked once.

Every booking's video is branded with media that come from paths or URLs (the venue's defaults in
the settings, or the booking user's own from the booking system). Fetching and checking them in
the middle of a build would make every build depend on the network and re-decode the same files,
so they are resolved ahead, into ``<data_dir>/media``:

- a copy named by the SHA-256 of its *content* (``<sha256>.<ext>``): nothing the user controls
  (user id, URL, file name) ever becomes part of a path, and identical media are stored once;
- images are decoded for real by ffmpeg and stored normalised as PNG with alpha, so the builder
  only ever sees one image format; videos are probed and their first frame decoded;
- the outcome (good or bad, with the reason) is remembered in ``media/index.json``, so the next
  ``resolve`` costs a dictionary look-up, and a URL that is down still resolves to the last good
  copy. ``refresh`` re-fetches and re-checks on demand (``POST /media/notify``, settings change)
  and deletes the copies no source points to any more.

Bad media never raise: ``resolve`` returns ``Resolved(path=None, note=...)`` and the build goes
on without it, with the note in the booking's history.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from controller.drivers.ffprobe import PROBE_TIMEOUT_S, ProbeError, ffprobe, video_stream
from controller.fileio import atomic_write, durable_replace, sha256_file

Kind = Literal["video", "image"]

INDEX_NAME = "index.json"
MAX_BYTES: dict[str, int] = {"video": 500 * 1024 * 1024, "image": 20 * 1024 * 1024}
MAX_INTRO_S = 120.0  # an "intro" longer than this is a mistake, not an intro
MAX_LOGO_PX = 2048  # logos are shrunk to this width at most: overlaying a 6000 px PNG is waste


def _decode_first_frame(path: Path, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Decode one frame for real; None if it worked, else the reason."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path)]
    cmd += ["-map", "0:v:0", "-frames:v", "1", "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return "decoding timed out"
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "not decodable"
    return None


@dataclass(frozen=True)
class Resolved:
    path: Path | None
    note: str | None = None


@dataclass(frozen=True)
class _Checked:
    ok: bool
    ext: str
    reason: str | None = None


class MediaCache:
    """Content-addressed copies of intros and logos in one directory, with a JSON index."""

    def __init__(self, media_dir: Path, timeout_s: float = 20) -> None:
        self.media_dir = Path(media_dir)
        self.timeout_s = timeout_s

    # -- public ---------------------------------------------------------------------------
    def resolve(self, source: str | None, kind: Kind, label: str | None = None) -> Resolved:
        """A checked local copy of ``source``, or None and a note saying why not.

        ``label`` names the medium in notes ("logo", "sponsor1", ...); it defaults to "intro"
        for videos and "logo" for images.
        """
        if not source or not source.strip():
            return Resolved(None)
        source = source.strip()
        label = label or ("intro" if kind == "video" else "logo")
        with self._locked() as index:
            entry = index.get(self._key(source, kind))
            if entry is not None and self._still_valid(source, entry):
                return self._answer(source, label, entry)
            entry = self._fetch_and_check(source, kind, previous=entry)
            index[self._key(source, kind)] = entry
            self._save(index)
            return self._answer(source, label, entry)

    def refresh(self, sources: Iterable[str], kind: Kind | None = None) -> None:
        """Re-fetch and re-check ``sources`` now; then delete copies nothing points to.

        With ``kind`` None every kind already known for a source is refreshed (a source never
        seen before is left for the next ``resolve``, which knows its kind).
        """
        wanted = {s.strip() for s in sources if s and s.strip()}
        with self._locked() as index:
            for key in list(index):
                entry = index[key]
                if entry["source"] in wanted and kind in (None, entry["kind"]):
                    index[key] = self._fetch_and_check(entry["source"], entry["kind"], entry)
            if kind is not None:
                for source in wanted:
                    if self._key(source, kind) not in index:
                        index[self._key(source, kind)] = self._fetch_and_check(source, kind)
            self._save(index)
            self._collect_garbage(index)

    def forget(self, keep: Iterable[str]) -> None:
        """Drop every source not in ``keep`` from the index and delete its copy."""
        kept = {s.strip() for s in keep if s}
        with self._locked() as index:
            for key in [k for k, e in index.items() if e["source"] not in kept]:
                del index[key]
            self._save(index)
            self._collect_garbage(index)

    # -- index ----------------------------------------------------------------------------
    @staticmethod
    def _key(source: str, kind: Kind) -> str:
        return f"{kind}:{source}"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        # The API process (POST /media/notify) and the supervisor both use the cache:
        # an advisory lock keeps their read-modify-write of the index from interleaving.
        self.media_dir.mkdir(parents=True, exist_ok=True)
        with (self.media_dir / ".lock").open("a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._load()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.media_dir / INDEX_NAME).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}  # a lost index only costs one more fetch per source
        return data if isinstance(data, dict) else {}

    def _save(self, index: dict[str, dict[str, Any]]) -> None:
        atomic_write(self.media_dir / INDEX_NAME, json.dumps(index, indent=1, sort_keys=True))

    def _collect_garbage(self, index: dict[str, dict[str, Any]]) -> None:
        # Derived files (the builder's intro re-encodes) are named "<sha>.<params>.<ext>", so
        # everything whose name starts with a live hash stays.
        live = {e["sha256"] for e in index.values() if e.get("sha256")}
        for path in self.media_dir.iterdir():
            if path.name.startswith(".") or path.name == INDEX_NAME or not path.is_file():
                continue
            if path.name.split(".", 1)[0] not in live:
                path.unlink(missing_ok=True)

    # -- fetch and check ------------------------------------------------------------------
    def _still_valid(self, source: str, entry: dict[str, Any]) -> bool:
        if entry.get("path") and not (self.media_dir / entry["path"]).is_file():
            return False  # the copy was deleted behind our back
        if _is_url(source):
            return True  # URLs are re-fetched by refresh(), not on every resolve
        # A local file that changed (new intro dropped in place) is picked up without a notify.
        stat = _stat(source)
        return stat is not None and stat == (entry.get("size"), entry.get("mtime"))

    def _answer(self, source: str, label: str, entry: dict[str, Any]) -> Resolved:
        if entry.get("path"):
            return Resolved(self.media_dir / entry["path"], None)
        return Resolved(None, f"{label} {source}: {entry.get('reason') or 'unusable'}")

    def _fetch_and_check(
        self, source: str, kind: Kind, previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {"source": source, "kind": kind, "checked_at": time.time()}
        with tempfile.TemporaryDirectory(dir=self.media_dir, prefix=".fetch-") as tmpdir:
            raw = Path(tmpdir) / "raw"
            reason = self._fetch(source, raw, MAX_BYTES[kind])
            if reason is None:
                sha = sha256_file(raw)
                entry["sha256"] = sha
                stat = None if _is_url(source) else _stat(source)
                if stat is not None:
                    entry["size"], entry["mtime"] = stat
                reason = self._store(raw, sha, kind, entry)
            if reason is not None:
                entry["reason"] = reason
                # A URL that is down now keeps serving the last good copy: the venue's branding
                # should not vanish from videos because its web server blinked.
                if previous and previous.get("path") and _is_url(source) and "fetch" in reason:
                    kept = dict(previous)
                    kept["last_error"] = reason
                    return kept
        return entry

    def _fetch(self, source: str, dest: Path, limit: int) -> str | None:
        if _is_url(source):
            try:
                with (
                    httpx.Client(timeout=self.timeout_s, follow_redirects=True) as client,
                    client.stream("GET", source) as resp,
                ):
                    if resp.status_code != 200:
                        return f"fetch failed: HTTP {resp.status_code}"
                    size = 0
                    with dest.open("wb") as out:
                        for chunk in resp.iter_bytes():
                            size += len(chunk)
                            if size > limit:
                                return f"fetch failed: larger than {limit // (1024 * 1024)} MB"
                            out.write(chunk)
            except httpx.HTTPError as exc:
                return f"fetch failed: {type(exc).__name__}: {exc}"
            return None
        path = Path(source.removeprefix("file://")).expanduser()
        if not path.is_file():
            return "no such file"
        if path.stat().st_size > limit:
            return f"larger than {limit // (1024 * 1024)} MB"
        try:
            shutil.copyfile(path, dest)
        except OSError as exc:
            return f"cannot read: {exc.strerror or exc}"
        return None

    def _store(self, raw: Path, sha: str, kind: Kind, entry: dict[str, Any]) -> str | None:
        """Check ``raw`` and move it into the cache; None when it is good, else the reason."""
        if raw.stat().st_size == 0:
            return "empty file"
        checked = _check_image(raw, sha, self.media_dir) if kind == "image" else _check_video(raw)
        if not checked.ok:
            return checked.reason
        final = self.media_dir / f"{sha}.{checked.ext}"
        if kind == "video" and not final.exists():
            durable_replace(raw, final)
        entry["path"] = final.name
        return None


def _check_video(path: Path) -> _Checked:
    try:
        info = ffprobe(path, "-show_format", "-show_streams")
    except ProbeError as exc:
        return _Checked(False, "", f"not a readable video ({exc})")
    stream = video_stream(info)
    if stream is None:
        return _Checked(False, "", "not a readable video (no video stream)")
    try:
        duration = float(info.get("format", {}).get("duration") or stream.get("duration") or 0)
    except ValueError:
        duration = 0.0
    if duration <= 0:
        return _Checked(False, "", "not a readable video (no duration)")
    if duration > MAX_INTRO_S:
        return _Checked(False, "", f"too long for an intro ({duration:.0f} s > {MAX_INTRO_S:.0f})")
    reason = _decode_first_frame(path)
    if reason is not None:
        return _Checked(False, "", f"not a decodable video ({reason})")
    names = str(info.get("format", {}).get("format_name", ""))
    ext = next((e for e in ("mp4", "mov", "webm", "mkv", "ts") if e in names), "mp4")
    if "matroska" in names:
        ext = "mkv"
    elif "mpegts" in names:
        ext = "ts"
    return _Checked(True, ext)


def _check_image(path: Path, sha: str, media_dir: Path) -> _Checked:
    """Decode for real and store as RGBA PNG (``<sha>.png``), shrunk to MAX_LOGO_PX wide."""
    try:
        info = ffprobe(path, "-show_streams")
    except ProbeError as exc:
        return _Checked(False, "", f"not a decodable image ({exc})")
    stream = video_stream(info)
    if stream is None or not stream.get("width"):
        return _Checked(False, "", "not a decodable image")
    final = media_dir / f"{sha}.png"
    tmp = media_dir / f".{sha}.png.tmp"
    shrink = f"scale='min({MAX_LOGO_PX},iw)':-1:flags=lanczos"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-y", "-i", str(path)]
    cmd += ["-frames:v", "1", "-vf", f"{shrink},format=rgba", "-f", "image2", "-c:v", "png"]
    cmd.append(str(tmp))
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        return _Checked(False, "", "not a decodable image (timed out)")
    if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = f" ({lines[-1]})" if lines else ""
        return _Checked(False, "", f"not a decodable image{detail}")
    durable_replace(tmp, final)
    return _Checked(True, "png")


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _stat(source: str) -> tuple[int, float] | None:
    try:
        st = Path(source.removeprefix("file://")).expanduser().stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime
