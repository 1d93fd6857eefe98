"""Reading a log from any process: by seq, live (`tail -f`), and whole-log verification.

Readers never take the writer's lock and never write. Reader rules (docs/log-format.md):

- A segment followed by another one is sealed: its frames must run, dense in seq, from its
  header to exactly its end. Anything else raises `CorruptionError(segment, offset, reason)`.
- In the newest segment, zeros, a frame running past the end of the file or a frame failing
  its checksum mean "not written yet" (or a torn tail the writer cuts on its next open): the
  reader stops there and, when following, looks again later.
- Consecutive segments must continue each other's seqs; the oldest segments may be gone
  (retention), which a reader sees as its first seq being later than asked.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pilog.errors import CorruptionError, FormatVersionError
from pilog.log import naming
from pilog.log.format import (
    FRAME_HEADER_BYTES,
    MAX_HEADER_BYTES,
    FrameStatus,
    ScanResult,
    SegmentHeader,
    decode_header,
    is_zero,
    scan_frames,
)

READ_CHUNK_BYTES = 1 << 20  # the largest read
READ_BUDGET_BYTES = 1 << 20  # of frames per batch: what a reader holds at once
FIRST_READ_BYTES = 1 << 16
HEADER_READ_BYTES = MAX_HEADER_BYTES  # any version's header fits
FOLLOW_POLL_S = 0.2

Record = tuple[int, bytes]
Batch = list[Record]
# Told how far long work is: (bytes read, bytes to read, records read). Bytes are known up
# front (segment sizes), so a caller can tell the time left; the total grows if the log does.
Progress = Callable[[int, int, int], None]
_NO_HEADER_IN_SEALED = "sealed segment has no header (empty or zero-filled)"


class _SegmentCursor:
    """Incremental, validating reads of one segment file."""

    def __init__(self, path: Path, base_seq: int) -> None:
        self.path = path
        self.name = path.name
        self.base_seq = base_seq
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        head = os.pread(self._fd, HEADER_READ_BYTES, 0)
        if is_zero(head):
            # Created (and maybe preallocated with zeros) but its header not written yet. Only
            # the caller knows whether that is routine (newest segment) or damage (sealed one).
            os.close(self._fd)
            raise _NotYet(path)
        try:
            self.header = decode_header(head, self.name)
        except Exception:
            os.close(self._fd)
            raise
        if self.header.base_seq != base_seq:
            os.close(self._fd)
            raise CorruptionError(
                self.name, 28, f"header base seq {self.header.base_seq} disagrees with file name"
            )
        self.offset = self.header.size
        self.next_seq = base_seq
        self.status = FrameStatus.END
        self.reason = ""
        self.more = False  # the last read stopped at its byte budget, not at the data's end
        self._chunk = FIRST_READ_BYTES

    def read(self, out: list[Record], budget: int = READ_BUDGET_BYTES) -> None:
        """Append the good frames from the current offset on, about `budget` bytes of them;
        set `status` to why it stopped, and `more` when only the budget stopped it."""
        # Reads start small and double while the data lasts: a follower polling the end of
        # the newest segment reads a little, a replay of a sealed one reads large chunks. The
        # budget bounds what one call holds in memory, however large the segment.
        start = self.offset
        self.more = False
        while True:
            chunk = self._chunk
            buf = os.pread(self._fd, chunk, self.offset)
            before = len(out)
            result = scan_frames(buf, 0, self.next_seq, out)
            got = len(out) - before
            self.next_seq += got
            self.offset += result.offset
            self.status, self.reason = result.status, result.reason
            if result.status == FrameStatus.END and len(buf) == chunk:
                # The chunk ended on a frame boundary: more may follow.
                self._chunk = min(chunk * 2, READ_CHUNK_BYTES)
                if self.offset - start >= budget:
                    self.more = True
                    return
                continue
            if _cut_by_chunk(result, len(buf), chunk):
                if got == 0:
                    self._chunk = chunk * 2  # one frame larger than the chunk
                if self.offset - start >= budget:
                    self.more = True
                    return
                continue
            self._chunk = FIRST_READ_BYTES  # at the end of the data: back to small polls
            return

    def check_sealed_end(self) -> None:
        """Raise unless the scan stopped exactly at the end of the file."""
        size = os.fstat(self._fd).st_size
        if self.status == FrameStatus.END and self.offset == size:
            return
        reason = self.reason or {
            FrameStatus.ZERO: "zero-filled space in a sealed segment",
            FrameStatus.END: "sealed segment ends early",
        }.get(self.status, self.status)
        raise CorruptionError(self.name, self.offset, reason)

    def close(self) -> None:
        os.close(self._fd)


def _cut_by_chunk(result: ScanResult, buf_len: int, chunk: int) -> bool:
    """True when a scan stopped only because the read chunk ended inside a frame."""
    if buf_len != chunk:
        return False
    # Fewer than FRAME_HEADER_BYTES left that happen to be zero (a checksum's low byte can
    # be) look like preallocated space; only the next read can tell.
    return result.status == FrameStatus.PARTIAL or (
        result.status == FrameStatus.ZERO and buf_len - result.offset < FRAME_HEADER_BYTES
    )


class _NotYet(Exception):
    pass


def _open_sealed(path: Path, base: int) -> _SegmentCursor:
    """Open a segment known to have a successor, so its header must be there."""
    try:
        return _SegmentCursor(path, base)
    except _NotYet:
        # The writer makes a header durable before it creates the next segment, so a sealed
        # segment without one is damage, not "not written yet".
        raise CorruptionError(path.name, 0, _NO_HEADER_IN_SEALED) from None


class LogReader:
    """Reads the segments under `log_dir` as they are on disk now (and later, when following)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def segments(self) -> list[tuple[int, Path]]:
        return naming.list_segments(self.log_dir)

    def read_from(
        self,
        seq: int = 0,
        *,
        follow: bool = False,
        stop: threading.Event | None = None,
        poll_s: float = FOLLOW_POLL_S,
    ) -> Iterator[Record]:
        """Yield (seq, payload) for every record with seq >= `seq`, in order.

        Without `follow`, ends at the current end of the newest segment. With `follow`, waits
        for more until `stop` is set. Raises CorruptionError on damage in a sealed segment.
        """
        for batch in self.read_batches(seq, follow=follow, stop=stop, poll_s=poll_s):
            yield from batch

    def read_batches(
        self,
        seq: int = 0,
        *,
        follow: bool = False,
        stop: threading.Event | None = None,
        poll_s: float = FOLLOW_POLL_S,
        wait: Callable[[int, float], object] | None = None,
        yield_idle: bool = False,
        progress: Progress | None = None,
    ) -> Iterator[Batch]:
        """As `read_from`, a non-empty list of records at a time (one read's worth).

        When following, `wait(next_seq, poll_s)` replaces sleeping `poll_s` at the end of the
        log (the writer's process waits on its durable watermark instead of polling files),
        and `yield_idle` yields an empty batch after each such wait: a tick for consumers
        that act on time (a batch's linger). `progress` is told after each batch.
        """
        segments = self.segments()
        if not segments:
            if not follow:
                return
            segments = self._wait_for_segments(stop, poll_s)
            if not segments:
                return
        bases = [b for b, _ in segments]
        i = max(bisect.bisect_right(bases, seq) - 1, 0)
        nxt: tuple[int, Path] | None = segments[i]
        meter = _Meter(progress, segments[i:]) if progress is not None else None
        while nxt is not None:
            cursor = self._open(nxt[1], nxt[0], stop, poll_s, follow)
            if cursor is None:
                return
            try:
                drain = self._drain(cursor, seq, follow, stop, poll_s, wait, yield_idle)
                if meter is None:
                    nxt = yield from drain
                else:
                    nxt = yield from meter.metered(drain, cursor)
            finally:
                cursor.close()

    def _drain(
        self,
        cursor: _SegmentCursor,
        seq: int,
        follow: bool,
        stop: threading.Event | None,
        poll_s: float,
        wait: Callable[[int, float], object] | None = None,
        yield_idle: bool = False,
    ) -> Generator[Batch, None, tuple[int, Path] | None]:
        """Yield the segment's records; return its successor, or None at the end of reading."""
        nxt: tuple[int, Path] | None = None  # the successor, once seen: this one is sealed
        idle = False
        while True:
            if idle and yield_idle:
                yield []
            out: Batch = []
            first = cursor.next_seq
            cursor.read(out)
            if out and first < seq:
                out = out[seq - first :]
            if out:
                yield out
            if cursor.more:
                continue
            idle = not out
            if nxt is not None:
                break
            nxt = self._next_segment(cursor)
            if nxt is not None:
                # A successor exists, so this segment is sealed; it may have grown between our
                # read and its sealing, so one more read sees the rest before the end check.
                continue
            if not follow or (stop is not None and stop.is_set()):
                return None
            if wait is not None:
                wait(cursor.next_seq, poll_s)
            else:
                (stop or threading.Event()).wait(poll_s)
        cursor.check_sealed_end()
        base, path = nxt
        if base != cursor.next_seq:
            raise CorruptionError(
                path.name,
                0,
                f"segment starts at seq {base}, previous one ended at {cursor.next_seq - 1}",
            )
        return nxt

    def _next_segment(self, cursor: _SegmentCursor) -> tuple[int, Path] | None:
        """The segment after `cursor`'s, if one exists yet."""
        # One stat in the usual case, where the successor starts at our next seq; a listing
        # per segment would make long reads quadratic in the number of segments.
        expected = self.log_dir / naming.segment_name(cursor.next_seq)
        if cursor.next_seq > cursor.base_seq and expected.exists():
            return cursor.next_seq, expected
        segments = self.segments()
        bases = [b for b, _ in segments]
        i = bisect.bisect_right(bases, cursor.base_seq)
        return segments[i] if i < len(segments) else None

    def _open(
        self,
        path: Path,
        base: int,
        stop: threading.Event | None,
        poll_s: float,
        follow: bool,
    ) -> _SegmentCursor | None:
        while True:
            try:
                return _SegmentCursor(path, base)
            except _NotYet:
                if self._has_successor(base):
                    # Sealed since we read its header, or damaged: a second read tells.
                    return _open_sealed(path, base)
                if not follow or (stop is not None and stop.is_set()):
                    return None
            except FileNotFoundError:
                # Deleted by retention while we were behind: restart at the oldest segment.
                segments = self.segments()
                later = [(b, p) for b, p in segments if b > base]
                if not later and not segments:
                    return None
                base, path = (later or segments)[0]
                continue
            (stop or threading.Event()).wait(poll_s)

    def _has_successor(self, base: int) -> bool:
        return any(b > base for b, _ in self.segments())

    def _wait_for_segments(
        self, stop: threading.Event | None, poll_s: float
    ) -> list[tuple[int, Path]]:
        while stop is None or not stop.is_set():
            segments = self.segments()
            if segments:
                return segments
            (stop or threading.Event()).wait(poll_s)
        return []

    def last_seq(self) -> int | None:
        """Seq of the last readable record, or None for an empty log."""
        segments = self.segments()
        for base, path in reversed(segments):
            try:
                cursor = _SegmentCursor(path, base)
            except (_NotYet, FileNotFoundError):
                continue
            try:
                cursor.read([])
                while cursor.more:
                    cursor.read([])
                if cursor.next_seq > base:
                    return cursor.next_seq - 1
            finally:
                cursor.close()
        return None

    def verify(self, progress: Progress | None = None) -> VerifyReport:
        """Check every header and frame of every segment; collect what is wrong.

        Goes on after a damaged segment: the next one starts where its name says, so only a
        discontinuity between two intact segments is reported, never the segment after damage.
        """
        report = VerifyReport()
        segments = self.segments()
        meter = _Meter(progress, segments) if progress is not None else None
        expect: int | None = None  # where the previous segment, if intact, says the next starts
        for i, (base, path) in enumerate(segments):
            newest = i == len(segments) - 1
            if meter is not None and i:
                # Counted here, so a segment skipped for a bad header counts as read too.
                meter.segment_done(segments[i - 1][1])
            try:
                cursor = _SegmentCursor(path, base)
            except _NotYet:
                if not newest:
                    report.errors.append(CorruptionError(path.name, 0, _NO_HEADER_IN_SEALED))
                else:
                    report.notes.append(f"{path.name}: header not written yet")
                expect = None
                continue
            except (CorruptionError, FormatVersionError) as e:
                report.errors.append(e)
                expect = None
                continue
            except OSError as e:
                report.errors.append(CorruptionError(path.name, 0, f"cannot read: {e}"))
                expect = None
                continue
            try:
                intact = self._verify_segment(cursor, report, newest, expect, meter)
            finally:
                cursor.close()
            expect = cursor.next_seq if intact else None
        if meter is not None and segments:
            meter.segment_done(segments[-1][1])
        return report

    @staticmethod
    def _verify_segment(
        cursor: _SegmentCursor,
        report: VerifyReport,
        newest: bool,
        expect: int | None,
        meter: _Meter | None = None,
    ) -> bool:
        """Check one segment whose header is good; True when its frames are intact."""
        name, base, hdr = cursor.name, cursor.base_seq, cursor.header
        report.segments += 1
        if report.header is None:
            report.header = hdr
        elif hdr.epoch != report.header.epoch:
            report.errors.append(CorruptionError(name, 12, f"epoch {hdr.epoch.hex()} differs"))
        if expect is not None and base != expect:
            report.errors.append(
                CorruptionError(name, 0, f"starts at seq {base}, expected {expect}")
            )
        errors = len(report.errors)
        while True:
            out: list[Record] = []
            cursor.read(out)
            report.records += len(out)
            report.bytes += sum(len(p) for _, p in out)
            if meter is not None:
                meter.tell(cursor.offset, len(out))
            if not cursor.more:
                break
        if not newest:
            try:
                cursor.check_sealed_end()
            except CorruptionError as e:
                report.errors.append(e)
        elif cursor.status in (FrameStatus.PARTIAL, FrameStatus.BAD):
            report.notes.append(
                f"{name}: torn tail at offset {cursor.offset} ({cursor.reason}); "
                "the writer cuts it when it next opens the log"
            )
        if cursor.next_seq > base:
            if report.first_seq is None:
                report.first_seq = base
            report.last_seq = cursor.next_seq - 1
        return len(report.errors) == errors


