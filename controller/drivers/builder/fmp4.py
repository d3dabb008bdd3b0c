"""Fragmented MP4 (ISO BMFF) pieces joined into one file that only grows.

ffmpeg writes every chunk of a booking (and the cached intro) as its own fragmented MP4
(``-movflags +frag_keyframe+empty_moov+default_base_moof``): a header (``ftyp`` + ``moov``
with no samples) and then ``moof`` + ``mdat`` pairs. The finished video is one header and every
piece's pairs in order, with two numbers rewritten in each ``moof``: the fragment sequence
number (``mfhd``) and the decode time the fragment starts at (``tfdt``), so that the pieces
follow each other on one timeline. With ``default_base_moof`` every sample offset is relative
to its own ``moof``, so a pair can move to any place in a file unchanged otherwise. Nothing
already written is touched again except the header's durations (`set_duration`), which are
written up front from the booking's length and corrected in place (the same byte count) if the
recording turned out shorter.

No Python library that is kept up writes fragments, and this needs only the few boxes above:
each is a 32-bit size, a four-letter type and (for a "full box") a version and flags.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CONTAINERS = {"moov", "trak", "mdia", "minf", "stbl", "mvex", "moof", "traf", "edts"}


class Fmp4Error(Exception):
    """The file is not a fragmented MP4 this module can join."""


@dataclass(frozen=True)
class Box:
    type: str
    start: int  # offset of the size field
    size: int  # whole box, header included
    header: int  # 8, or 16 with a 64-bit size

    @property
    def body(self) -> int:
        return self.start + self.header

    @property
    def end(self) -> int:
        return self.start + self.size


def boxes(data: bytes | bytearray, start: int = 0, end: int | None = None) -> Iterator[Box]:
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif size == 0:
            size = end - at
        if size < header or at + size > end:
            raise Fmp4Error(f"box {kind!r} at {at} runs past the end")
        yield Box(kind.decode("latin-1"), at, size, header)
        at += size


def child(data: bytes | bytearray, parent: Box, kind: str) -> Box | None:
    return next((b for b in boxes(data, parent.body, parent.end) if b.type == kind), None)


def children(data: bytes | bytearray, parent: Box, kind: str) -> list[Box]:
    return [b for b in boxes(data, parent.body, parent.end) if b.type == kind]


@dataclass(frozen=True)
class Track:
    track_id: int
    timescale: int
    default_duration: int  # trex: for fragments that declare no sample duration
    sample_entry: bytes  # the stsd box: codec and parameter sets, must match across pieces


@dataclass(frozen=True)
class Piece:
    """One fragmented MP4 as written by ffmpeg, split into its header and its fragments."""

    init: bytes  # ftyp + moov
    fragments: bytes  # every moof + mdat pair, in order (sidx, mfra, styp dropped)
    movie_timescale: int
    tracks: dict[int, Track]
    ticks: dict[int, int]  # per track: total sample duration, in the track's timescale
    count: int  # number of moof boxes

    def seconds(self, track_id: int) -> float:
        return self.ticks.get(track_id, 0) / self.tracks[track_id].timescale


def read_piece(path: Path) -> Piece:
    data = path.read_bytes()
    top = list(boxes(data))
    kinds = [b.type for b in top]
    if "moov" not in kinds or "moof" not in kinds:
        raise Fmp4Error(f"{path.name}: not a fragmented MP4 (no moov/moof)")
    moov = top[kinds.index("moov")]
    init = b"".join(data[b.start : b.end] for b in top if b.type in ("ftyp", "moov"))
    movie_timescale, tracks = _tracks(data, moov)
    fragments = bytearray()
    ticks = dict.fromkeys(tracks, 0)
    count = 0
    for i, b in enumerate(top):
        if b.type != "moof":
            continue
        nxt = top[i + 1] if i + 1 < len(top) else None
        if nxt is None or nxt.type != "mdat":
            raise Fmp4Error(f"{path.name}: a moof without its mdat (a cut file?)")
        for track_id, duration in _traf_durations(data, b, tracks):
            ticks[track_id] += duration
        fragments += data[b.start : nxt.end]
        count += 1
    return Piece(init, bytes(fragments), movie_timescale, tracks, ticks, count)


def _tracks(data: bytes, moov: Box) -> tuple[int, dict[int, Track]]:
    mvhd = _need(data, moov, "mvhd")
    version = data[mvhd.body]
    movie_timescale = struct.unpack_from(">I", data, mvhd.body + (20 if version else 12))[0]
    defaults: dict[int, int] = {}
    mvex = child(data, moov, "mvex")
    if mvex is not None:
        for trex in children(data, mvex, "trex"):
            track_id, _, duration = struct.unpack_from(">III", data, trex.body + 4)
            defaults[track_id] = duration
    tracks: dict[int, Track] = {}
    for trak in children(data, moov, "trak"):
        tkhd = _need(data, trak, "tkhd")
        tv = data[tkhd.body]
        track_id = struct.unpack_from(">I", data, tkhd.body + (20 if tv else 12))[0]
        mdia = _need(data, trak, "mdia")
        mdhd = _need(data, mdia, "mdhd")
        mv = data[mdhd.body]
        timescale = struct.unpack_from(">I", data, mdhd.body + (20 if mv else 12))[0]
        stsd = _need(data, _need(data, _need(data, mdia, "minf"), "stbl"), "stsd")
        tracks[track_id] = Track(
            track_id, timescale, defaults.get(track_id, 0), data[stsd.start : stsd.end]
        )
    return movie_timescale, tracks


def _need(data: bytes | bytearray, parent: Box, kind: str) -> Box:
    found = child(data, parent, kind)
    if found is None:
        raise Fmp4Error(f"no {kind} box in {parent.type}")
    return found


def _tfhd(data: bytes | bytearray, tfhd: Box) -> tuple[int, int | None]:
    """(track id, default sample duration if the fragment declares one)."""
    flags = int.from_bytes(data[tfhd.body + 1 : tfhd.body + 4], "big")
    track_id = struct.unpack_from(">I", data, tfhd.body + 4)[0]
    at = tfhd.body + 8 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
    duration = struct.unpack_from(">I", data, at)[0] if flags & 0x8 else None
    return track_id, duration


def _traf_durations(
    data: bytes, moof: Box, tracks: dict[int, Track]
) -> Iterator[tuple[int, int]]:
    for traf in children(data, moof, "traf"):
        track_id, default = _tfhd(data, _need(data, traf, "tfhd"))
        if track_id not in tracks:
            raise Fmp4Error(f"fragment of unknown track {track_id}")
        default = tracks[track_id].default_duration if default is None else default
        total = 0
        for trun in children(data, traf, "trun"):
            flags = int.from_bytes(data[trun.body + 1 : trun.body + 4], "big")
            count = struct.unpack_from(">I", data, trun.body + 4)[0]
            if not flags & 0x100:
                total += count * default
                continue
            at = trun.body + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
            step = 4 * bin(flags & 0xF00).count("1")
            for i in range(count):
                total += struct.unpack_from(">I", data, at + i * step)[0]
        yield track_id, total


def presentation_offset(piece: Piece, track_id: int) -> int:
    """How late the track's first sample is shown after it is decoded (its composition offset,
    in the track's timescale): with B-frames, x264's video starts a few frames late, and no
    edit list moves it back in a fragmented file."""
    data = piece.fragments
    for moof in (b for b in boxes(data) if b.type == "moof"):
        for traf in children(data, moof, "traf"):
            if _tfhd(data, _need(data, traf, "tfhd"))[0] != track_id:
                continue
            trun = _need(data, traf, "trun")
            flags = int.from_bytes(data[trun.body + 1 : trun.body + 4], "big")
            if not flags & 0x800:
                return 0
            at = trun.body + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
            at += 4 * bin(flags & 0x700).count("1")
            version = data[trun.body]
            return int(struct.unpack_from(">i" if version else ">I", data, at)[0])
    return 0


def rebased(piece: Piece, first_sequence: int, start_ticks: dict[int, int]) -> bytes:
    """The piece's fragments renumbered from `first_sequence`, each track's decode times moved
    so that the piece starts at `start_ticks[track]` (in that track's timescale)."""
    out = bytearray(piece.fragments)
    origin: dict[int, int] = {}
    sequence = first_sequence
    for moof in (b for b in boxes(out) if b.type == "moof"):
        mfhd = _need(out, moof, "mfhd")
        struct.pack_into(">I", out, mfhd.body + 4, sequence)
        sequence += 1
        for traf in children(out, moof, "traf"):
            track_id, _ = _tfhd(out, _need(out, traf, "tfhd"))
            if track_id not in start_ticks:
                raise Fmp4Error(f"no start time given for track {track_id}")
            tfdt = _need(out, traf, "tfdt")
            wide = out[tfdt.body] == 1
            fmt = ">Q" if wide else ">I"
            (value,) = struct.unpack_from(fmt, out, tfdt.body + 4)
            origin.setdefault(track_id, value)
            new = value - origin[track_id] + start_ticks[track_id]
            if not wide and new >= 1 << 32:
                raise Fmp4Error("a 32-bit tfdt cannot hold this time")
            struct.pack_into(fmt, out, tfdt.body + 4, new)
    return bytes(out)


# -- the header: durations written up front, corrected in place -----------------------------
def header_with_duration(
    init: bytes, seconds: float, delays: dict[int, int] | None = None
) -> bytes:
    """`init` with a 64-bit movie-extends header (mehd) carrying the whole presentation's
    length, which is what players show as the duration of a fragmented file, and for each
    track in `delays` an edit list that shows its first sample at time 0 (x264's B-frames
    present the first picture a few frames after it is decoded). Boxes of fixed size are
    always added, so that `set_duration` can later rewrite them without moving a byte."""
    data = bytearray(init)
    for track_id, delay in (delays or {}).items():
        _add_edit_list(data, track_id, delay)
    top = list(boxes(data))
    moov = next(b for b in top if b.type == "moov")
    mvex = child(data, moov, "mvex")
    if mvex is None:
        raise Fmp4Error("no mvex box: not a fragmented MP4 header")
    old = child(data, mvex, "mehd")
    if old is not None:
        del data[old.start : old.end]
        _grow(data, [moov.start, mvex.start], -old.size)
    mehd = struct.pack(">I4sB3xQ", 20, b"mehd", 1, 0)
    data[mvex.body : mvex.body] = mehd
    _grow(data, [moov.start, mvex.start], len(mehd))
    set_duration_in(data, seconds)
    return bytes(data)


def _add_edit_list(data: bytearray, track_id: int, delay: int) -> None:
    moov = next(b for b in boxes(data) if b.type == "moov")
    for trak in children(data, moov, "trak"):
        tkhd = _need(data, trak, "tkhd")
        tv = data[tkhd.body]
        if struct.unpack_from(">I", data, tkhd.body + (20 if tv else 12))[0] != track_id:
            continue
        old = child(data, trak, "edts")
        if old is not None:
            del data[old.start : old.end]
            _grow(data, [moov.start, trak.start], -old.size)
        # elst version 1, one entry: the whole movie (set later), from `delay`, at rate 1.
        elst = struct.pack(">I4sB3xIQqHH", 36, b"elst", 1, 1, 0, delay, 1, 0)
        edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
        data[tkhd.end : tkhd.end] = edts
        _grow(data, [moov.start, trak.start], len(edts))
        return
    raise Fmp4Error(f"no track {track_id} in the header")


def _grow(data: bytearray, starts: list[int], by: int) -> None:
    for start in starts:
        (size,) = struct.unpack_from(">I", data, start)
        struct.pack_into(">I", data, start, size + by)


def set_duration_in(data: bytearray, seconds: float) -> None:
    """Write `seconds` into the header's mvhd and mehd (movie timescale), in place."""
    moov = next(b for b in boxes(data) if b.type == "moov")
    mvhd = _need(data, moov, "mvhd")
    version = data[mvhd.body]
    (timescale,) = struct.unpack_from(">I", data, mvhd.body + (20 if version else 12))
    ticks = round(seconds * timescale)
    if version:
        struct.pack_into(">Q", data, mvhd.body + 24, ticks)
    else:
        struct.pack_into(">I", data, mvhd.body + 16, min(ticks, 0xFFFFFFFF))
    mehd = _need(data, _need(data, moov, "mvex"), "mehd")
    struct.pack_into(">Q", data, mehd.body + 4, ticks)
    for trak in children(data, moov, "trak"):
        edts = child(data, trak, "edts")
        elst = child(data, edts, "elst") if edts is not None else None
        if elst is not None and data[elst.body] == 1:
            struct.pack_into(">Q", data, elst.body + 8, ticks)


def header_duration(data: bytes | bytearray) -> float:
    """The duration the header of a joined file declares (mehd), in seconds."""
    moov = next(b for b in boxes(data) if b.type == "moov")
    mvhd = _need(data, moov, "mvhd")
    version = data[mvhd.body]
    (timescale,) = struct.unpack_from(">I", data, mvhd.body + (20 if version else 12))
    mehd = _need(data, _need(data, moov, "mvex"), "mehd")
    (ticks,) = struct.unpack_from(">Q", data, mehd.body + 4)
    return float(ticks / timescale)


def set_duration(path: Path, seconds: float) -> bool:
    """Correct the declared duration of a joined file in place; True when it changed."""
    with path.open("r+b") as fh:
        head = bytearray(fh.read(64 * 1024))
        top = list(boxes(head, 0, _header_end(head)))
        end = next(b for b in top if b.type == "moov").end
        before = bytes(head[:end])
        region = bytearray(before)
        set_duration_in(region, seconds)
        if bytes(region) == before:
            return False
        fh.seek(0)
        fh.write(region)
        fh.flush()
    return True


def _header_end(head: bytearray) -> int:
    # Only ftyp and moov are parsed; the first moof may be cut by the 64 KiB read.
    at = 0
    for _ in range(2):
        size = struct.unpack_from(">I", head, at)[0]
        at += size
    return at
