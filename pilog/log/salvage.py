"""Rebuilding a damaged sealed segment, for `pilog repair`.

A sealed segment's seq range is known without reading it: its first seq is in its name, its
last is one before its successor's. So damage inside it (a flipped bit, a zeroed page, a torn
header) can be repaired without guessing: every frame that still passes its checks is kept
as it was, the frames lost in between are found again by resynchronising on the next intact
frame, and each lost seq gets a filler record (the caller's: an event saying the record was
lost) so the segment stays dense in seq and every reader reads through it.

The damaged file is never changed: it is copied whole to `quarantine/`, the repaired segment
is written beside it and renamed over it, keeping its mtime (retention ages segments by it).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pilog.counts import counted
from pilog.errors import CorruptionError, FormatVersionError
from pilog.log import naming
from pilog.log.format import (
    FRAME_HEADER_BYTES,
    FRAME_RECORD,
    FrameStatus,
    SegmentHeader,
    decode_header,
    encode_frame,
    intact_frame_at,
    scan_frames,
)
from pilog.log.fsio import FileSystem, OsFileSystem

_SEQ = struct.Struct("<Q")
_MAX_SEQ = (1 << 64) - 1
# (lost seq, payload of the nearest intact record before it, if any) -> the filler's payload
Filler = Callable[[int, bytes | None], bytes]


@dataclass(frozen=True, slots=True)
class Damage:
    offset: int
    reason: str


@dataclass(slots=True)
class SegmentRepair:
    """What `plan_repair` found in one segment, and what rewriting it keeps and loses."""

    segment: str
    base_seq: int
    last_seq: int
    size: int  # bytes of the damaged file
    kept: list[tuple[int, bytes]] = field(default_factory=list)  # intact records
    damage: list[Damage] = field(default_factory=list)
    header_rebuilt: bool = False
    quarantined: str | None = None

    @property
    def lost(self) -> list[tuple[int, int]]:
        """Runs of seqs (first, last) whose records are gone."""
        runs: list[tuple[int, int]] = []
        expect = self.base_seq
        for seq, _ in [*self.kept, (self.last_seq + 1, b"")]:
            if seq > expect:
                runs.append((expect, seq - 1))
            expect = seq + 1
        return runs

    @property
    def lost_count(self) -> int:
        return sum(last - first + 1 for first, last in self.lost)

    @property
    def bytes_lost(self) -> int:
        kept = sum(FRAME_HEADER_BYTES + len(p) for _, p in self.kept)
        return max(self.size - kept, 0)

    def describe(self) -> str:
        where = "; ".join(f"offset {d.offset}: {d.reason}" for d in self.damage)
        runs = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in self.lost)
        lost = f"lost seq {runs}" if runs else "no record lost"
        return (
            f"{self.segment} (seq {self.base_seq}..{self.last_seq}): {where}; "
            f"kept {counted(len(self.kept), 'record')}, {lost}"
        )


def plan_repair(
    data: bytes,
    name: str,
    base_seq: int,
    last_seq: int | None,
    epoch: bytes,
    device_id: str,
    created_ns: int,
) -> tuple[SegmentHeader, SegmentRepair]:
    """Find every intact record of a sealed segment holding `base_seq..last_seq`.

    `last_seq` None is the newest segment: it holds what its intact frames hold, and what
    follows them is a tail the writer cuts when it opens the log. Raises FormatVersionError
    for a segment of another format version (never rewritten: a newer pilog may read it)
    and CorruptionError for one of another log.
    """
    newest = last_seq is None
    hi = _MAX_SEQ if last_seq is None else last_seq
    repair = SegmentRepair(name, base_seq, hi, len(data))
    start: tuple[int, int] | None
    try:
        header = decode_header(data, name)
    except CorruptionError as e:
        # The checksum is checked before the version, so this covers a damaged version byte.
        header = SegmentHeader(epoch, base_seq, created_ns, device_id)
        repair.header_rebuilt = True
        repair.damage.append(Damage(e.offset, f"header: {e.reason}"))
        start = _resync(data, 0, base_seq, hi)  # its length is unknown: search
    else:
        if header.epoch != epoch:
            raise CorruptionError(name, 12, f"epoch {header.epoch.hex()} is another log's")
        start = (header.size, base_seq)
    while start is not None:
        pos, first = start
        before = len(repair.kept)
        result = scan_frames(data, pos, first, repair.kept)
        over = next((i for i in range(before, len(repair.kept)) if repair.kept[i][0] > hi), None)
        if over is not None:
            at = pos + sum(FRAME_HEADER_BYTES + len(p) for _, p in repair.kept[before:over])
            del repair.kept[over:]
            repair.damage.append(Damage(at, f"a record past the segment's last seq {hi}"))
            break
        if result.status == FrameStatus.END or newest:
            break
        reason = result.reason or (
            "zero-filled space in a sealed segment"
            if result.status == FrameStatus.ZERO
            else str(result.status)
        )
        repair.damage.append(Damage(result.offset, reason))
        nxt = repair.kept[-1][0] + 1 if repair.kept else base_seq
        if nxt > hi:
            break  # only bytes after the last record
        start = _resync(data, result.offset + 1, nxt, hi)
    last_kept = repair.kept[-1][0] if repair.kept else base_seq - 1
    if newest:
        repair.last_seq = last_kept
    elif last_kept < hi and not repair.damage:
        repair.damage.append(Damage(len(data), "the segment ends early"))
    return header, repair


def header_damaged(data: bytes, name: str) -> bool:
    """True when a segment's header fails its checks and intact frames follow it: damage
    (the header was durable before any frame), not a header torn as it was written."""
    try:
        decode_header(data, name)
    except CorruptionError:
        return _resync(data, 0, 0, _MAX_SEQ) is not None
    except FormatVersionError:
        return False
    return False


def _resync(buf: bytes, pos: int, lo: int, hi: int) -> tuple[int, int] | None:
    """(offset, seq) of the first intact frame at or after `pos` with a seq in `lo..hi`."""
    # A regex finds candidate frame headers at C speed: a length below 16 MiB (top byte 0),
    # the record type, and the seq's high bytes when the whole range shares them.
    lo_b, hi_b = _SEQ.pack(lo), _SEQ.pack(hi)
    seq_pat = b".{3}" + re.escape(lo_b[3:]) if lo_b[3:] == hi_b[3:] else b".{8}"
    pattern = re.compile(b"(?s)(?=.{7}\x00" + seq_pat + bytes([FRAME_RECORD]) + b")")
    for m in pattern.finditer(buf, pos):
        frame = intact_frame_at(buf, m.start())
        if frame is not None and lo <= frame[0] <= hi:
            return m.start(), frame[0]
    return None


def repaired_bytes(header: SegmentHeader, repair: SegmentRepair, filler: Filler) -> bytes:
    """The segment as rewritten: its intact records, and a filler for each lost seq."""
    out = bytearray(header.encode())
    kept = dict(repair.kept)
    previous: bytes | None = None
    for seq in range(repair.base_seq, repair.last_seq + 1):
        payload = kept.get(seq)
        if payload is None:
            out += encode_frame(seq, filler(seq, previous))
        else:
            out += encode_frame(seq, payload)
            previous = payload
    return bytes(out)


def rewrite_segment(
    path: Path,
    quarantine_dir: Path,
    data: bytes,
    new: bytes,
    stamp_ns: int,
    fs: FileSystem | None = None,
) -> Path:
    """Keep the damaged file in quarantine, then atomically replace it by `new`."""
    fs = fs or OsFileSystem()
    kept = quarantine_dir / naming.damaged_name(path.name, stamp_ns)
    fs.write_new(kept, data)
    fs.sync_dir(quarantine_dir)
    st = os.stat(path)
    tmp = path.with_name(path.name + naming.REPAIR_SUFFIX)
    fs.write_new(tmp, new)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    fs.rename(tmp, path)
    fs.sync_dir(path.parent)
    return kept
