"""The reader tells an optional progress callback bytes read of the segments' total."""

from __future__ import annotations

from pathlib import Path

from logfiles import payload, write_segment

from pilog.log.reader import LogReader

PER_SEGMENT = 50


def three_segments(log_dir: Path) -> int:
    """Three segments of `PER_SEGMENT` records each; return their total bytes."""
    for i in range(3):
        base = i * PER_SEGMENT
        write_segment(log_dir, base, [payload(base + k, 200) for k in range(PER_SEGMENT)])
    return sum(p.stat().st_size for p in log_dir.iterdir())


def test_read_batches_reports_bytes_of_a_known_total_up_to_the_end(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    total = three_segments(log_dir)
    told: list[tuple[int, int, int]] = []

    def tell(done: int, total: int, records: int) -> None:
        told.append((done, total, records))

    records = sum(len(b) for b in LogReader(log_dir).read_batches(0, progress=tell))
    assert records == 3 * PER_SEGMENT
    assert told[0] == (0, total, 0)  # the total is known before the first read
    assert {t for _, t, _ in told} == {total}
    assert [d for d, _, _ in told] == sorted(d for d, _, _ in told)
    assert told[-1] == (total, total, records)


def test_verify_reports_bytes_and_records_up_to_the_end(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    total = three_segments(log_dir)
    told: list[tuple[int, int, int]] = []

    def tell(done: int, total: int, records: int) -> None:
        told.append((done, total, records))

    report = LogReader(log_dir).verify(tell)
    assert report.ok
    assert told[0] == (0, total, 0)
    assert told[-1] == (total, total, report.records)


def test_verify_counts_a_segment_with_a_damaged_header_as_read(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    total = three_segments(log_dir)
    middle = sorted(log_dir.iterdir())[1]
    raw = bytearray(middle.read_bytes())
    raw[0] ^= 0xFF  # bad magic
    middle.write_bytes(bytes(raw))
    told: list[tuple[int, int, int]] = []

    def tell(done: int, total: int, records: int) -> None:
        told.append((done, total, records))

    report = LogReader(log_dir).verify(tell)
    assert not report.ok
    assert told[-1] == (total, total, report.records)
