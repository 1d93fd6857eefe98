"""The uploader: one consumer per `[[sink]]`, delivering readings exactly once in effect.

Readings are batched by count (`batch_max`), stored bytes (`batch_max_bytes`) and time
(`linger_ms` after the first reading of a batch); other event types are passed over. A batch is
sent until the sink acknowledges it, and only then does the cursor move past it, so a crash
re-sends at most the batch in flight, which receivers de-duplicate by event id and
idempotency key (invariant 4). One batch is in flight at a time, in a sender thread, while
this one reads and encodes the next (`flush`); the next goes only once it is delivered.
The answer table (`Outcome`):

- `retry`: exponential backoff with full jitter, capped at `retry_max`; `Retry-After` wins;
- `too_large`: the batch is split in halves, each sent in order;
- `rejected`: the batch is bisected down to the events the receiver refuses; each becomes a
  `DeadLetter` event (and a line in `deadletter/<sink>.ndjson`) once another reading of the
  batch was accepted, and the rest is delivered;
- `rejected` alike with nothing accepted: the refusal is about the endpoint, not the readings
  (a wrong URL): when `PAUSE_AFTER_REFUSALS` readings of a batch in a row were refused on their
  own with the same status, none of the batch was accepted, and the batch's last reading sent
  alone is refused too, nothing is dead-lettered, the cursor stays before the batch and the
  sink pauses. A smaller batch refused whole is retried with backoff, grown by the readings
  that follow, until it tells one way or the other;
- `unauthorized`: the sink pauses for `retry_max` between attempts and says so, once per streak.
A paused sink tries again every `retry_max`, at once when `pilog retry` asks (`wake`), and with
a fresh batch after an endpoint pause. A restart of pilog (a corrected config) tries at once.
The sink never gives up on good data, and never loses bad data: a dead letter stays in the log.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from pilog.cli.common import human_age
from pilog.config import SinkConfig
from pilog.consumers.base import IDLE_WAIT_S, Consumer, Restart
from pilog.counts import counted
from pilog.datadir import EventLog
from pilog.events import DeadLetter, Event, Reading, event_to_json
from pilog.index.store import Rewind
from pilog.log.fsio import PARENT_DIR_MODE, make_dirs
from pilog.uploader.backoff import Backoff
from pilog.uploader.sink import Outcome, Sink

log = logging.getLogger("pilog.uploader")

IDLE_COMMIT_S = 5.0  # a cursor passing only non-readings is committed at most this often
PAUSE_AFTER_REFUSALS = 3  # single readings refused alike, none accepted: the endpoint refuses
ENDPOINT_STATUSES = frozenset({404, 405, 410})  # answers about the URL, never about a reading


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
        self._wake = threading.Event()
        self._waiting = False
        # One batch in flight: delivered by a sender thread while this one reads, decodes
        # and encodes the next. Cursors are committed under the lock, from either thread.
        self._sender: threading.Thread | None = None
        self._send_error: BaseException | None = None
        self._commit_lock = threading.Lock()
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
        try:
            self._collect()
        except Restart:
            pass  # the restart under way is its outcome
        except Exception:
            log.exception("sink %s: delivery failed", self.config.name)
        self._pending = []
        self._pending_bytes = 0
        self._upto = self._delivered = self._committed = seq
        self._committed_at = time.monotonic()
        self.state.position = seq

    def handle(self, events: Sequence[Event]) -> None:
        end = self._rewind.to_seq if self._rewind is not None else None
        if (end is None or events[-1].seq <= end) and self.config.batch_max_bytes > 0:
            self._handle_chunk(events)
            return
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

    def _handle_chunk(self, events: Sequence[Event]) -> None:
        """`handle` for a chunk with no replay end in it: the same batches, cut by slicing.

        On a backlog this is the uploader's per-reading work, so the per-reading part is two
        comprehensions and the rest is per batch. Each batch ends, and `_upto` is set past,
        the reading that fills it by count or by `_stored_size`, as the loop in `handle` does.
        """
        if not events:
            return
        readings = [e for e in events if isinstance(e.body, Reading)]
        sizes = [_stored_size(e.body) for e in readings]  # type: ignore[arg-type]
        batch_max, max_bytes = self.config.batch_max, self.config.batch_max_bytes
        i = 0
        while i < len(readings):
            pending = self._pending
            if not pending:
                self._first_at = time.monotonic()
            room = batch_max - len(pending)  # >= 1: a full batch was flushed
            # total[k]: the batch's bytes with the next k readings in it
            total = list(itertools.accumulate(sizes[i : i + room], initial=self._pending_bytes))
            cut = bisect.bisect_left(total, max_bytes, lo=1)  # first k reaching max_bytes
            take = min(cut, len(total) - 1)
            pending.extend(readings[i : i + take])
            self._pending_bytes = total[take]
            i += take
            if len(pending) >= batch_max or self._pending_bytes >= max_bytes:
                self._upto = pending[-1].seq + 1
                self.flush()
        self._upto = events[-1].seq + 1

    def due_in(self, now: float) -> float | None:
        return self._first_at + self._linger_s - now if self._pending else None

    def tick(self, now: float) -> None:
        in_flight = not self._collect(wait=False)
        if self._pending:
            if now - self._first_at >= self._linger_s:
                self.flush()
        elif (
            not in_flight
            and self._upto > self._committed
            and now - self._committed_at >= max(IDLE_COMMIT_S, self._commit_every_s)
        ):
            self._commit(self._upto)
        if self._delivered > self._committed and now - self._committed_at >= self._commit_every_s:
            self._commit(self._delivered)
        if self.state.state in ("starting", "sending"):
            self.state.state = "idle"
        unsent = self._pending or self._sender is not None
        self.state.position = self._delivered if unsent else self._upto

    def apply_rewind(self, rewind: Rewind) -> int:
        self._collect()  # `_delivered` must be final before it is read
        if rewind.to_seq is not None:
            # Delivery went on since `pilog replay` read the cursor: come back to where it is.
            resume = max(rewind.resume_seq or 0, self._delivered, rewind.to_seq + 1)
            rewind = dataclasses.replace(rewind, resume_seq=resume)
        self.log.update_index("replay", lambda i: i.apply_rewind(rewind))
        self._rewind = rewind if rewind.to_seq is not None else None
        return rewind.from_seq

    def finish(self) -> None:
        try:
            self._collect()
        except Exception:
            # A Restart (stop) or a failure: the batch in flight stays before the cursor.
            self._commit(self._delivered)
        else:
            self._commit(self._upto if not self._pending else self._delivered)
        self.sink.close()

    # -- delivery ------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the pending batch to the sender once the batch before it is delivered; the
        sender commits the cursor past it on ack (at most every `cursor_commit_interval`).
        Raises what the delivery before raised (Restart on stop)."""
        batch, upto = self._pending, self._upto
        if batch:
            prepare = getattr(self.sink, "prepare", None)
            if prepare is not None:
                prepare(batch)  # encoded here while the batch before is on the wire
        self._collect()
        # Pending until here: if the encoding or the batch before failed, `finish` sees it.
        self._pending = []
        self._pending_bytes = 0
        if batch:
            self._send_error = None
            self._sender = threading.Thread(
                target=self._send, args=(batch, upto), name=f"{self.name}:send", daemon=True
            )
            self._sender.start()
        else:
            self._delivered_to(upto)

    def _send(self, batch: list[Event], upto: int) -> None:
        """The sender thread: deliver, then move the cursor; the consumer re-raises errors."""
        try:
            self._deliver(batch)
            self._delivered_to(upto)
        except BaseException as e:
            self._send_error = e  # raised again in the consumer thread by `_collect`

    def _delivered_to(self, upto: int) -> None:
        self._delivered = upto
        self.state.position = upto
        if time.monotonic() - self._committed_at >= self._commit_every_s:
            self._commit(upto)

    def _collect(self, *, wait: bool = True) -> bool:
        """Finish with the batch in flight, re-raising what its delivery raised; False when
        one is still in flight and `wait` is False."""
        sender = self._sender
        if sender is None:
            return True
        if not wait and sender.is_alive():
            return False
        sender.join()  # bounded: a send returns within the sink's timeout, a wait on stop
        self._sender = None
        error, self._send_error = self._send_error, None
        if error is not None:
            # Nothing after the last delivered reading is delivered: what is pending or read
            # past it must not reach the cursor (`finish` commits `_upto` with none pending).
            self._upto = self._delivered
            self._pending = []
            self._pending_bytes = 0
            raise error
        return True

    def _deliver(self, batch: list[Event]) -> None:
        parts: deque[list[Event]] = deque([batch])
        refused: list[tuple[Event, Outcome]] = []  # single readings refused, none accepted yet
        accepted = False
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
                accepted = True
                refused = self._dead_letters(refused)  # others were accepted beside them
            elif outcome.kind in ("too_large", "rejected") and len(part) > 1:
                half = len(part) // 2
                parts.extendleft([part[half:], part[:half]])
            elif outcome.kind == "rejected" and not accepted:
                refused.append((part[0], outcome))
                if self._endpoint_spared(refused, parts, len(batch)):
                    accepted = True  # bad readings at the head of the batch, not the endpoint
                    refused = self._dead_letters(refused)
            elif outcome.kind in ("too_large", "rejected"):
                self._dead_letter(part[0], outcome)
            else:
                parts.appendleft(part)
                self._wait_after(outcome)
        self._dead_letters(refused)  # refused for different reasons: about the readings

    def _dead_letters(self, refused: list[tuple[Event, Outcome]]) -> list[tuple[Event, Outcome]]:
        for event, why in refused:
            self._dead_letter(event, why)
        return []

    def _endpoint_spared(
        self, refused: list[tuple[Event, Outcome]], parts: deque[list[Event]], n: int
    ) -> bool:
        """After a refusal with nothing accepted: pause when the endpoint refuses everything
        (Restart); True when the batch's last reading is accepted; False while unsure."""
        alike = _refused_alike(refused)
        if alike < min(PAUSE_AFTER_REFUSALS, n):
            return False
        if self._last_accepted(parts):
            return True
        if alike < PAUSE_AFTER_REFUSALS:
            self._wait_for_more(refused[-1][1])
        self._pause_for_endpoint(refused[-1][1], alike)
        return False  # not reached: both raise Restart

    def _wait_for_more(self, outcome: Outcome) -> None:
        """A batch too small to tell a bad reading from a bad endpoint: retry soon with a
        batch that has grown (a lone bad reading is dead-lettered once one after it is taken)."""
        if self.state.attempts == 0:
            log.warning(
                "sink %s: %s; retrying with the readings that follow",
                self.config.name,
                outcome.detail,
            )
        self.state.state = "retrying"
        self._commit(self._delivered)  # the restart reads on from here, re-sending nothing
        self._failed(outcome.detail, self.backoff.next_wait())
        raise Restart

    def _last_accepted(self, parts: deque[list[Event]]) -> bool:
        """Send the batch's last reading alone (taking it out of `parts`); True when accepted.

        Readings refused alike at the head of a batch may be bad readings in a row; the last
        one, far from them, tells: an endpoint that refuses everything refuses it too."""
        if not parts:
            return False
        last = parts[-1][-1]
        self.state.requests += 1
        if self.sink.send([last]).kind != "ack":
            return False
        self._acked([last])
        parts[-1] = parts[-1][:-1]
        if not parts[-1]:
            parts.pop()
        return True

    def _acked(self, part: list[Event]) -> None:
        st = self.state
        now = time.time_ns()
        if st.failing_since_ns is not None:
            log.warning(
                "sink %s: delivering again after %s over %s; last error: %s",
                self.config.name,
                counted(st.attempts, "failed attempt"),
                human_age((now - st.failing_since_ns) / 1e9),
                st.last_error,
            )
            st.recovered_ns = now
            st.failing_since_ns = None
        self.backoff.reset()
        st.paused_reason = None
        st.attempts = 0
        st.retry_at_ns = None
        st.delivered += len(part)
        st.last_ok_ns = now

    def _wait_after(self, outcome: Outcome) -> None:
        name = self.config.name
        if outcome.kind == "unauthorized":
            wait = float(self.config.retry_max)
            if self.state.paused_reason != "credentials":
                log.error(
                    "sink %s: the receiver refuses our credentials (%s); paused, trying again "
                    "every %.0fs or on `pilog retry %s`. Check token_file or $PILOG_SINK_*_TOKEN.",
                    name,
                    outcome.detail,
                    wait,
                    name,
                )
            self.state.state = "paused"
            self.state.paused_reason = "credentials"
        else:
            wait = self.backoff.next_wait(outcome.retry_after_s)
            self.state.state = "retrying"
            if self.state.attempts == 0:
                log.warning("sink %s: %s; retrying", name, outcome.detail)
        self._failed(outcome.detail, wait)

    def _pause_for_endpoint(self, outcome: Outcome, refused: int) -> None:
        """Every reading is refused alike: keep them all, say what to fix, wait, start over."""
        name = self.config.name
        wait = float(self.config.retry_max)
        if self.state.paused_reason != "endpoint":
            log.error(
                "sink %s: %s refuses every reading alike (%s; %d in a row, none accepted); "
                "paused with nothing dead-lettered, trying again every %.0fs or on "
                "`pilog retry %s`. %s",
                name,
                self.sink.where(),
                outcome.detail,
                refused,
                wait,
                name,
                endpoint_fix(self.config, outcome),
            )
        self.state.state = "paused"
        self.state.paused_reason = "endpoint"
        self._commit(self._delivered)  # the restart reads on from here, re-sending nothing
        self._failed(outcome.detail, wait)
        # Start over with a fresh batch: if the refusals were about these readings after all,
        # a later reading that is accepted turns them into dead letters.
        raise Restart

    def _failed(self, detail: str, wait_s: float) -> None:
        """Note a failed send, then wait `wait_s` (cut short by `wake` or stop)."""
        now = time.time_ns()
        if self.state.failing_since_ns is None:
            self.state.failing_since_ns = now
        self.state.attempts += 1
        self.state.retries += 1
        self.note_error(detail)
        self.state.retry_at_ns = now + int(wait_s * 1e9)
        self._sleep(wait_s)

    def _sleep(self, wait_s: float) -> None:
        self._wake.clear()
        self._waiting = True
        try:
            deadline = time.monotonic() + wait_s
            while not self.stop.is_set():
                left = deadline - time.monotonic()
                # Slices bound how long a bare stop event (no `wake`) takes to be seen.
                if left <= 0 or self._wake.wait(min(left, IDLE_WAIT_S)):
                    return
        finally:
            self._waiting = False

    def wake(self) -> bool:
        """Cut a wait for the next attempt short; True when this sink was waiting."""
        waiting = self._waiting
        self._wake.set()
        return waiting

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
        with self._commit_lock:  # two threads may commit: the cursor never moves back
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
        self._collect()
        resume = max(rewind.resume_seq or 0, rewind.to_seq + 1)
        self.log.update_index("replay", lambda i: i.finish_rewind(self.name, resume))
        self._rewind = None
        log.warning("sink %s: replay done; resuming at seq %d", self.config.name, resume)
        raise Restart


