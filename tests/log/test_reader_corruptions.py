"""A table of named corruptions: what the reader returns and raises, what `open_log` cuts.

In the manner of Prometheus' `TestWALRepair_ReadingError`. Every case starts from the same log
of two hand-written segments, a sealed one (seqs 0-4) and the newest one (seqs 5-9), damages
one of them, and checks (a) the records a `LogReader` returns before it stops, the error type,
segment and offset it stops with, and `verify()` agreeing; (b) what opening the log for writing
does: raise, leave it alone, or cut the newest segment's tail into `quarantine/` and report it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from logfiles import (
    SegmentFile,
    header,
    options,
    payload,
    read_all,
    write_segment,
)

from pilog.errors import CorruptionError, FormatVersionError, LogError
from pilog.log import naming
from pilog.log.format import FRAME_HEADER_BYTES, VERSION_OFFSET, encode_frame
from pilog.log.reader import READ_CHUNK_BYTES, LogReader
from pilog.log.repair import open_log

SIZES = [0, 10, 24, 100, 7, 30, 1, 24, 50, 40]  # payload size of each seq; 0 is legal
PAYLOADS = [payload(seq, size) for seq, size in enumerate(SIZES)]
GARBAGE = b"\xde\xad\xbe\xef" * 8


@dataclass(frozen=True)
class Log:
    """The two segments every case starts from."""

    sealed: SegmentFile
    newest: SegmentFile

    @property
    def log_dir(self) -> Path:
        return self.sealed.path.parent


def make_log(log_dir: Path) -> Log:
    return Log(write_segment(log_dir, 0, PAYLOADS[:5]), write_segment(log_dir, 5, PAYLOADS[5:]))


# -- damage ---------------------------------------------------------------------------------


def patch(path: Path, offset: int, data: bytes) -> None:
    buf = bytearray(path.read_bytes())
    buf[offset : offset + len(data)] = data
    path.write_bytes(bytes(buf))


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def append(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


def flip_payload_byte(seg: SegmentFile, i: int) -> None:
    offset = seg.offsets[i] + FRAME_HEADER_BYTES
    patch(seg.path, offset, bytes([seg.path.read_bytes()[offset] ^ 0x01]))


def set_length(seg: SegmentFile, i: int, length: int) -> None:
    patch(seg.path, seg.offsets[i] + 4, length.to_bytes(4, "little"))


def reframe(seg: SegmentFile, i: int, *, seq: int | None = None, frame_type: int = 1) -> None:
    """Re-encode frame `i` with a valid checksum but another seq or type."""
    frame = encode_frame(seg.base + i if seq is None else seq, PAYLOADS[seg.base + i], frame_type)
    patch(seg.path, seg.offsets[i], frame)


def with_header(seg: SegmentFile, data: bytes) -> None:
    patch(seg.path, 0, data)


def bad_header_checksum(seg: SegmentFile) -> None:
    # A byte of the device id: the header still parses, only its checksum disagrees.
    offset = seg.header_size - 5
    patch(seg.path, offset, bytes([seg.path.read_bytes()[offset] ^ 0x20]))


def newest_at_base_6(log: Log) -> None:
    log.newest.path.unlink()
    write_segment(log.log_dir, 6, PAYLOADS[5:])


# -- the table ------------------------------------------------------------------------------

Where = Callable[[Log], tuple[str, int]]


def at(which: str, offset: Callable[[SegmentFile], int]) -> Where:
    """The segment name and offset an error must carry."""
    return lambda log: (getattr(log, which).path.name, offset(getattr(log, which)))


@dataclass(frozen=True)
class Case:
    damage: Callable[[Log], object]
    records: int  # seqs 0..records-1 come back before the reader stops
    error: type[LogError] | None = None
    where: Where | None = None  # segment and offset of a CorruptionError
    reason: str = ""
    # Opening for writing: raises `open_error`, or cuts the newest segment at `cut`
    # (None: no repair) and continues at `next_seq`.
    open_error: type[LogError] | None = None
    cut: Callable[[SegmentFile], int] | None = None
    cut_reason: str = ""
    frames_after_damage: int = 0
    header_cut: bool = False  # the newest segment had no valid header: it is removed whole
    next_seq: int = 10
    version: int = 2  # of a FormatVersionError


CASES = {
    # Header of the newest segment
    "torn-header-in-newest": Case(
        lambda log: truncate(log.newest.path, 20),
        records=5,
        error=CorruptionError,
        where=at("newest", lambda s: 0),
        reason="header truncated",
        cut=lambda s: 0,
        cut_reason="header truncated",
        header_cut=True,
        next_seq=5,
    ),
    "unwritten-preallocated-header-in-newest": Case(
        lambda log: log.newest.path.write_bytes(bytes(4096)),
        records=5,
        cut=lambda s: 0,
        cut_reason="bad magic",
        header_cut=True,
        next_seq=5,
    ),
    # A power cut while the header was written into preallocated zeros: not short, but torn.
    "torn-header-in-preallocated-newest": Case(
        lambda log: log.newest.path.write_bytes(header(5).encode()[:8] + bytes(4096)),
        records=5,
        error=CorruptionError,
        where=at("newest", lambda s: 10),
        reason="header length 0 out of range",
        cut=lambda s: 0,
        cut_reason="header length 0 out of range",
        header_cut=True,
        next_seq=5,
    ),
    "garbled-header-in-preallocated-newest": Case(
        lambda log: log.newest.path.write_bytes(GARBAGE + bytes(4096)),
        records=5,
        error=CorruptionError,
        where=at("newest", lambda s: 0),
        reason="bad magic",
        cut=lambda s: 0,
        cut_reason="bad magic",
        header_cut=True,
        next_seq=5,
    ),
    "bad-header-checksum-in-newest-without-frames": Case(
        lambda log: log.newest.path.write_bytes(header(5).encode()[:-1] + b"\xff" + bytes(99)),
        records=5,
        error=CorruptionError,
        where=at("newest", lambda s: s.header_size - 4),
        reason="header checksum mismatch",
        cut=lambda s: 0,
        cut_reason="header checksum mismatch",
        header_cut=True,
        next_seq=5,
    ),
    "empty-newest-of-a-later-version": Case(
        lambda log: log.newest.path.write_bytes(header(5, version=2).encode() + bytes(4096)),
        records=5,
        error=FormatVersionError,
        open_error=FormatVersionError,
    ),
    "bad-magic-in-newest": Case(
        lambda log: with_header(log.newest, b"NOTASEG!"),
        records=5,
        error=CorruptionError,
        where=at("newest", lambda s: 0),
        reason="bad magic",
        open_error=CorruptionError,
    ),
    "unknown-version-in-newest": Case(
        lambda log: with_header(log.newest, header(5, version=2).encode()),
        records=5,
        error=FormatVersionError,
        open_error=FormatVersionError,
    ),
    # The checksum is checked before the version: a flipped version byte is damage, which
    # `pilog repair` rebuilds, not "a newer format, upgrade pilog".
    "damaged-version-byte-in-newest": Case(
        lambda log: patch(log.newest.path, VERSION_OFFSET, b"\x03"),
        records=5,
        error=CorruptionError,
        where=at("newest", lambda s: s.header_size - 4),
        reason="header checksum mismatch",
        open_error=CorruptionError,
    ),
    "bad-header-checksum-in-newest": Case(
        lambda log: bad_header_checksum(log.newest),
        records=5,
        error=CorruptionError,
        where=at("newest", lambda s: s.header_size - 4),
        reason="header checksum mismatch",
        open_error=CorruptionError,
    ),
    # Frames of the newest segment: a torn tail, cut on open
    "torn-frame-header-in-newest": Case(
        lambda log: truncate(log.newest.path, log.newest.offsets[4] + 5),
        records=9,
        cut=lambda s: s.offsets[4],
        cut_reason="frame header runs past end",
        next_seq=9,
    ),
    "torn-payload-in-newest": Case(
        lambda log: truncate(log.newest.path, log.newest.offsets[4] + FRAME_HEADER_BYTES + 3),
        records=9,
        cut=lambda s: s.offsets[4],
        cut_reason="frame payload runs past end",
        next_seq=9,
    ),
    "bad-checksum-mid-newest": Case(
        lambda log: flip_payload_byte(log.newest, 2),
        records=7,
        cut=lambda s: s.offsets[2],
        cut_reason="frame checksum mismatch",
        frames_after_damage=2,
        next_seq=7,
    ),
    "bad-length-in-newest": Case(
        lambda log: set_length(log.newest, 2, 0xFFFF_FFFF),
        records=7,
        cut=lambda s: s.offsets[2],
        cut_reason="frame length 4294967295 too large",
        frames_after_damage=2,
        next_seq=7,
    ),
    "unknown-frame-type-in-newest": Case(
        lambda log: reframe(log.newest, 2, frame_type=9),
        records=7,
        cut=lambda s: s.offsets[2],
        cut_reason="unknown frame type 9",
        frames_after_damage=2,
        next_seq=7,
    ),
    "zero-filled-tail-in-newest": Case(
        lambda log: append(log.newest.path, bytes(1000)),
        records=10,
    ),
    "garbage-after-tail-in-newest": Case(
        lambda log: append(log.newest.path, GARBAGE),
        records=10,
        cut=lambda s: s.end,
        cut_reason="too large",
    ),
    "garbage-in-zero-filled-tail-in-newest": Case(
        lambda log: append(log.newest.path, bytes(64) + GARBAGE + bytes(64)),
        records=10,
        cut=lambda s: s.end,
        cut_reason="garbage in zero-filled space",
    ),
    # The sealed segment: loud, whatever the damage; opening does not scan it
    "empty-sealed-segment": Case(
        lambda log: truncate(log.sealed.path, 0),
        records=0,
        error=CorruptionError,
        where=at("sealed", lambda s: 0),
        reason="no header",
        open_error=CorruptionError,
    ),
    "zero-filled-header-in-sealed": Case(
        lambda log: log.sealed.path.write_bytes(bytes(4096)),
        records=0,
        error=CorruptionError,
        where=at("sealed", lambda s: 0),
        reason="no header",
        open_error=CorruptionError,
    ),
    "bad-magic-in-sealed": Case(
        lambda log: with_header(log.sealed, b"NOTASEG!"),
        records=0,
        error=CorruptionError,
        where=at("sealed", lambda s: 0),
        reason="bad magic",
        open_error=CorruptionError,
    ),
    "unknown-version-in-sealed": Case(
        lambda log: with_header(log.sealed, header(0, version=2).encode()),
        records=0,
        error=FormatVersionError,
        open_error=FormatVersionError,
    ),
    "damaged-version-byte-in-sealed": Case(
        lambda log: patch(log.sealed.path, VERSION_OFFSET, b"\x03"),
        records=0,
        error=CorruptionError,
        where=at("sealed", lambda s: s.header_size - 4),
        reason="header checksum mismatch",
        open_error=CorruptionError,
    ),
    "bad-header-checksum-in-sealed": Case(
        lambda log: bad_header_checksum(log.sealed),
        records=0,
        error=CorruptionError,
        where=at("sealed", lambda s: s.header_size - 4),
        reason="header checksum mismatch",
        open_error=CorruptionError,
    ),
    "torn-payload-in-sealed": Case(
        lambda log: truncate(log.sealed.path, log.sealed.offsets[4] + FRAME_HEADER_BYTES + 3),
        records=4,
        error=CorruptionError,
        where=at("sealed", lambda s: s.offsets[4]),
        reason="frame payload runs past end",
    ),
    "bad-checksum-mid-sealed": Case(
        lambda log: flip_payload_byte(log.sealed, 2),
        records=2,
        error=CorruptionError,
        where=at("sealed", lambda s: s.offsets[2]),
        reason="frame checksum mismatch",
    ),
    "bad-length-in-sealed": Case(
        lambda log: set_length(log.sealed, 2, 0xFFFF_FFFF),
        records=2,
        error=CorruptionError,
        where=at("sealed", lambda s: s.offsets[2]),
        reason="frame length 4294967295 too large",
    ),
    "unknown-frame-type-in-sealed": Case(
        lambda log: reframe(log.sealed, 2, frame_type=9),
        records=2,
        error=CorruptionError,
        where=at("sealed", lambda s: s.offsets[2]),
        reason="unknown frame type 9",
    ),
    "wrong-seq-in-sealed": Case(
        lambda log: reframe(log.sealed, 2, seq=42),
        records=2,
        error=CorruptionError,
        where=at("sealed", lambda s: s.offsets[2]),
        reason="seq 42 where 2 expected",
    ),
    "zero-filled-tail-in-sealed": Case(
        lambda log: append(log.sealed.path, bytes(1000)),
        records=5,
        error=CorruptionError,
        where=at("sealed", lambda s: s.end),
        reason="zero-filled space in a sealed segment",
    ),
    "garbage-after-tail-in-sealed": Case(
        lambda log: append(log.sealed.path, GARBAGE),
        records=5,
        error=CorruptionError,
        where=at("sealed", lambda s: s.end),
        reason="too large",
    ),
    "seq-gap-between-segments": Case(
        newest_at_base_6,
        records=5,
        error=CorruptionError,
        where=lambda log: (naming.segment_name(6), 0),
        reason="starts at seq 6",
        next_seq=11,
    ),
}


@pytest.fixture(params=list(CASES.values()), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    return c


@pytest.fixture
def log(tmp_path: Path, case: Case) -> Log:
    log = make_log(tmp_path / "log")
    case.damage(log)
    return log


def test_reader_returns_records_before_the_damage_and_stops_as_the_case_says(
    log: Log, case: Case
) -> None:
    records, error = read_all(log.log_dir)

    assert records == list(enumerate(PAYLOADS[: case.records]))
    if case.error is None:
        assert error is None
        return
    assert type(error) is case.error
    if isinstance(error, CorruptionError):
        assert case.where is not None
        assert (error.segment, error.offset) == case.where(log)
        assert case.reason in error.reason
    else:
        assert isinstance(error, FormatVersionError)
        assert error.version == case.version


def test_verify_reports_the_damage_the_reader_stops_at(log: Log, case: Case) -> None:
    report = LogReader(log.log_dir).verify()
    if case.error is FormatVersionError:  # collected with other damage, not raised
        assert [type(e) for e in report.errors] == [FormatVersionError]
        return

    if case.error is None:
        assert report.ok, report.errors
    else:
        assert case.where is not None
        assert (report.errors[0].segment, report.errors[0].offset) == case.where(log)
        assert case.reason in report.errors[0].reason


def test_open_log_cuts_only_a_damaged_tail_of_the_newest_segment(
    log: Log, case: Case, tmp_path: Path
) -> None:
    quarantine = tmp_path / "quarantine"
    newest_before = log.newest.path.read_bytes() if log.newest.path.exists() else b""
    if case.open_error is not None:
        with pytest.raises(case.open_error):
            open_log(log.log_dir, quarantine, options())
        return

    writer, repairs = open_log(log.log_dir, quarantine, options())
    try:
        assert writer.next_seq == case.next_seq
        assert writer.durable_seq == case.next_seq - 1
    finally:
        writer.close()

    if case.cut is None:
        assert repairs == []
        assert list(quarantine.iterdir()) == []
        return
    (repair,) = repairs
    cut_at = case.cut(log.newest)
    kept = newest_before[cut_at:].rstrip(b"\0")
    assert repair.segment == log.newest.path.name
    assert repair.offset == cut_at
    assert repair.bytes_cut == len(kept)
    assert case.cut_reason in repair.reason
    assert repair.frames_after_damage == case.frames_after_damage
    if kept:
        assert repair.quarantined is not None
        assert Path(repair.quarantined).parent == quarantine
        assert Path(repair.quarantined).read_bytes() == kept
    else:
        assert repair.quarantined is None
    if case.header_cut:
        assert not log.newest.path.exists()
    else:
        assert log.newest.path.stat().st_size == cut_at


REPAIRABLE = {
    name: c for name, c in CASES.items() if c.open_error is None and (c.error is None or c.cut)
}


@pytest.mark.parametrize("repairable", list(REPAIRABLE.values()), ids=list(REPAIRABLE))
def test_log_reads_clean_after_open_log_repaired_it(repairable: Case, tmp_path: Path) -> None:
    case = repairable
    log = make_log(tmp_path / "log")
    case.damage(log)
    writer, _ = open_log(log.log_dir, tmp_path / "quarantine", options())
    writer.close()

    records, error = read_all(log.log_dir)

    assert error is None
    assert records == list(enumerate(PAYLOADS[: case.next_seq]))


# -- beyond the table ---------------------------------------------------------------------------


def test_frame_header_split_by_a_read_chunk_at_a_zero_byte_is_read_whole(tmp_path: Path) -> None:
    """A frame whose checksum starts with a zero byte, cut by the reader's 1 MiB read."""
    chunk = READ_CHUNK_BYTES
    log_dir = tmp_path / "log"
    # The reader's first read starts after the header: fill with frames up to 1 byte short of
    # a chunk, then a frame whose checksum's first (low) byte is zero, so that the chunk
    # ends on a lone 0x00 that looks like the start of zero-filled space.
    sizes = [60_000] * 17
    sizes.append(chunk - 1 - sum(FRAME_HEADER_BYTES + n for n in sizes) - FRAME_HEADER_BYTES)
    frames = [encode_frame(seq, payload(seq, n)) for seq, n in enumerate(sizes)]
    seq = len(frames)
    straddling = next(
        p
        for salt in range(100_000)
        if encode_frame(seq, p := payload(seq, 32) + salt.to_bytes(4, "little"))[0] == 0
    )
    assert sum(map(len, frames)) == chunk - 1
    frames += [encode_frame(seq, straddling), encode_frame(seq + 1, payload(seq + 1))]
    log_dir.mkdir()
    (log_dir / naming.segment_name(0)).write_bytes(header(0).encode() + b"".join(frames))
    write_segment(log_dir, seq + 2, [payload(seq + 2)])

    records, error = read_all(log_dir)

    assert error is None
    assert [s for s, _ in records] == list(range(seq + 3))
    assert records[seq] == (seq, straddling)


