"""A reader holds a bounded amount of a segment at once, however large the segment."""

from __future__ import annotations

from pathlib import Path

from logfiles import payload, write_segment

from pilog.log.reader import READ_BUDGET_BYTES, READ_CHUNK_BYTES, LogReader

PAYLOAD_BYTES = 200
FRAMES = 60_000  # ~13 MiB in one segment


def test_batches_of_a_large_segment_stay_within_the_read_budget(tmp_path: Path) -> None:
    write_segment(tmp_path, 0, [payload(s, PAYLOAD_BYTES) for s in range(FRAMES)])
    sizes = []
    seqs = []
    for batch in LogReader(tmp_path).read_batches(0):
        sizes.append(sum(len(p) for _, p in batch))
        seqs += [s for s, _ in batch]
    assert seqs == list(range(FRAMES))
    assert len(sizes) > 1
    assert max(sizes) <= READ_BUDGET_BYTES + READ_CHUNK_BYTES


def test_reading_from_the_middle_of_a_large_segment_starts_at_that_seq(tmp_path: Path) -> None:
    write_segment(tmp_path, 0, [payload(s, PAYLOAD_BYTES) for s in range(FRAMES)])
    reader = LogReader(tmp_path)
    first = next(iter(reader.read_batches(FRAMES - 10)))
    assert [s for s, _ in first] == list(range(FRAMES - 10, FRAMES))
    assert reader.last_seq() == FRAMES - 1
    report = reader.verify()
    assert report.ok
    assert report.records == FRAMES