def _refused_alike(refused: list[tuple[Event, Outcome]]) -> int:
    """How many of the last refusals have the status of the very last one."""
    status = refused[-1][1].status
    n = 0
    for _, outcome in reversed(refused):
        if outcome.status != status:
            break
        n += 1
    return n


def endpoint_fix(config: SinkConfig, outcome: Outcome) -> str:
    """The likely fix when a receiver refuses every reading alike."""
    about_url = outcome.status in ENDPOINT_STATUSES or "path" in outcome.detail.lower()
    if config.type == "influx-line":
        fix = (
            "Check the url: for influx-line it is the server's base URL (e.g. "
            "http://127.0.0.1:8428), pilog appends the write path (/api/v2/write with "
            'api = "v2", /write with api = "v1")'
        )
        return fix + ("." if about_url else "; and check org, bucket or database.")
    if about_url:
        return "Check the url: the receiver has no such endpoint."
    return "Check the url and what the receiver expects; then restart pilog or run pilog retry."


def _stored_size(reading: Reading) -> int:
    """A cheap estimate of a reading's size in a request, for `batch_max_bytes`."""
    return 64 + len(reading.sensor) + len(reading.sensor_type) + 24 * len(reading.values)


def _append_line(path: Path, line: str) -> None:
    make_dirs(path.parent, mode=PARENT_DIR_MODE)
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
