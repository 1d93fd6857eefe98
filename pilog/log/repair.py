"""Opening a log for writing: recover the newest segment, then hand over to the writer.

Only the newest segment is scanned (invariant 5): older ones were sealed by a writer that
fdatasynced them before it created a successor. In the newest segment a torn tail is routine
after a crash or power cut: everything from the first frame that fails its checks is cut, the
cut bytes are kept under `quarantine/`, and a `Repair` is reported. A newest segment whose very
header is torn never held a durable frame; it is quarantined whole.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pilog.counts import counted
from pilog.errors import CorruptionError, FormatVersionError, LogError
from pilog.log import naming
from pilog.log.format import (
    HEADER_FIXED_BYTES,
    MAX_DEVICE_ID_BYTES,
    MAX_HEADER_BYTES,
    FrameStatus,
    SegmentHeader,
    count_intact_frames,
    decode_header,
    is_zero,
    scan_frames,
)
from pilog.log.fsio import FileHandle, FileSystem, OsFileSystem, make_dirs
from pilog.log.retention import SealedSegment
from pilog.log.writer import LogHooks, LogOptions, LogWriter, _Active, create_segment

log = logging.getLogger("pilog.log")

HEADER_READ_BYTES = MAX_HEADER_BYTES  # any version's header fits

TsOf = Callable[[bytes], int | None]
_CRC_BYTES = 4
# The longest a header can be: a durable header's first frame starts at or before it.
_MAX_HEADER_BYTES = HEADER_FIXED_BYTES + MAX_DEVICE_ID_BYTES + _CRC_BYTES


@dataclass(frozen=True, slots=True)
class Repair:
    """Bytes cut from the tail of the newest segment when the log was opened."""

    segment: str
    offset: int
    bytes_cut: int
    reason: str
    quarantined: str | None
    # Good-looking frames were found after the damage: they were never durable (a power cut
    # persists unsynced pages in any order) but are worth a look in the quarantined file.
    frames_after_damage: int = 0

    def describe(self) -> str:
        extra = (
            f"; {counted(self.frames_after_damage, 'intact frame')} followed the damage"
            if self.frames_after_damage
            else ""
        )
        kept = f", kept in {self.quarantined}" if self.quarantined else ""
        return (
            f"repaired {self.segment}: cut {counted(self.bytes_cut, 'byte')} "
            f"at offset {self.offset} "
            f"({self.reason}){kept}{extra}"
        )


def open_log(
    log_dir: Path,
    quarantine_dir: Path,
    options: LogOptions,
    *,
    fs: FileSystem | None = None,
    hooks: LogHooks | None = None,
    ts_of: TsOf | None = None,
    wall_ns: Callable[[], int] = time.time_ns,
) -> tuple[LogWriter, list[Repair]]:
    """Recover `log_dir` (creating it when new) and return a writer and the repairs made.

    Raises FormatVersionError when a segment was written by an unknown format version and
    CorruptionError when the newest segment's epoch disagrees with the older segments'.
    """
    fs = fs or OsFileSystem()
    make_dirs(log_dir, fs)
    make_dirs(quarantine_dir, fs)
    repairs: list[Repair] = []
    segments = naming.list_segments(log_dir)

    # -- drop a newest segment whose header never became durable ------------------------
    header: SegmentHeader | None = None
    data = b""
    restart_at = 0
    while segments:
        base, path = segments[-1]
        data = fs.read_bytes(path)
        try:
            header = decode_header(data, path.name)
        except (CorruptionError, FormatVersionError) as e:
            reason = _torn_header(data, e)
            if reason is None:
                raise _not_torn(e) from None
            repairs.append(_quarantine(fs, path, quarantine_dir, 0, data, reason, wall_ns()))
            fs.unlink(path)
            fs.sync_dir(log_dir)
            segments.pop()
            restart_at = base  # it never held a frame: its base seq is still unused
            continue
        if header.base_seq != base:
            raise CorruptionError(
                path.name, 28, f"header base seq {header.base_seq} disagrees with the file name"
            )
        break

    if header is None:
        return _create_new(
            log_dir, quarantine_dir, options, fs, hooks, wall_ns, repairs, restart_at
        )

    # -- scan the newest segment and cut a torn tail -------------------------------------
    base, path = segments[-1]
    epoch = header.epoch
    if len(segments) > 1:
        _check_epoch(fs, segments[0][1], epoch)
    frames: list[tuple[int, bytes]] = []
    result = scan_frames(data, header.size, base, frames)
    handle = fs.open(path, create=False)
    if result.status != FrameStatus.END and not is_zero(data[result.offset :]):
        reason = result.reason or "garbage in zero-filled space"
        repair = _quarantine(fs, path, quarantine_dir, result.offset, data, reason, wall_ns())
        repairs.append(repair)
        handle.truncate(result.offset)
    _preallocate(handle, options, path)
    # The frames just scanned may be in the page cache only (the last writer died before its
    # fdatasync, or its fdatasync failed); the writer counts them durable, so make them so.
    handle.datasync()
    first_ts = ts_of(frames[0][1]) if frames and ts_of else None
    last_ts = ts_of(frames[-1][1]) if frames and ts_of else None
    last_seq = frames[-1][0] if frames else base - 1
    del frames
    active = _Active(base, handle, result.offset, last_seq, first_ts, last_ts)
    sealed = [_sealed_segment(p, b, nxt) for (b, p), (nxt, _) in itertools.pairwise(segments)]
    for r in repairs:
        log.warning("%s", r.describe())
    writer = LogWriter(
        log_dir, quarantine_dir, options, fs, epoch, active, sealed, hooks, wall_ns=wall_ns
    )
    return writer, repairs


def _create_new(
    log_dir: Path,
    quarantine_dir: Path,
    options: LogOptions,
    fs: FileSystem,
    hooks: LogHooks | None,
    wall_ns: Callable[[], int],
    repairs: list[Repair],
    base_seq: int = 0,
) -> tuple[LogWriter, list[Repair]]:
    """Start a new log (a new epoch) at seq 0, or after the last quarantined segment."""
    epoch = os.urandom(16)
    header = SegmentHeader(epoch, base_seq, wall_ns(), options.device_id)
    prealloc = options.segment_bytes if options.preallocate else 0
    path = log_dir / naming.segment_name(base_seq)
    handle = create_segment(fs, path, header, prealloc)
    active = _Active(base_seq, handle, header.size, base_seq - 1, None, None)
    for r in repairs:
        log.warning("%s", r.describe())
    writer = LogWriter(log_dir, quarantine_dir, options, fs, epoch, active, [], hooks, wall_ns)
    return writer, repairs


def _preallocate(handle: FileHandle, options: LogOptions, path: Path) -> None:
    if not options.preallocate or handle.size() >= options.segment_bytes:
        return
    try:
        handle.allocate(options.segment_bytes)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # Preallocation only spares journal commits; a full disk must not stop the writer
        # from starting, since its retention is what frees space.
        log.warning("cannot preallocate %s (%s); appending without", path.name, e.strerror)


def _torn_header(data: bytes, error: CorruptionError | FormatVersionError) -> str | None:
    """Why a header is torn (cut short or never written); None for a foreign or damaged file,
    or a whole header of another format version."""
    if isinstance(error, FormatVersionError):
        return None  # its checksum holds: written whole, by a newer pilog
    reason = error.reason
    if "truncated" in reason or is_zero(data[:64]):
        return reason
    # No frame is written before a segment's header is durable, so a header failing its checks
    # with no frame after it was torn as it was written (into preallocated zeros: not short).
    # With frames after it, it was whole once: damage, for `pilog repair`.
    frames = count_intact_frames(data, 0, max_scan=_MAX_HEADER_BYTES)
    return None if frames else reason


def _not_torn(error: CorruptionError | FormatVersionError) -> LogError:
    """The error for a newest segment whose header is damaged, or of a newer version."""
    if isinstance(error, FormatVersionError):
        return error
    return CorruptionError(
        error.segment,
        error.offset,
        f"{error.reason}, with intact frames after it (damage, not a torn write); "
        "stop pilog and run `pilog repair` to rebuild the header",
    )


def _check_epoch(fs: FileSystem, oldest: Path, epoch: bytes) -> None:
    handle = fs.open(oldest, create=False)
    try:
        data = handle.pread(HEADER_READ_BYTES, 0)
    finally:
        handle.close()
    other = decode_header(data, oldest.name)
    if other.epoch != epoch:
        raise CorruptionError(
            oldest.name,
            12,
            f"epoch {other.epoch.hex()} differs from the newest segment's {epoch.hex()} "
            "(segments of two logs mixed in one directory)",
        )


def _sealed_segment(path: Path, base: int, next_base: int) -> SealedSegment:
    st = path.stat()
    return SealedSegment(base, next_base - 1, st.st_size, st.st_mtime_ns)


def _quarantine(
    fs: FileSystem,
    segment: Path,
    quarantine_dir: Path,
    offset: int,
    data: bytes,
    reason: str,
    stamp_ns: int,
) -> Repair:
    cut = data[offset:].rstrip(b"\0")
    dest = None
    if cut:
        dest = quarantine_dir / naming.quarantine_name(segment.name, offset, stamp_ns)
        fs.write_new(dest, cut)
        fs.sync_dir(quarantine_dir)
    found = count_intact_frames(data, offset + 1)
    return Repair(
        segment.name,
        offset,
        len(cut),
        reason,
        str(dest) if dest else None,
        frames_after_damage=found,
    )
