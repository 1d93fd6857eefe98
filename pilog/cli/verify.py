"""`pilog verify`: check every header, frame and event of the log."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

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
    report = history.reader.verify()
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
        for seq, payload in history.reader.read_from(0):
            try:
                decode_event(seq, payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                verdict.errors.append(f"event seq {seq} does not decode: {e}")
    except CorruptionError as e:  # the log changed under us (a segment sealed with damage)
        verdict.errors.append(str(e))
    return verdict
