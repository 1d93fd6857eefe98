"""The single writer of a segmented log: append, group commit, rotate, bound.

`append` is cheap and never blocks on I/O: it stamps the next seq, frames the payload into an
in-memory batch and returns the seq. A committer thread writes each batch with one `pwrite`
and, per the fsync policy, one `fdatasync`, then raises the durable watermark. An event is
durable once `durable_seq >= seq`; consumers only read durable events (invariant 3).

Threads: `append` may be called from any thread (an asyncio loop, driver threads). Appenders
hold `_lock` only to stamp and buffer; the committer holds `_io_lock` for all file I/O and
takes `_lock` only to swap the batch out. Hooks are called on the committer thread.

After a crash, `open_log` (pilog.log.repair) recovers the newest segment and hands this
class a clean starting point.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pilog.errors import LogFullError, LogIOError, RecordTooLargeError
from pilog.log import naming
from pilog.log.format import (
    FRAME_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    SegmentHeader,
    encode_frame,
)
from pilog.log.fsio import FileHandle, FileSystem
from pilog.log.retention import ON_FULL_BLOCK, SealedSegment, plan_for_age, plan_for_room

log = logging.getLogger("pilog.log")

FSYNC_ALWAYS = "always"
FSYNC_INTERVAL = "interval"
FSYNC_NEVER = "never"
FSYNC_POLICIES = (FSYNC_ALWAYS, FSYNC_INTERVAL, FSYNC_NEVER)

RETRY_AFTER_IO_ERROR_S = 1.0
# Block-aligned commits (`align_bytes`) for sync windows of at least ALIGN_MIN_INTERVAL_S:
# the committer looks every ALIGN_TICK_S, commits when the oldest waiting record is about to
# leave the window, and then writes whole blocks only, when the data allows. A flash card
# rewrites a whole block for a partial one, so a sync that ends mid-block costs that block
# again at the next sync: at 50 readings/s and a 1 s window, 1.6x the frames instead of 1x.
ALIGN_TICK_S = 0.1
ALIGN_MIN_INTERVAL_S = 0.4
ALIGN_MAX_BYTES = 64 << 10  # past this much per commit a partial block is noise: write it all
# Zero-ahead: a sync into fallocated (unwritten) space also commits the extent conversion in
# the file system's journal (about 12 KiB on ext4 with 4 KiB blocks), once per sync. Zeros
# written ahead in chunks convert a chunk at once; they cost their own bytes, so only while
# the average sync is smaller than what the conversion would cost.
ZERO_AHEAD_BELOW_BYTES = 16 << 10
_ZERO_AHEAD_WEIGHT = 0.1  # of the newest sync in the running average of bytes per sync
RETENTION_CHECK_INTERVAL_S = 60.0
CLOSE_COMMIT_ROUNDS = 8  # each round's drops add a Gap event or two; they settle long before
_LENGTH = struct.Struct("<I")  # a frame's payload length, after its checksum
# Write errors that can pass (space freed, quota raised): keep the batch in memory and retry.
_RETRYABLE_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EINTR, errno.EAGAIN})


@dataclass(frozen=True, slots=True)
class LogOptions:
    """How the writer commits, rotates and bounds the log."""

    device_id: str
    fsync: str = FSYNC_INTERVAL
    fsync_interval_s: float = 0.1
    segment_bytes: int = 16 << 20
    segment_max_age_s: float | None = None
    max_bytes: int = 1 << 30
    on_full: str = "drop_oldest"
    retain_s: float = 7 * 86400.0
    preallocate: bool = True
    max_pending_bytes: int = 32 << 20
    align_bytes: int = 4096  # write whole blocks of this size while no record is due (0: off)
    zero_ahead_bytes: int = 256 << 10  # zeros written ahead in preallocated space (0: off)

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}")
        if self.max_bytes < 2 * self.segment_bytes:
            raise ValueError("max_bytes must hold at least two segments")


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """A segment as the index catalogues it. `last_seq` is `base_seq - 1` when empty."""

    base_seq: int
    last_seq: int
    first_ts_ns: int | None
    last_ts_ns: int | None
    size: int
    sealed: bool

    @property
    def name(self) -> str:
        return naming.segment_name(self.base_seq)


@dataclass(frozen=True, slots=True)
class Drop:
    """Events deleted before every consumer had them (`on_full = "drop_oldest"`)."""

    first_seq: int
    last_seq: int
    size: int
    reason: str


SYNC_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class WriterStats:
    """Counters since the writer opened, for `/metrics`; written on the committer thread."""

    start_seq: int  # appends so far = next_seq - start_seq: no counting on the append path
    bytes_written: int = 0  # frame bytes handed to pwrite (headers and padding not included)
    syncs: int = 0
    sync_seconds_sum: float = 0.0
    sync_buckets: list[int] = field(default_factory=lambda: [0] * len(SYNC_SECONDS_BUCKETS))

    def observe_sync(self, seconds: float) -> None:
        self.syncs += 1
        self.sync_seconds_sum += seconds
        i = bisect.bisect_left(SYNC_SECONDS_BUCKETS, seconds)
        if i < len(self.sync_buckets):  # slower than the last bound: only in the count
            self.sync_buckets[i] += 1


class LogHooks(Protocol):
    """What the writer tells the world; called on the committer thread, must not block long."""

    def segment_sealed(self, info: SegmentInfo) -> None: ...
    def segments_deleted(self, base_seqs: list[int]) -> None: ...
    def dropped(self, drop: Drop) -> None: ...
    def cursor_floor(self) -> int | None: ...


class NoHooks:
    """Hooks for a log with no index and no consumers."""

    def segment_sealed(self, info: SegmentInfo) -> None:
        pass

    def segments_deleted(self, base_seqs: list[int]) -> None:
        pass

    def dropped(self, drop: Drop) -> None:
        pass

    def cursor_floor(self) -> int | None:
        return None


@dataclass(slots=True)
class _Batch:
    """Framed appends waiting for the committer; all for one segment."""

    segment_base: int  # the segment these frames go to
    data: bytearray = field(default_factory=bytearray)
    first_seq: int = -1  # of the first frame that starts in `data`
    last_seq: int = -1
    first_ts: int | None = None
    last_ts: int | None = None
    opened_s: float = 0.0  # monotonic time of its first append: no frame in it is older
    lead: int = 0  # leading bytes that end a frame an earlier aligned commit began to write


@dataclass(slots=True)
class _Active:
    """The segment being appended to, as the committer sees it."""

    base_seq: int
    handle: FileHandle
    data_end: int  # bytes of header and frames on disk
    last_seq: int
    first_ts: int | None
    last_ts: int | None
    sealed: bool = False
    zeroed_end: int = 0  # bytes up to which the file's blocks are written (data or zeros)


class LogWriter:
    """Appends framed payloads to the newest segment of a log directory.

    Construct it through `pilog.log.repair.open_log`, which recovers the directory first.
    """

    def __init__(
        self,
        log_dir: Path,
        quarantine_dir: Path,
        options: LogOptions,
        fs: FileSystem,
        epoch: bytes,
        active: _Active,
        sealed: list[SealedSegment],
        hooks: LogHooks | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.log_dir = log_dir
        self.quarantine_dir = quarantine_dir
        self.options = options
        self.epoch = epoch
        self._fs = fs
        self._hooks: LogHooks = hooks or NoHooks()
        self._wall_ns = wall_ns
        self._header_bytes = SegmentHeader(epoch, 0, 0, options.device_id).size

        self._lock = threading.Lock()
        self._io_lock = threading.Lock()
        self._durable_cv = threading.Condition(threading.Lock())
        self._wake = threading.Event()
        self._listeners: list[Callable[[int], None]] = []

        # Appender state, under _lock.
        self._next_seq = active.last_seq + 1
        self._batches: list[_Batch] = []
        self._pending_bytes = 0
        self._seg_base = active.base_seq
        self._seg_bytes = active.data_end
        # A reopened segment is as old as its first record: a writer restarted more often
        # than `segment_max_age` must still seal it (a wall clock stepped back counts as 0).
        age_ns = wall_ns() - active.first_ts if active.first_ts is not None else 0
        self._seg_started = time.monotonic() - max(age_ns, 0) / 1e9
        self._rotate_at = options.segment_bytes  # 0: rotate with the next append
        # The batch appends go to (last of _batches), its bytes, and its latest wall time.
        self._tail: _Batch | None = None
        self._tail_data: bytearray | None = None
        self._tail_ts: int | None = None
        self._full = False
        self._failed: LogIOError | None = None
        self._closed = False  # appends refused
        self._stopping = False  # close() has begun: the committer thread ends
        self._refusing = False
        self._max_pending_bytes = options.max_pending_bytes
        self._max_age_s = options.segment_max_age_s
        self._always = options.fsync == FSYNC_ALWAYS
        self._aligned = (
            options.fsync == FSYNC_INTERVAL
            and options.align_bytes > 0
            and options.fsync_interval_s >= ALIGN_MIN_INTERVAL_S
        )

        # Committer state, under _io_lock.
        self._active = active
        self._sealed = sealed
        self._durable_seq = active.last_seq
        self._io_error: LogIOError | None = None
        self.stats = WriterStats(start_seq=active.last_seq + 1)
        self._next_retention_check = 0.0
        self._sync_bytes_avg = 0.0  # running average of bytes per commit, for zero-ahead

        self._thread = threading.Thread(target=self._run, name="pilog-log-commit", daemon=True)
        self._thread.start()

    # -- appending -----------------------------------------------------------------------

    def append(self, payload: bytes, ts_ns: int | None = None) -> int:
        """Frame `payload` as the next record and return its seq; durable later.

        Raises RecordTooLargeError, before anything is written, for a payload over the frame
        limit (MAX_PAYLOAD_BYTES); LogFullError when the record cannot be taken
        (`on_full = "block"` and no room, or the disk has stalled and the in-memory batch is
        at its bound); LogIOError when the writer failed for good.
        """
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise RecordTooLargeError(len(payload), MAX_PAYLOAD_BYTES)
        with self._lock:
            if self._refusing or self._pending_bytes > self._max_pending_bytes:
                raise self._refusal()
            seq = self._frame(payload, ts_ns)
        if self._always:
            self._wake.set()
        return seq

    def append_many(self, payloads: Iterable[bytes], ts_ns: int | None = None) -> int:
        """Append each payload as `append` does, under one lock; return the last seq.

        All or nothing: refused as a whole, before any is taken (RecordTooLargeError names
        the first payload over the limit). Returns `next_seq - 1` when `payloads` is empty.
        """
        payloads = payloads if isinstance(payloads, list | tuple) else list(payloads)
        if payloads and max(map(len, payloads)) > MAX_PAYLOAD_BYTES:
            i = next(i for i, p in enumerate(payloads) if len(p) > MAX_PAYLOAD_BYTES)
            raise RecordTooLargeError(len(payloads[i]), MAX_PAYLOAD_BYTES, index=i)
        with self._lock:
            if self._refusing or self._pending_bytes > self._max_pending_bytes:
                raise self._refusal()
            seq = self._next_seq - 1
            for payload in payloads:
                seq = self._frame(payload, ts_ns)
        if self._always:
            self._wake.set()
        return seq

    def _frame(self, payload: bytes, ts_ns: int | None) -> int:
        """Stamp, frame and buffer one payload (under _lock); the hot path of every reading."""
        seq = self._next_seq
        size = FRAME_HEADER_BYTES + len(payload)
        if seq > self._seg_base and (
            self._seg_bytes + size > self._rotate_at
            or (self._max_age_s is not None and self._segment_too_old(self._max_age_s))
        ):
            self._start_segment(seq)
        data = self._tail_data
        if data is None:
            data = self._new_tail(seq, ts_ns)
        data += encode_frame(seq, payload)
        if ts_ns is not None:
            self._tail_ts = ts_ns
        self._seg_bytes += size
        self._pending_bytes += size
        self._next_seq = seq + 1
        return seq

    def _refusal(self) -> Exception:
        if self._closed:
            return LogFullError("log is closed")
        if self._failed is not None:
            return self._failed
        if self._full:
            return LogFullError("log is full and on_full = 'block'")
        return LogFullError(
            f"{self._pending_bytes} bytes wait for the disk ({self._io_error or 'busy'})"
        )

    def _start_segment(self, seq: int) -> None:
        """Send appends from `seq` on to a new segment (under _lock)."""
        self._close_tail()
        self._seg_base = seq
        self._seg_bytes = self._header_bytes
        self._seg_started = time.monotonic()
        self._rotate_at = self.options.segment_bytes

    def _new_tail(self, seq: int, ts_ns: int | None) -> bytearray:
        """Open the batch appends go to until the next rotation or commit (under _lock)."""
        batch = _Batch(self._seg_base, first_seq=seq, first_ts=ts_ns, opened_s=time.monotonic())
        self._batches.append(batch)
        self._tail = batch
        self._tail_data = batch.data
        self._tail_ts = ts_ns
        return batch.data

    def _close_tail(self) -> None:
        """Fill in what appends leave out of the tail batch: its last seq and time."""
        if self._tail is not None:
            self._tail.last_seq = self._next_seq - 1
            self._tail.last_ts = self._tail_ts
            self._tail = self._tail_data = None

    def _set_refusing(self) -> None:
        """Recompute the append hot path's one flag (under _lock)."""
        self._refusing = self._closed or self._failed is not None or self._full

    def _segment_too_old(self, max_age_s: float) -> bool:
        return time.monotonic() - self._seg_started > max_age_s

    def rotate(self) -> None:
        """Start a new segment with the next append (no-op on an empty segment)."""
        with self._lock:
            # Remembered on an empty segment, the request would cut it after its first frame.
            if self._next_seq > self._seg_base:
                self._rotate_at = 0

    # -- durability ----------------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The seq the next append will get."""
        with self._lock:
            return self._next_seq

    @property
    def durable_seq(self) -> int:
        """Highest seq that is durable (-1 before the first, `base - 1` of an empty log)."""
        with self._durable_cv:
            return self._durable_seq

    @property
    def io_error(self) -> LogIOError | None:
        """The disk error the writer is retrying past, if any."""
        return self._failed or self._io_error

    @property
    def full(self) -> bool:
        return self._full

    @property
    def refusing(self) -> bool:
        """Appends are refused now: full under `block`, failed, or too much waits for the disk."""
        return self._refusing or self._pending_bytes > self._max_pending_bytes

    @property
    def backlog_fraction(self) -> float:
        """Bytes waiting for the disk, as a fraction of the bound at which appends are refused."""
        return self._pending_bytes / self._max_pending_bytes if self._max_pending_bytes else 1.0

    def add_durable_listener(self, listener: Callable[[int], None]) -> None:
        """Call `listener(durable_seq)` on the committer thread whenever it rises."""
        self._listeners.append(listener)

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Block until `seq` is durable; False on timeout or when the writer failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._always and self._durable_seq < seq and not self._stopping:
            # Commit on this thread rather than wake the committer and wait for it: one
            # thread hand-off less per durable append (LevelDB's writers do the same).
            self._commit(force_sync=False)
        with self._durable_cv:
            while self._durable_seq < seq:
                if self._failed is not None or self._closed:
                    return self._durable_seq >= seq
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._durable_cv.wait(remaining)
            return True

    def sync(self) -> int:
        """Write and fdatasync everything appended so far; return the durable seq.

        Raises LogIOError when the disk refuses (the batch stays queued for retry).
        """
        self._commit(force_sync=True)
        with self._io_lock:
            if self._io_error is not None:
                raise self._io_error
        if self._failed is not None:
            raise self._failed
        return self.durable_seq

    def close(self) -> None:
        """Commit and fdatasync what is pending (whatever the policy), then stop.

        Commits made here may drop segments (`on_full = "drop_oldest"`); the Gap events the
        hooks append for them are taken and committed before appends are refused.
        """
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._wake.set()
        self._thread.join()
        try:
            for _ in range(CLOSE_COMMIT_ROUNDS):
                if self._failed is not None:
                    break
                self._commit(force_sync=True)
                if self._io_error is not None or self.durable_seq >= self.next_seq - 1:
                    break
            with self._lock:
                self._closed = True
                self._set_refusing()
            if self._failed is None:
                self._commit(force_sync=True)
        finally:
            with self._io_lock:
                if not self._active.sealed:
                    self._active.handle.close()
            with self._durable_cv:
                self._durable_cv.notify_all()
        if self._io_error is not None:
            raise self._io_error

    # -- the committer -------------------------------------------------------------------

    def _run(self) -> None:
        interval = self.options.fsync_interval_s
        always = self.options.fsync == FSYNC_ALWAYS
        tick = ALIGN_TICK_S if self._aligned else interval
        while not self._stopping:
            if self._io_error is not None or self._full:
                self._wake.wait(RETRY_AFTER_IO_ERROR_S)
            elif always:
                self._wake.wait()
            else:
                self._wake.wait(tick)
            self._wake.clear()
            if self._stopping or self._failed is not None:
                return
            if self._aligned and self._io_error is None and not self._full:
                self._commit_when_due(interval - tick)
            else:
                self._commit(force_sync=False)

    def _commit_when_due(self, max_wait_s: float) -> None:
        """Commit once the oldest waiting record has waited `max_wait_s`, block-aligned."""
        with self._lock:
            # Batches of at most one tick: a batch's open time bounds the age of its frames.
            self._close_tail()
            oldest = self._batches[0].opened_s if self._batches else None
        if oldest is not None and time.monotonic() - oldest >= max_wait_s:
            self._commit(force_sync=False, align=True)
        elif time.monotonic() >= self._next_retention_check:
            with self._io_lock:
                self._maybe_apply_retention()

    def _commit(self, force_sync: bool, align: bool = False) -> None:
        with self._io_lock:
            if self._failed is not None:
                return
            with self._lock:
                self._close_tail()
                batches, self._batches = self._batches, []
                if align:
                    batches, rest = self._split_at_block(batches)
                    self._batches[:0] = rest
            try:
                durable = self._write_batches(batches, force_sync)
                done = len(batches)
            except _Retry as retry:
                self._requeue(batches[retry.done :])
                durable, done = retry.durable, retry.done
            except LogIOError as fatal:
                # fdatasync failed: the kernel may have dropped the dirty pages, so nothing
                # unsynced can be trusted. Stop; the next open recovers from what is on disk.
                log.error("log writer stopped: %s", fatal)
                with self._lock:
                    self._failed = fatal
                    self._set_refusing()
                with self._durable_cv:
                    self._durable_cv.notify_all()
                return
            # Bytes stay counted until written, so a stalled disk keeps appends refused.
            written = sum(len(b.data) for b in batches[:done])
            w = _ZERO_AHEAD_WEIGHT
            self._sync_bytes_avg = (1 - w) * self._sync_bytes_avg + w * written
            self.stats.bytes_written += written
            with self._lock:
                self._pending_bytes -= written
            self._publish(durable)
            self._maybe_apply_retention()

    def _write_batches(self, batches: list[_Batch], force_sync: bool) -> int:
        """Write `batches` in order; return the new durable seq. Raise _Retry or LogIOError."""
        durable = self._durable_seq
        sync = force_sync or self.options.fsync != FSYNC_NEVER
        active = self._active
        for i, batch in enumerate(batches):
            op, path = "write", self._active_path()
            try:
                if batch.segment_base != active.base_seq:
                    op = "seal"
                    durable = self._seal_active()
                    if not self._make_room():
                        raise _Retry(i, durable)
                    op, path = "create", self.log_dir / naming.segment_name(batch.segment_base)
                    active = self._open_segment(batch.segment_base)
                    op = "write"
                active.handle.pwrite(batch.data, active.data_end)
            except OSError as e:
                self._note_io_error(op, path, e)
                if e.errno in _RETRYABLE_WRITE_ERRNOS:
                    raise _Retry(i, durable) from e
                raise LogIOError(op, str(path), e) from e
            active.data_end += len(batch.data)
            active.last_seq = batch.last_seq
            if batch.first_ts is not None and active.first_ts is None:
                active.first_ts = batch.first_ts
            if batch.last_ts is not None:
                active.last_ts = batch.last_ts
        if sync and not active.sealed and self._aligned:
            self._zero_ahead(active, active.data_end)
        # Also covers frames written by an earlier commit that stopped before its fdatasync.
        if active.last_seq > durable and not active.sealed:
            if sync:
                self._datasync(active.handle)
            durable = active.last_seq
        if self._io_error is not None and batches:
            log.warning("log writer recovered: writing again after %s", self._io_error)
            self._io_error = None
        return durable

    def _split_at_block(self, batches: list[_Batch]) -> tuple[list[_Batch], list[_Batch]]:
        """(to write now, to keep): write up to the last whole block, if that covers the
        oldest batch; else everything. Under _lock and _io_lock."""
        active = self._active
        if not batches or active.sealed or self.options.align_bytes <= 0:
            return batches, []
        if any(b.segment_base != active.base_seq for b in batches):
            return batches, []  # a rotation: the segment is sealed whole
        start = active.data_end
        total = sum(len(b.data) for b in batches)
        align = self.options.align_bytes
        boundary = (start + total) // align * align
        # Large commits, a boundary short of the due batch, or data ending on one: all of it.
        if (
            total > ALIGN_MAX_BYTES
            or boundary < start + len(batches[0].data)
            or boundary == start + total
        ):
            return batches, []
        now: list[_Batch] = []
        offset = start
        for i, batch in enumerate(batches):
            if offset + len(batch.data) <= boundary:
                now.append(batch)
                offset += len(batch.data)
                continue
            if offset == boundary:  # the boundary falls between two batches
                return now, batches[i:]
            head, tail = _split_batch(batch, boundary - offset, now[-1].last_seq)
            return [*now, head], [tail, *batches[i + 1 :]]
        raise AssertionError("boundary past the data")  # boundary < start + total

    def _zero_ahead(self, active: _Active, end: int) -> None:
        """Write zeros after `end` in preallocated space while syncs are small (see
        ZERO_AHEAD_BELOW_BYTES); a failure only stops zeroing this segment."""
        chunk = self.options.zero_ahead_bytes
        if (
            not chunk
            or not self.options.preallocate
            or active.zeroed_end >= end + self.options.align_bytes
            or self._sync_bytes_avg >= ZERO_AHEAD_BELOW_BYTES
        ):
            return
        start = max(active.zeroed_end, end)
        stop = min(start + chunk, self.options.segment_bytes)
        if stop <= start:
            return
        try:
            active.handle.pwrite(bytes(stop - start), start)
        except OSError as e:
            log.debug("zero-ahead stopped in %s: %s", self._active_path().name, e)
            active.zeroed_end = self.options.segment_bytes  # not again in this segment
            return
        active.zeroed_end = stop

    def _requeue(self, batches: list[_Batch]) -> None:
        if not batches:
            return
        with self._lock:
            self._batches[:0] = batches

    def _publish(self, durable: int) -> None:
        with self._durable_cv:
            if durable <= self._durable_seq:
                return
            self._durable_seq = durable
            self._durable_cv.notify_all()
        for listener in self._listeners:
            try:
                listener(durable)
            except Exception:
                # As with hooks: raised on the committer thread, it would end all commits.
                log.exception("durable listener %r failed", listener)

    def _datasync(self, handle: FileHandle) -> None:
        started = time.perf_counter()
        try:
            handle.datasync()
            self.stats.observe_sync(time.perf_counter() - started)
        except OSError as e:
            raise LogIOError("fdatasync", str(self._active_path()), e) from e

    def _note_io_error(self, op: str, path: Path, e: OSError) -> None:
        err = LogIOError(op, str(path), e)
        if self._io_error is None or str(self._io_error) != str(err):
            log.error("log writer cannot write (will retry, appends kept in memory): %s", err)
        self._io_error = err

    def _active_path(self) -> Path:
        return self.log_dir / naming.segment_name(self._active.base_seq)

    # -- segments ------------------------------------------------------------------------

    def _seal_active(self) -> int:
        """Cut the active segment to its data and report it; return the durable seq."""
        active = self._active
        if active.sealed:  # sealed by a commit that then failed to open the next segment
            return active.last_seq
        self._datasync(active.handle)
        if active.handle.size() != active.data_end:
            active.handle.truncate(active.data_end)
            self._datasync(active.handle)
        active.handle.close()
        active.sealed = True
        info = SegmentInfo(
            active.base_seq,
            active.last_seq,
            active.first_ts,
            active.last_ts,
            active.data_end,
            sealed=True,
        )
        self._sealed.append(
            SealedSegment(active.base_seq, active.last_seq, active.data_end, self._wall_ns())
        )
        self._call_hook("segment_sealed", info)
        self._publish(active.last_seq)
        return active.last_seq

    def _open_segment(self, base_seq: int) -> _Active:
        path = self.log_dir / naming.segment_name(base_seq)
        header = SegmentHeader(self.epoch, base_seq, self._wall_ns(), self.options.device_id)
        handle = create_segment(self._fs, path, header, self._prealloc_bytes())
        self._active = _Active(base_seq, handle, header.size, base_seq - 1, None, None)
        self._active.zeroed_end = header.size
        return self._active

    def _prealloc_bytes(self) -> int:
        return self.options.segment_bytes if self.options.preallocate else 0

    def _make_room(self) -> bool:
        """Delete sealed segments until a new one fits under max_bytes; False if blocked."""
        plan = plan_for_room(
            self._sealed,
            room_needed=max(self._prealloc_bytes(), self._header_bytes),
            max_bytes=self.options.max_bytes,
            active_bytes=0,
            cursor_floor=self._call_hook("cursor_floor"),
            on_full=self.options.on_full,
        )
        self._delete(plan.delete)
        for seg in plan.dropped:
            log.warning(
                "log full: dropped seq %d..%d (%d bytes) before every consumer had them",
                seg.base_seq,
                seg.last_seq,
                seg.size,
            )
            drop = Drop(seg.base_seq, seg.last_seq, seg.size, "log full (on_full = drop_oldest)")
            self._call_hook("dropped", drop)
        blocked = plan.full and self.options.on_full == ON_FULL_BLOCK
        if blocked != self._full:
            log.warning("log full, appends refused" if blocked else "log has room again")
        with self._lock:
            self._full = blocked
            self._set_refusing()
        return not blocked

    def _maybe_apply_retention(self) -> None:
        now = time.monotonic()
        if now < self._next_retention_check and not self._full:
            return
        self._next_retention_check = now + RETENTION_CHECK_INTERVAL_S
        floor = self._call_hook("cursor_floor")
        try:
            self._delete(
                plan_for_age(self._sealed, floor, int(self.options.retain_s * 1e9), self._wall_ns())
            )
        except OSError as e:
            # Retried at the next check; raised from here it would end the committer thread.
            self._note_io_error("delete", self.log_dir, e)
        if self._full:
            self._make_room_while_blocked()

    def _make_room_while_blocked(self) -> None:
        try:
            self._make_room()
        except OSError as e:
            self._note_io_error("delete", self.log_dir, e)

    def _delete(self, segments: list[SealedSegment]) -> None:
        if not segments:
            return
        for seg in segments:
            # Already gone when an earlier attempt failed further on.
            with contextlib.suppress(FileNotFoundError):
                self._fs.unlink(self.log_dir / naming.segment_name(seg.base_seq))
        self._fs.sync_dir(self.log_dir)
        gone = {s.base_seq for s in segments}
        self._sealed = [s for s in self._sealed if s.base_seq not in gone]
        self._call_hook("segments_deleted", sorted(gone))

    def _call_hook(self, name: str, *args: object) -> int | None:
        try:
            result: int | None = getattr(self._hooks, name)(*args)
            return result
        except Exception:
            log.exception("log hook %s failed", name)
            return None

    # -- inspection ----------------------------------------------------------------------

    def segments(self) -> list[SegmentInfo]:
        """Every segment on disk, the active one last."""
        with self._io_lock:
            infos = [
                SegmentInfo(s.base_seq, s.last_seq, None, None, s.size, sealed=True)
                for s in self._sealed
            ]
            a = self._active
            infos.append(
                SegmentInfo(a.base_seq, a.last_seq, a.first_ts, a.last_ts, a.data_end, False)
            )
            return infos

    def disk_bytes(self) -> int:
        """Bytes the log holds on disk, preallocated space of the active segment included."""
        with self._io_lock:
            return sum(s.size for s in self._sealed) + max(
                self._active.data_end, self._prealloc_bytes()
            )


