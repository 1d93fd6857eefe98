"""Corrected timestamps for readings stamped before a wall-clock step (invariant 8).

A Pi without an RTC boots with its clock in 1970 (or at the last shutdown) until NTP syncs;
the runtime then appends a `clock_step` event. The monotonic clock did not jump, so a reading
of the same boot taken before the step gets

    corrected = step.ts_ns - (step.mono_ns - reading.mono_ns)

(the step event's own wall and monotonic stamps). The log keeps the original stamps and the
step; only what uploaders send is corrected. A reading whose wall time is implausible (before
`PLAUSIBLE_AFTER_NS`, pilog's release) is held back until a step of its boot is in the log;
if that boot ended without one, the reading is sent as recorded (nothing better is known).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from pilog.events import ClockStep, Event, decode_event
from pilog.log.reader import LogReader

# No reading of a real sensor by this pilog can be older than its release.
PLAUSIBLE_AFTER_NS = int(dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000_000


def plausible(ts_ns: int) -> bool:
    return ts_ns >= PLAUSIBLE_AFTER_NS


@dataclass(frozen=True, slots=True)
class Step:
    """A `clock_step` event: where the wall clock is right again."""

    boot_id: bytes
    seq: int
    ts_ns: int
    mono_ns: int

    @classmethod
    def of(cls, event: Event) -> Step:
        return cls(event.boot_id, event.seq, event.ts_ns, event.mono_ns)

    def corrected(self, event: Event) -> int:
        return self.ts_ns - (self.mono_ns - event.mono_ns)


BOOT_ENDED = "boot ended"


class StepFinder:
    """Looks ahead in the durable log for the next `clock_step` of a boot, or its end.

    What a scan learns is kept (the first step to a plausible time of each boot, the seq where
    each boot ended), and the next scan resumes where the last stopped, so waiting for NTP
    while the log grows reads each event once.
    """

    def __init__(self, reader: LogReader, durable_seq: Callable[[], int]) -> None:
        self._reader = reader
        self._durable_seq = durable_seq
        self._start = self._from = 0  # scanned: [_start, _from)
        self._last_boot: bytes | None = None  # boot of the event at _from - 1
        self._steps: dict[bytes, Step] = {}
        self._ended: dict[bytes, int] = {}  # boot -> first seq of the boot after it

    def find(self, boot_id: bytes, after_seq: int) -> Step | str | None:
        """The first step of `boot_id` after `after_seq`; BOOT_ENDED when another boot's
        events came first; None when neither is in the durable log yet."""
        if after_seq + 1 < self._start or after_seq + 1 > self._from:
            self._restart(after_seq + 1)  # a rewind, or a reader ahead of our scan
        while True:
            step = self._steps.get(boot_id)
            if step is not None and step.seq > after_seq:
                return step
            ended = self._ended.get(boot_id)
            if ended is not None and ended > after_seq:
                return BOOT_ENDED
            if not self._scan():
                return None

    def _restart(self, seq: int) -> None:
        self._start = self._from = seq
        self._last_boot = None
        self._steps.clear()
        self._ended.clear()

    def _scan(self) -> bool:
        """Learn from the durable events after `_from`; False when there were none."""
        durable = self._durable_seq()
        start = self._from
        for batch in self._reader.read_batches(self._from):
            for seq, payload in batch:
                if seq > durable:
                    return self._from > start
                e = decode_event(seq, payload)
                if self._last_boot is not None and e.boot_id != self._last_boot:
                    self._ended.setdefault(self._last_boot, seq)
                self._last_boot = e.boot_id
                if isinstance(e.body, ClockStep) and plausible(e.ts_ns):
                    # A step to a time still implausible (a wrong RTC) does not count.
                    self._steps.setdefault(e.boot_id, Step.of(e))
                self._from = seq + 1
        return self._from > start
