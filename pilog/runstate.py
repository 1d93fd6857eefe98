"""The live state of one `pilog run`, as one typed snapshot.

`pilog status` (over the control socket, msgspec-encoded and decoded back into these types)
and `/metrics` render the same `RunSnapshot`, taken at one moment, so the two never disagree
about a number. A snapshot is built from the running objects (`snapshot`), never from disk but
for the wall time of the oldest event a consumer has not handled (one read, cached per seq).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec

from pilog.consumers.base import Consumer, ConsumerState
from pilog.durability import Durability
from pilog.errors import LogError
from pilog.events import decode_event
from pilog.log.reader import LogReader


class WriterView(msgspec.Struct, frozen=True):
    """The writer's position and health, and what it wrote since the start."""

    next_seq: int
    durable_seq: int
    backlog_fraction: float
    full: bool
    refusing: bool
    io_error: str | None
    appended: int  # events appended since start
    bytes_written: int  # frame bytes written to segments since start
    syncs: int
    sync_seconds_sum: float
    sync_buckets: list[int]  # fdatasync durations per SYNC_SECONDS_BUCKETS bound (not cumulative)
    log_bytes: int  # the segments on disk
    max_bytes: int


class StorageView(msgspec.Struct, frozen=True):
    kind: str
    device: str
    flash: bool


class DurabilityView(msgspec.Struct, frozen=True):
    """The power-cut window of the running config (`pilog.durability.Durability`)."""

    fsync: str
    window_ms: int | None
    why: str
    storage: StorageView
    advice: str
    summary: str

    @classmethod
    def of(cls, window: Durability) -> DurabilityView:
        s = window.storage
        return cls(
            window.fsync,
            window.window_ms,
            window.why,
            StorageView(s.kind, s.device, s.flash),
            window.advice,
            window.summary(),
        )


class DriverView(msgspec.Struct, frozen=True):
    sensor: str
    driver: str
    state: str
    readings: int
    failures: int
    dropped: int
    last_error: str
    restart_in_s: float


class ClockView(msgspec.Struct, frozen=True):
    steps: int
    last_step_ns: int | None
    last_step_at_ns: int | None


class ConsumerView(msgspec.Struct, frozen=True):
    """One sink or projection: where it is, how far behind, and how its last sends went.

    `lag_events` counts durable events from `position` (the next seq it has not handled; the
    oldest event on disk for a consumer that never committed) to the durable end, and
    `oldest_ns` is the wall time of the first of them (None when it is caught up).
    """

    name: str
    next_seq: int | None  # committed cursor
    position: int
    lag_events: int
    oldest_ns: int | None
    state: str
    paused_reason: str | None
    last_ok_ns: int | None
    last_error: str | None
    last_error_ns: int | None
    failing_since_ns: int | None
    recovered_ns: int | None
    retry_at_ns: int | None
    attempts: int
    retries: int
    delivered: int
    requests: int
    dead_letters: int
    gaps: int
    extra: dict[str, int]


class RunSnapshot(msgspec.Struct, frozen=True):
    """Everything only the running process knows, at `wall_ns`."""

    pid: int
    started_ns: int
    wall_ns: int
    writer: WriterView
    durability: DurabilityView
    drivers: list[DriverView]
    consumers: list[ConsumerView]
    clock: ClockView
    repairs: int  # incidents recorded in the index, for /metrics
    gaps: int


EventTime = Callable[[int], int | None]  # seq -> wall time of that event, None when unreadable


class OldestCache:
    """Wall time of the event at a seq, read once per seq (a consumer's position moves rarely
    while it is behind, which is when it matters)."""

    def __init__(self, consumer: Consumer) -> None:
        self._reader = LogReader(consumer.log.paths.log_dir)
        self._seq = -1
        self._ts: int | None = None

    def at(self, seq: int) -> int | None:
        if seq != self._seq:
            self._seq, self._ts = seq, _read_ts(self._reader, seq)
        return self._ts


def _read_ts(reader: LogReader, seq: int) -> int | None:
    try:
        for batch in reader.read_batches(seq):
            for s, payload in batch:
                if s >= seq:
                    return decode_event(s, payload).ts_ns
    except (LogError, OSError, msgspec.DecodeError):
        return None  # damage is reported by the consumer itself
    return None


def consumer_view(
    state: ConsumerState, position: int, durable_seq: int, event_time: EventTime
) -> ConsumerView:
    lag = max(0, durable_seq + 1 - position)
    return ConsumerView(
        name=state.name,
        next_seq=state.next_seq,
        position=position,
        lag_events=lag,
        oldest_ns=event_time(position) if lag else None,
        state=state.state,
        paused_reason=state.paused_reason,
        last_ok_ns=state.last_ok_ns,
        last_error=state.last_error,
        last_error_ns=state.last_error_ns,
        failing_since_ns=state.failing_since_ns,
        recovered_ns=state.recovered_ns,
        retry_at_ns=state.retry_at_ns,
        attempts=state.attempts,
        retries=state.retries,
        delivered=state.delivered,
        requests=state.requests,
        dead_letters=state.dead_letters,
        gaps=state.gaps,
        extra={k: int(v) for k, v in state.extra.items()},
    )


def consumer_views(
    consumers: Iterable[Consumer], durable_seq: int, cache: dict[str, OldestCache]
) -> list[ConsumerView]:
    """Each consumer's view; `cache` keeps the oldest-event reads between snapshots."""
    out = []
    for c in consumers:
        st = c.state
        position = st.position if st.position is not None else st.next_seq
        if position is None:
            position = c.oldest_seq()  # never committed: it starts at the oldest event
        times = cache.setdefault(c.name, OldestCache(c))
        out.append(consumer_view(st, position, durable_seq, times.at))
    return out


def encode(snap: RunSnapshot) -> bytes:
    return msgspec.json.encode(snap)


def decode(data: bytes) -> RunSnapshot:
    """The snapshot a running pilog sent; msgspec.ValidationError when it is not one."""
    return msgspec.json.decode(data, type=RunSnapshot)
