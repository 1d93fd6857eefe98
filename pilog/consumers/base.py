"""Consumers: threads of `pilog run` that each read durable events from their own cursor.

A consumer (an uploader per `[[sink]]`, a runner per `[[projection]]`) sees only durable
events (invariant 3), in seq order, a reader's chunk at a time, so catching up on days of
backlog holds one chunk in memory. At the end of the log it sleeps on the writer's durable
watermark instead of polling the disk. It commits its cursor after the effect (invariant 4);
how often is the subclass's business.

Two things can move a consumer other than its own progress:
- retention deleted the segments it had not read yet (`on_full = "drop_oldest"`): it resumes
  at the oldest event still there and appends a `Gap` naming what it missed;
- `pilog replay` asked it to rewind (a row in the index's `rewinds` table, checked about once
  a second): it restarts from the requested seq.

Readings reach `handle` with their corrected wall time (`pilog/consumers/clock.py`), so every
consumer agrees on it. At a reading stamped before the clock was set, the consumer hands over
what came before and holds (state "holding") until a clock step of its boot, or the boot's
end, is durable.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pilog.consumers.clock import ClockCorrection
from pilog.datadir import EventLog
from pilog.errors import CorruptionError, LogError
from pilog.events import Event, Gap, decode_event, rfc3339
from pilog.index.store import Rewind
from pilog.log.reader import LogReader

log = logging.getLogger("pilog.consumer")

REWIND_CHECK_S = 1.0  # how soon a running consumer notices `pilog replay`
IDLE_WAIT_S = 0.5  # longest sleep at the end of the log; bounds stop latency
MIN_WAIT_S = 0.01  # shortest, when `tick` is due now: never a busy loop
STUCK_RETRY_S = 30.0  # after damage in the log or a bug: try again this often


@dataclass
class ConsumerState:
    """What `pilog status` shows of a running consumer."""

    name: str
    next_seq: int | None = None  # the committed cursor
    position: int | None = None  # the next seq not yet delivered (ahead of next_seq until commit)
    state: str = "starting"  # starting|idle|sending|retrying|paused|holding|stuck|stopped
    paused_reason: str | None = None  # while paused: what the receiver refuses, and the fix
    failing_since_ns: int | None = None  # first failed send of the current streak
    recovered_ns: int | None = None  # delivering again since, after the last failed streak
    last_ok_ns: int | None = None
    last_error: str | None = None
    last_error_ns: int | None = None
    retry_at_ns: int | None = None
    attempts: int = 0  # failed sends of the current batch
    retries: int = 0  # failed sends since start
    delivered: int = 0  # readings acknowledged (or applied) since start
    requests: int = 0
    dead_letters: int = 0
    gaps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Restart(Exception):
    """Leave the current read and start again from the (new) cursor."""


class Consumer(ABC):
    """A thread that feeds durable events, from its cursor on, to `handle`."""

    def __init__(self, name: str, events: EventLog, stop: threading.Event) -> None:
        self.name = name  # as in the index: "sink:NAME" or "projection:NAME"
        self.log = events
        self.stop = stop
        self.state = ConsumerState(name)
        self._reader = LogReader(events.paths.log_dir)
        self._clock = ClockCorrection(self._reader, lambda: events.writer.durable_seq)
        self._thread: threading.Thread | None = None
        self._next_rewind_check = 0.0

    # -- what subclasses provide --------------------------------------------------------

    @abstractmethod
    def load_cursor(self) -> int | None:
        """The committed cursor, None when this consumer never committed one."""

    @abstractmethod
    def handle(self, events: Sequence[Event]) -> None:
        """Take the next events (contiguous from the last call's, or from a restart)."""

    @abstractmethod
    def tick(self, now: float) -> None:
        """Called after each chunk and each idle wait: act on time (linger, commit)."""

    def due_in(self, now: float) -> float | None:
        """Seconds until `tick` has something timed to do (a batch's linger); None: nothing.
        An idle consumer waits no longer than this for the log to grow."""
        return None

    @abstractmethod
    def restart_at(self, seq: int) -> None:
        """Drop anything pending; the next `handle` starts at `seq`."""

    @abstractmethod
    def apply_rewind(self, rewind: Rewind) -> int:
        """Act on a replay request; return the seq to read from next."""

    def finish(self) -> None:  # noqa: B027 - optional hook
        """On stop: commit what is safe to commit (never start new network I/O)."""

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to finish; False when it is stuck (it is a daemon: abandoned)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    drain_on_stop = False  # local consumers catch up with the durable end before `finish`

    def run(self) -> None:
        seq = self._first_seq()
        while not self.stop.is_set():
            try:
                self.restart_at(seq)
                seq = self._consume(seq)
                if self.stop.is_set() and self.drain_on_stop:
                    self._drain_rest(seq)
            except Restart:
                seq = self._first_seq()
            except CorruptionError as e:
                # Never skipped (invariant 5): the operator decides, with `pilog repair`.
                self._stuck(f"cannot read the log: {e} (stop pilog and run `pilog repair`)")
                seq = self._first_seq()
            except LogError as e:
                self._stuck(f"cannot read the log: {e}")
                seq = self._first_seq()
            except Exception as e:
                log.exception("%s failed", self.name)
                self._stuck(f"{type(e).__name__}: {e}")
                seq = self._first_seq()
        try:
            self.finish()
        except Exception:
            log.exception("%s failed while stopping", self.name)
        self.state.state = "stopped"

    def _stuck(self, why: str) -> None:
        self.note_error(why)
        self.state.state = "stuck"
        log.error("%s is stuck: %s; trying again in %.0fs", self.name, why, STUCK_RETRY_S)
        self.stop.wait(STUCK_RETRY_S)

    def note_error(self, why: str) -> None:
        self.state.last_error = why
        self.state.last_error_ns = time.time_ns()

    def _first_seq(self) -> int:
        cursor = self.load_cursor()
        self.state.next_seq = cursor
        oldest = self.oldest_seq()
        return oldest if cursor is None else cursor

    def oldest_seq(self) -> int:
        segments = self._reader.segments()
        return segments[0][0] if segments else 0

    def _consume(self, seq: int) -> int:
        """Feed events from `seq` until stopped; return the seq to go on from."""
        expected = seq
        for records in self._reader.read_batches(
            seq,
            follow=True,
            stop=self.stop,
            poll_s=IDLE_WAIT_S,
            wait=self._wait,
            yield_idle=True,
        ):
            if self.stop.is_set():
                break
            if records:
                if not self._wait_durable(records[-1][0]):
                    break
                if records[0][0] > expected:
                    self._missed(expected, records[0][0] - 1)
                self._feed([decode_event(s, p) for s, p in records])
                expected = records[-1][0] + 1
            now = time.monotonic()
            self.tick(now)
            if now >= self._next_rewind_check:
                self._next_rewind_check = now + REWIND_CHECK_S
                self._check_rewind()
        return expected

    def _drain_rest(self, seq: int) -> None:
        """Handle what is durable beyond `seq` without waiting for more."""
        durable = self.log.writer.durable_seq
        if seq > durable:
            return
        for records in self._reader.read_batches(seq):
            done = [r for r in records if r[0] <= durable]
            if done and not self._feed([decode_event(s, p) for s, p in done], hold=False):
                return
            if records[-1][0] >= durable:
                return

    def _feed(self, events: list[Event], *, hold: bool = True) -> bool:
        """Hand `events` to `handle` with corrected times, holding at a reading whose time is
        not known yet (Restart on stop); with `hold` False, stop before it and return False."""
        while events:
            done = self._clock.correct(events)
            if done:
                self.handle(events if done == len(events) else events[:done])
            events = events[done:]
            if events:
                if not hold:
                    return False
                self._hold(events[0])
        if self._clock.uncorrected:
            self.state.extra["uncorrected"] = self._clock.uncorrected
        return True

    def _hold(self, event: Event) -> None:
        """Wait until a clock step of `event`'s boot, or that boot's end, is durable."""
        log.warning(
            "%s: holding at seq %d, stamped %s before the clock was set; waiting for a clock step",
            self.name,
            event.seq,
            rfc3339(event.ts_ns),
        )
        while True:
            self.tick(time.monotonic())  # what came before goes out, commits stay due
            self.state.state = "holding"
            self._wait(self._clock.scanned_to, IDLE_WAIT_S)  # wakes when the log grows
            if self.stop.is_set():
                raise Restart  # the cursor stays at `event`
            if self._clock.known(event):
                break
        log.warning(
            "%s: going on from seq %d: a clock step of its boot, or a later boot, is in the log",
            self.name,
            event.seq,
        )
        self.state.state = "idle"

    def _wait(self, next_seq: int, timeout: float) -> None:
        writer = self.log.writer
        due = self.due_in(time.monotonic())
        if due is not None:
            timeout = min(timeout, max(due, MIN_WAIT_S))
        if not writer.wait_durable(next_seq, timeout) and writer.io_error is not None:
            self.stop.wait(timeout)  # a failed writer answers at once: do not spin

    def _wait_durable(self, seq: int) -> bool:
        """Block until `seq` is durable (a read can see frames not yet synced); False on stop."""
        while not self.log.writer.wait_durable(seq, IDLE_WAIT_S):
            if self.stop.is_set():
                return False
        return True

    def _missed(self, first: int, last: int) -> None:
        """Retention deleted `first..last` before this consumer read them."""
        self.state.gaps += 1
        log.error(
            "%s fell behind retention: seq %d..%d were deleted before it read them",
            self.name,
            first,
            last,
        )
        self.log.append_incident(
            Gap(f"{self.name} fell behind retention", first_seq=first, last_seq=last)
        )

    def _check_rewind(self) -> None:
        rewind = self.log.read_index(lambda i: i.rewind(self.name), None)
        if rewind is None or rewind.applied:
            return
        seq = self.apply_rewind(rewind)
        log.warning("%s rewound by pilog replay: re-reading from seq %d", self.name, seq)
        raise Restart
