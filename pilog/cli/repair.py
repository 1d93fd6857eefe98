"""`pilog repair`: rebuild damaged sealed segments, so that consumers read through them.

A consumer never skips damage (invariant 5): it stops at it and says so. This is the explicit
repair that invariant names. It runs with pilog stopped (it takes the writer's lock), reads
every sealed segment, and rewrites each damaged one with its intact records as they were and,
for each record that is gone, a `Gap` event naming that seq, so the log stays dense in seq.
The damaged file is kept whole under `quarantine/`. Each repaired segment is also recorded by
a `Repair` event at the end of the log, and every run of lost seqs as a gap incident in the
index, so `pilog status` counts them.

The newest segment is rebuilt here only when its header is damaged: opening the log for
writing already cuts a torn tail there (the last writer's crash), which is what `pilog run` and
this command both do first.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pilog.cli.progress import progress
from pilog.config import Config
from pilog.datadir import DataDirPaths, EventLog, WriterLock, writer_pid
from pilog.errors import (
    CorruptionError,
    DataDirError,
    FormatVersionError,
    LockedError,
    PilogError,
)
from pilog.events import Gap, Record, Repair, decode_record, encode_record
from pilog.index.store import IndexStore
from pilog.log import naming
from pilog.log.format import SegmentHeader, decode_header
from pilog.log.reader import HEADER_READ_BYTES, Progress
from pilog.log.salvage import (
    Filler,
    SegmentRepair,
    header_damaged,
    plan_repair,
    repaired_bytes,
    rewrite_segment,
)

RUNNING_FIX = "a repair rewrites segments: stop pilog first (systemctl stop pilog)"


@dataclass
class RepairReport:
    repairs: list[SegmentRepair] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # damage this command will not touch
    scanned: int = 0  # sealed segments read
    notes: list[str] = field(default_factory=list)  # said before the findings


@dataclass(frozen=True)
class _Planned:
    plan: SegmentRepair
    header: SegmentHeader
    original: bytes


def repair(config: Config, *, dry_run: bool = False) -> RepairReport:
    """Find and (unless `dry_run`) rewrite every damaged sealed segment of the data dir.

    A dry run only reads, takes no lock and works while pilog runs (for the group too).
    """
    paths = DataDirPaths(config.data_dir)
    if dry_run:
        return _dry_run(paths, config.device_id)
    try:
        lock = WriterLock(paths)
    except LockedError as e:
        raise DataDirError(f"{e}; {RUNNING_FIX}, or see what it would do with --dry-run") from e
    try:
        planned, report = _plan(paths, config.device_id)
        if not planned:
            lock.release()
            return report
        stamp = time.time_ns()
        for p in planned:
            fill = _filler(p.plan.segment, p.header.created_ns)
            new = repaired_bytes(p.header, p.plan, fill)
            path = paths.log_dir / p.plan.segment
            kept = rewrite_segment(path, paths.quarantine_dir, p.original, new, stamp)
            p.plan.quarantined = str(kept)
    except BaseException:
        lock.release()
        raise
    # Open the log as its writer does (a torn tail of the newest segment is cut, the index
    # learns the rewritten sizes) and record what was done; closing releases the lock.
    events = EventLog(config, lock=lock)
    try:
        for p in planned:
            _record(events, p.plan)
    finally:
        events.close()
    return report


def _dry_run(paths: DataDirPaths, device_id: str) -> RepairReport:
    pid = writer_pid(paths)
    _, report = _plan(paths, device_id)
    if pid is not None:
        report.notes.append(
            f"pilog is running (pid {pid}): this dry run read the sealed segments only; "
            f"{RUNNING_FIX}"
        )
    return report


def _plan(paths: DataDirPaths, device_id: str) -> tuple[list[_Planned], RepairReport]:
    segments = naming.list_segments(paths.log_dir)
    report = RepairReport(scanned=max(len(segments) - 1, 0))
    if len(segments) < 2:
        return [], report
    epoch = _log_epoch(segments)
    with progress("reading segments", events=False) as tell:
        planned = _plan_segments(segments, epoch, device_id, report, tell)
    return planned, report


def _plan_segments(
    segments: list[tuple[int, Path]],
    epoch: bytes,
    device_id: str,
    report: RepairReport,
    tell: Progress | None,
) -> list[_Planned]:
    planned: list[_Planned] = []
    lasts: list[int | None] = [b - 1 for b, _ in segments[1:]]
    total = sum(_size(p) for _, p in segments)
    done = 0
    for (base, path), last in zip(segments, [*lasts, None], strict=True):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # a dry run beside pilog: retention deleted it meanwhile
        done += len(data)
        if tell is not None:
            # Frames are checked, not decoded: bytes are the measure here.
            tell(done, max(total, done), 0)
        if last is None and not header_damaged(data, path.name):
            continue  # the newest segment's torn tail is the writer's to cut, not ours
        try:
            header, plan = plan_repair(
                data, path.name, base, last, epoch, device_id, path.stat().st_mtime_ns
            )
        except (CorruptionError, FormatVersionError) as e:
            report.refused.append(str(e))
            continue
        if plan.damage:
            planned.append(_Planned(plan, header, data))
            report.repairs.append(plan)
    return planned


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _log_epoch(segments: list[tuple[int, Path]]) -> bytes:
    """The log's epoch: the newest readable header's (the one the writer continues)."""
    for _, path in reversed(segments):
        try:
            with path.open("rb") as f:
                return decode_header(f.read(HEADER_READ_BYTES), path.name).epoch
        except (OSError, CorruptionError, FormatVersionError):
            continue
    raise PilogError("no segment has a readable header: nothing to repair against")


def _filler(segment: str, created_ns: int) -> Filler:
    reason = f"record lost to damage in {segment}; replaced by pilog repair"

    @functools.lru_cache(maxsize=1)  # a run of lost seqs shares the record before it
    def stamp_of(previous: bytes | None) -> tuple[int, int, bytes]:
        if previous is not None:
            try:
                before = decode_record(previous)
                return before.ts_ns, before.mono_ns, before.boot_id
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
        return created_ns, 0, b""

    def fill(seq: int, previous: bytes | None) -> bytes:
        # Stamped like the record before it, so time-ordered views place it where it was.
        ts, mono, boot = stamp_of(previous)
        return encode_record(Record(ts, mono, boot, Gap(reason, first_seq=seq, last_seq=seq)))

    return fill


def _record(events: EventLog, r: SegmentRepair) -> None:
    first = r.damage[0]
    events.append_incident(
        Repair(r.segment, first.offset, r.bytes_lost, r.describe(), r.quarantined)
    )
    ts = time.time_ns()
    gaps = [
        (lo, Gap(f"lost to damage in {r.segment} (pilog repair)", first_seq=lo, last_seq=hi))
        for lo, hi in r.lost
    ]

    def add(index: IndexStore) -> None:
        for seq, gap in gaps:
            index.add_incident(seq, ts, gap)

    events.update_index("repair gaps", add)
