"""`pilog verify`: check every header, frame and event of the log."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from pilog.cli.progress import progress
from pilog.errors import CorruptionError
from pilog.events import decode_event
from pilog.history import History


@dataclass
class Verdict:
    segments: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def verify(history: History) -> Verdict:
    with progress("checking frames", events=False) as tell:
        report = history.reader.verify(tell)
    verdict = Verdict(
        report.segments,
        report.records,
        report.first_seq,
        report.last_seq,
        [str(e) for e in report.errors],
        list(report.notes),
    )
    if report.errors:
        return verdict
    # Frames are sound; every payload must also be an event this pilog understands.
    try:
        with progress("decoding events") as tell:
            for batch in history.reader.read_batches(0, progress=tell):
                for seq, payload in batch:
                    _check_event(verdict, seq, payload)
    except CorruptionError as e:  # the log changed under us (a segment sealed with damage)
        verdict.errors.append(str(e))
    return verdict


def _check_event(verdict: Verdict, seq: int, payload: bytes) -> None:
    try:
        decode_event(seq, payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        verdict.errors.append(f"event seq {seq} does not decode: {e}")