def _split_batch(batch: _Batch, cut: int, last_before: int) -> tuple[_Batch, _Batch]:
    """`batch` as the bytes before `cut` and those after, each with the seqs it completes.

    `last_before` is the last seq complete before `batch`. Walks the frames' length fields:
    at most ALIGN_MAX_BYTES of them, once per commit.
    """
    data = batch.data
    last = batch.first_seq - 1 if batch.lead <= cut else last_before
    if batch.lead > cut:  # the cut falls inside the frame that the batch's lead completes
        lead, first = batch.lead - cut, batch.first_seq
    else:
        pos, seq = batch.lead, batch.first_seq
        while True:
            (length,) = _LENGTH.unpack_from(data, pos + 4)
            end = pos + FRAME_HEADER_BYTES + length
            if end > cut:
                break
            last, seq, pos = seq, seq + 1, end
        # The frame at `pos` straddles the cut (or starts at it: then nothing leads).
        lead, first = (end - cut, seq + 1) if pos < cut else (0, seq)
    head = _Batch(
        batch.segment_base,
        data[:cut],
        batch.first_seq,
        last,
        batch.first_ts,
        batch.last_ts if last == batch.last_seq else None,
        batch.opened_s,
        batch.lead,
    )
    tail = _Batch(
        batch.segment_base,
        data[cut:],
        first,
        batch.last_seq,
        None,
        batch.last_ts,
        batch.opened_s,  # the straddling frame is no older than this: a safe bound
        lead,
    )
    return head, tail


class _Retry(Exception):
    """The committer stopped at batch `done`; everything before it is written."""

    def __init__(self, done: int, durable: int) -> None:
        super().__init__(done)
        self.done = done
        self.durable = durable


def create_segment(fs: FileSystem, path: Path, header: SegmentHeader, prealloc: int) -> FileHandle:
    """Create a segment holding only `header`, durable in its directory before any frame."""
    try:
        handle = fs.open(path, create=True)
    except FileExistsError:
        # Left by a creation that failed before (ENOSPC); it never held a frame.
        fs.unlink(path)
        handle = fs.open(path, create=True)
    try:
        if prealloc:
            handle.allocate(prealloc)
        handle.pwrite(header.encode(), 0)
        handle.datasync()
        fs.sync_dir(path.parent)
    except OSError:
        handle.close()
        fs.unlink(path)
        raise
    return handle


def default_device_id() -> str:
    """The host name, as the design's default device id."""
    return os.uname().nodename or "pilog"
