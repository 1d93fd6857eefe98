"""The uploader: one consumer per `[[sink]]`, delivering readings exactly once in effect.

Readings are batched by count (`batch_max`), stored bytes (`batch_max_bytes`) and time
(`linger_ms` after the first reading of a batch); other event types are passed over. A batch is
sent until the sink acknowledges it, and only then does the cursor move past it, so a crash
re-sends at most the batch in flight, which receivers de-duplicate by event id and
idempotency key (invariant 4). The answer table (`Outcome`):

- `retry`: exponential backoff with full jitter, capped at `retry_max`; `Retry-After` wins;
- `too_large`: the batch is split in halves, each sent in order;
- `rejected`: the batch is bisected down to the events the receiver refuses; each becomes a
  `DeadLetter` event (and a line in `deadletter/<sink>.ndjson`) and the rest is delivered;
- `unauthorized`: the sink pauses for `retry_max` between attempts and says so, once per streak.
The sink never gives up on good data, and never loses bad data: a dead letter stays in the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from pilog.config import SinkConfig
from pilog.consumers.base import Consumer, Restart
from pilog.datadir import EventLog
from pilog.events import DeadLetter, Event, Reading, event_to_json
from pilog.index.store import Rewind
from pilog.uploader.backoff import Backoff
from pilog.uploader.sink import Outcome, Sink

log = logging.getLogger("pilog.uploader")

IDLE_COMMIT_S = 5.0  # a cursor passing only non-readings is committed at most this often


class Uploader(Consumer):
    def __init__(
        self, config: SinkConfig, sink: Sink, events: EventLog, stop: threading.Event
    ) -> None:
        super().__init__(f"sink:{config.name}", events, stop)
        self.config = config
        self.sink = sink
        self.backoff = Backoff(config.retry_initial_ms / 1000, config.retry_max)
        self._linger_s = config.linger_ms / 1000
        self._pending: list[Event] = []
        self._pending_bytes = 0
        self._first_at = 0.0  # monotonic time the batch's first reading arrived
        self._upto = 0  # cursor once the pending batch is delivered
        self._delivered = 0  # every reading before it is acknowledged
        self._committed = 0
        self._committed_at = 0.0
        self._commit_every_s = float(config.cursor_commit_interval)
        self._rewind: Rewind | None = None  # an applied replay with an end to come back from
        self._unauthorized = False
        self.deadletter_path = events.paths.deadletter(config.name)

    # -- Consumer -------------------------------------------------------------------------

    def load_cursor(self) -> int | None:
        empty: dict[str, int] = {}
        cursors = self.log.read_index(lambda i: i.cursors(), empty)
        self._rewind = self.log.read_index(lambda i: i.rewind(self.name), None)
        if self._rewind is not None and not self._rewind.applied:
            self._rewind = None  # picked up by the first rewind check
        return cursors.get(self.name)

    def restart_at(self, seq: int) -> None:
        self._pending = []
        self._pending_bytes = 0
        self._upto = self._delivered = self._committed = seq
        self._committed_at = time.monotonic()

    def handle(self, events: Sequence[Event]) -> None:
        end = self._rewind.to_seq if self._rewind is not None else None
        for e in events:
            if end is not None and e.seq > end:
                self._finish_replay()
            body = e.body
            if isinstance(body, Reading):  # its time already corrected (Consumer._feed)
                if not self._pending:
                    self._first_at = time.monotonic()
                self._pending.append(e)
                self._pending_bytes += _stored_size(body)
            self._upto = e.seq + 1
            if (
                len(self._pending) >= self.config.batch_max
                or self._pending_bytes >= self.config.batch_max_bytes
            ):
                self.flush()

    def tick(self, now: float) -> None:
        if self._pending:
            if now - self._first_at >= self._linger_s:
                self.flush()
        elif self._upto > self._committed and now - self._committed_at >= max(
            IDLE_COMMIT_S, self._commit_every_s
        ):
            self._commit(self._upto)
        if self._delivered > self._committed and now - self._committed_at >= self._commit_every_s:
            self._commit(self._delivered)
        if self.state.state in ("starting", "sending"):
            self.state.state = "idle"

    def apply_rewind(self, rewind: Rewind) -> int:
        if rewind.to_seq is not None:
            # Delivery went on since `pilog replay` read the cursor: come back to where it is.
            resume = max(rewind.resume_seq or 0, self._delivered, rewind.to_seq + 1)
            rewind = dataclasses.replace(rewind, resume_seq=resume)
        self.log.update_index("replay", lambda i: i.apply_rewind(rewind))
        self._rewind = rewind if rewind.to_seq is not None else None
        return rewind.from_seq

    def finish(self) -> None:
        self._commit(self._upto if not self._pending else self._delivered)
        self.sink.close()

    # -- delivery ------------------------------------------------------------------------

    def flush(self) -> None:
        """Deliver the pending batch and commit the cursor past it (at most every
        `cursor_commit_interval`); Restart on stop."""
        if self._pending:
            self._deliver(self._pending)
        self._pending = []
        self._pending_bytes = 0
        self._delivered = self._upto
        self.state.next_seq = self._upto
        if time.monotonic() - self._committed_at >= self._commit_every_s:
            self._commit(self._upto)

    def _deliver(self, batch: list[Event]) -> None:
        parts: deque[list[Event]] = deque([batch])
        while parts:
            if self.stop.is_set():
                raise Restart  # the cursor stays before the batch: re-sent after restart
            part = parts.popleft()
            if not self.state.attempts:
                self.state.state = "sending"  # else it stays "retrying" or "paused"
            self.state.requests += 1
            outcome = self.sink.send(part)
            if outcome.kind == "ack":
                self._acked(part)
            elif outcome.kind in ("too_large", "rejected") and len(part) > 1:
                half = len(part) // 2
                parts.extendleft([part[half:], part[:half]])
            elif outcome.kind in ("too_large", "rejected"):
                self._dead_letter(part[0], outcome)
            else:
                parts.appendleft(part)
                self._wait_after(outcome)

    def _acked(self, part: list[Event]) -> None:
        if self._unauthorized:
            log.warning("sink %s: authorized again, delivering", self.config.name)
            self._unauthorized = False
        self.backoff.reset()
        self.state.attempts = 0
        self.state.retry_at_ns = None
        self.state.delivered += len(part)
        self.state.last_ok_ns = time.time_ns()

    def _wait_after(self, outcome: Outcome) -> None:
        name = self.config.name
        if outcome.kind == "unauthorized":
            wait = float(self.config.retry_max)
            self.state.state = "paused"
            if not self._unauthorized:
                log.error(
                    "sink %s: the receiver refuses our credentials (%s); paused, trying again "
                    "every %.0fs. Check token_file or $PILOG_SINK_*_TOKEN.",
                    name,
                    outcome.detail,
                    wait,
                )
            self._unauthorized = True
        else:
            wait = self.backoff.next_wait(outcome.retry_after_s)
            self.state.state = "retrying"
            if self.state.attempts == 0:
                log.warning("sink %s: %s; retrying", name, outcome.detail)
        self.state.attempts += 1
        self.state.retries += 1
        self.note_error(outcome.detail)
        self.state.retry_at_ns = time.time_ns() + int(wait * 1e9)
        self.stop.wait(wait)

    def _dead_letter(self, event: Event, outcome: Outcome) -> None:
        """The receiver will never take `event`: keep it, say so, go on."""
        name = self.config.name
        self.state.dead_letters += 1
        log.error("sink %s refused seq %d for good: %s", name, event.seq, outcome.detail)
        entry = {
            "sink": name,
            "status": outcome.status,
            "reason": outcome.detail,
            "dead_at": time.time_ns(),
            "event": event_to_json(event, self.log.config.device_id, self.log.epoch_hex),
        }
        _append_line(self.deadletter_path, json.dumps(entry, sort_keys=True))
        self.log.append_incident(DeadLetter(name, event.seq, outcome.status, outcome.detail))

    # -- cursor --------------------------------------------------------------------------

    def _commit(self, seq: int) -> None:
        if seq <= self._committed:
            return
        if self.log.update_index("cursor", lambda i: i.set_cursor(self.name, seq)):
            self._committed = seq
            self._committed_at = time.monotonic()
            self.state.next_seq = seq

    def _finish_replay(self) -> None:
        """Past the end of a `replay --to`: deliver what is pending, jump back, restart."""
        rewind = self._rewind
        assert rewind is not None
        assert rewind.to_seq is not None
        self.flush()
        resume = max(rewind.resume_seq or 0, rewind.to_seq + 1)
        self.log.update_index("replay", lambda i: i.finish_rewind(self.name, resume))
        self._rewind = None
        log.warning("sink %s: replay done; resuming at seq %d", self.config.name, resume)
        raise Restart


def _stored_size(reading: Reading) -> int:
    """A cheap estimate of a reading's size in a request, for `batch_max_bytes`."""
    return 64 + len(reading.sensor) + len(reading.sensor_type) + 24 * len(reading.values)


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