def test_sealed_segment_of_a_log_written_by_another_epoch_is_refused_on_open(
    tmp_path: Path,
) -> None:
    log = make_log(tmp_path / "log")
    other = header(0, epoch=bytes(16)).encode()
    sealed = log.sealed.path.read_bytes()
    log.sealed.path.write_bytes(other + sealed[len(other) :])
    assert zlib.crc32(other[:-4]).to_bytes(4, "little") == other[-4:]

    with pytest.raises(CorruptionError, match="epoch") as raised:
        open_log(log.log_dir, tmp_path / "quarantine", options())

    assert raised.value.segment == log.sealed.path.name


def test_newest_segment_without_a_header_after_deleted_ones_restarts_at_its_base(
    tmp_path: Path,
) -> None:
    """Retention deleted every older segment, then power went while the next was created."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / naming.segment_name(70)).write_bytes(header(70).encode()[:30])

    writer, repairs = open_log(log_dir, tmp_path / "quarantine", options())
    try:
        assert [r.offset for r in repairs] == [0]
        assert writer.next_seq == 70
        assert writer.append(b"x") == 70
        writer.sync()
    finally:
        writer.close()
    assert read_all(log_dir) == ([(70, b"x")], None)


def test_verify_reports_a_segment_of_a_later_format_version_with_the_other_damage(
    tmp_path: Path,
) -> None:
    from pilog.errors import FormatVersionError
    from pilog.log.format import SegmentHeader
    from pilog.log.reader import LogReader
    from pilog.log.repair import open_log
    from pilog.log.writer import LogOptions

    log_dir = tmp_path / "log"
    writer, _ = open_log(
        log_dir, tmp_path / "q", LogOptions(device_id="d", segment_bytes=4096, max_bytes=1 << 20)
    )
    for i in range(200):
        writer.append(b"x" * 40 + str(i).encode())
    writer.close()
    oldest = sorted(log_dir.iterdir())[0]
    data = bytearray(oldest.read_bytes())
    old = SegmentHeader(bytes(data[12:28]), 0, 0, "d")
    newer = SegmentHeader(old.epoch, 0, 0, "d", version=2).encode()  # a valid later header
    data[: len(newer)] = newer
    oldest.write_bytes(bytes(data))

    report = LogReader(log_dir).verify()
    assert [type(e) for e in report.errors] == [FormatVersionError]
    assert report.errors[0].segment == oldest.name


def test_verify_goes_on_after_damaged_segments_and_blames_only_them(tmp_path: Path) -> None:
    """Damage in segments 1, 3 and 4 of 6: each is reported once; 0, 2 and 5 are not."""
    log_dir = tmp_path / "log"
    segs = [write_segment(log_dir, 5 * i, PAYLOADS[:5]) for i in range(6)]  # seqs 0..29
    flip_payload_byte(segs[1], 2)
    set_length(segs[3], 1, 0xFFFF_FFFF)
    patch(segs[4].path, 0, bytes(20))  # a torn header

    report = LogReader(log_dir).verify()

    found = [(e.segment, e.offset) for e in report.errors if isinstance(e, CorruptionError)]
    assert found == [
        (segs[1].path.name, segs[1].offsets[2]),
        (segs[3].path.name, segs[3].offsets[1]),
        (segs[4].path.name, 0),
    ], [str(e) for e in report.errors]
    assert len(report.errors) == 3
    assert report.records == 5 + 2 + 5 + 1 + 5  # every intact frame before each damage
