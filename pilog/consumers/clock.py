"""Corrected times for readings stamped before the wall clock was set (invariant 8).

A Pi without an RTC boots with its clock in 1970 (or at the last shutdown) until NTP syncs;
the runtime then appends a `clock_step` event. The monotonic clock did not jump, so a reading
of the same boot taken before the step gets

    corrected = step.ts_ns - (step.mono_ns - reading.mono_ns)

(the step event's own wall and monotonic stamps). The log keeps the original stamps and the
steps; every consumer (uploaders, projections, a projection rebuild) sees readings through
`ClockCorrection`, so all of them give a reading the same time, however the log is batched and
whenever it is read. The rule depends on the log alone:

- a reading stamped at a plausible time (from `PLAUSIBLE_AFTER_NS`, pilog's release) keeps it;
- a reading stamped before is corrected by the first step of its boot after it that lands at a
  plausible time; until such a step is durable, the consumer holds at that reading;
- if its boot ended (another boot's events follow) without such a step, it keeps its stamp:
  nothing better is known.

Plausible but wrong stamps (`fake-hwclock` restored the last shutdown's time) are not corrected:
whether a step follows is known only once the boot ended, and a consumer cannot wait for that.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from pilog.events import ClockStep, Event, Reading, decode_event
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

    What a scan learns is kept (the steps to a plausible time of each boot, the seq where each
    boot ended), and the next scan resumes where the last stopped, so waiting for NTP while
    the log grows reads each event once.
    """

    def __init__(self, reader: LogReader, durable_seq: Callable[[], int]) -> None:
        self._reader = reader
        self._durable_seq = durable_seq
        self._start = self._from = 0  # scanned: [_start, _from)
        self._last_boot: bytes | None = None  # boot of the event at _from - 1
        self._steps: dict[bytes, list[Step]] = {}  # per boot, in seq order
        self._ended: dict[bytes, int] = {}  # boot -> first seq of the boot after it

    @property
    def scanned_to(self) -> int:
        """The next seq a scan reads: wait for it to be durable before asking again."""
        return self._from

    def find(self, boot_id: bytes, after_seq: int) -> Step | str | None:
        """The first step of `boot_id` after `after_seq` (an event of that boot); BOOT_ENDED
        when another boot's events came first; None when neither is in the durable log yet."""
        if after_seq + 1 < self._start or after_seq + 1 > self._from:
            self._restart(after_seq + 1, boot_id)  # a rewind, or a reader ahead of our scan
        while True:
            steps = self._steps.get(boot_id, [])
            i = bisect.bisect_right([s.seq for s in steps], after_seq)
            if i < len(steps):
                return steps[i]
            ended = self._ended.get(boot_id)
            if ended is not None and ended > after_seq:
                return BOOT_ENDED
            if not self._scan():
                return None

    def _restart(self, seq: int, boot_id: bytes) -> None:
        self._start = self._from = seq
        self._last_boot = boot_id  # the event at seq - 1 is of the boot asked about
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
                    self._steps.setdefault(e.boot_id, []).append(Step.of(e))
                self._from = seq + 1
        return self._from > start


class ClockCorrection:
    """Gives readings their corrected time by the rule above, for one consumer."""

    def __init__(self, reader: LogReader, durable_seq: Callable[[], int]) -> None:
        self._steps = StepFinder(reader, durable_seq)
        self.uncorrected = 0  # readings of boots that ended before the clock was set

    @property
    def scanned_to(self) -> int:
        return self._steps.scanned_to

    def correct(self, events: list[Event]) -> int:
        """Correct `events` in place up to the first reading whose time is not known yet;
        return how many are done (all of them: `len(events)`)."""
        if not events or min(e.ts_ns for e in events) >= PLAUSIBLE_AFTER_NS:
            return len(events)  # the clock was set: nothing to look up
        for i, e in enumerate(events):
            if e.ts_ns >= PLAUSIBLE_AFTER_NS or not isinstance(e.body, Reading):
                continue
            found = self._steps.find(e.boot_id, e.seq)
            if found is None:
                return i
            if isinstance(found, Step):
                events[i] = msgspec.structs.replace(e, ts_ns=found.corrected(e))
            else:
                self.uncorrected += 1
        return len(events)

    def known(self, event: Event) -> bool:
        """Whether the durable log now says what time `event` gets."""
        return self._steps.find(event.boot_id, event.seq) is not None