class _Meter:
    """Bytes and records read so far of a list of segments, told to a `Progress`."""

    def __init__(self, progress: Progress, segments: list[tuple[int, Path]]) -> None:
        self._progress = progress
        self._total = sum(_size(p) for _, p in segments)
        self._before = 0  # bytes of the segments finished
        self._records = 0
        progress(0, self._total, 0)  # the total before the first read: time left from the start

    def tell(self, offset: int, records: int) -> None:
        """`records` more were read, up to `offset` of the current segment."""
        self._records += records
        done = self._before + offset
        self._total = max(self._total, done)  # the log grew while we read it
        self._progress(done, self._total, self._records)

    def segment_done(self, path: Path) -> None:
        self._before += _size(path)
        self._total = max(self._total, self._before)
        self._progress(self._before, self._total, self._records)

    def metered(
        self, drain: Generator[Batch, None, tuple[int, Path] | None], cursor: _SegmentCursor
    ) -> Generator[Batch, None, tuple[int, Path] | None]:
        """`drain`'s batches, telling after each one; its result once the segment is read."""
        try:
            while True:
                try:
                    batch = next(drain)
                except StopIteration as end:
                    successor: tuple[int, Path] | None = end.value
                    if successor is not None:
                        self._before += cursor.offset
                    return successor
                self.tell(cursor.offset, len(batch))
                yield batch
        finally:
            drain.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # retention deleted it meanwhile
        return 0


@dataclass(slots=True)
class VerifyReport:
    """What `LogReader.verify` found."""

    segments: int = 0
    records: int = 0
    bytes: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    header: SegmentHeader | None = None
    errors: list[CorruptionError | FormatVersionError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors
