"""The `rollup` projection: count, min, max, sum and last per sensor field and time window.

For every window length `w` (whole seconds) of the config, a reading at wall time `ts_ns`
falls in the window starting at `ts_ns // w_ns * w_ns` (UTC-aligned: a 1h window starts on
the hour). `ts_ns` is the corrected time every consumer gives the reading (a stamp of 1970,
before NTP set the clock, is moved by the boot's clock step: pilog/consumers/clock.py).
Only int and float fields are aggregated: bools, strings and NaN or infinite floats are
skipped (one NaN would make every later min, max and mean of its window NaN).

Keys are time-major, so that a commit rewrites few pages (SD wear, invariant 10): the windows
still filling, of every series, sit side by side at the end of their window length's range.
(Series-major keys put each series' newest window on a page of its own: on a week-old store
a commit rewrote a page per series and window length, measured in tools/bench_wear.py.)

- `W` + window length in seconds (u32) + window start in ns (u64, biased by 2**63 so that
  pre-1970 times sort first) + `sensor NUL field NUL`, integers big-endian. Value: a
  MessagePack array `[count, min, max, sum, last, last_ts_ns, last_seq]`.
- `S` + `sensor NUL field NUL` + window length (u32): the directory of series, so readers
  find them without a scan. Value: the newest window start of that series (u64, biased).

Retention: of each window length, only windows starting within `keep_windows` window lengths
of the newest window start seen (of any series) are kept; older ones, and the directory
entries of series with nothing newer, are deleted at the next commit. The cutoff depends on
the events only, never on when commits happened, so a rebuild deletes the same.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import ClassVar, TypeGuard

import lmdb
import msgspec

from pilog.config import Duration, ProjectionConfig, projection_name
from pilog.events import Event, Reading
from pilog.projections.base import ProjectionMeta, StateDb, series_key, split_series_key
from pilog.projections.lmdb_store import Snapshot, prefix_end

NS_PER_S = 1_000_000_000
KEEP_WINDOWS = 10_000  # of each window length: a week of 1m windows, over a year of 1h ones
WINDOW_TAG = b"W"
SERIES_TAG = b"S"
_WINDOW = struct.Struct(">IQ")
_LENGTH = struct.Struct(">I")
_START = struct.Struct(">Q")
_BIAS = 1 << 63
_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1
# 2: time-major keys and a series directory (1: series-major); a stored rollup of another
# layout is rebuilt from the log (ProjectionMeta differs).
LAYOUT = 2

Number = int | float


class Window(msgspec.Struct, array_like=True, gc=False):
    """Aggregates of one sensor field over one window; mutable while pending."""

    count: int
    min: Number
    max: Number
    sum: Number
    last: Number
    last_ts_ns: int
    last_seq: int

    @property
    def mean(self) -> float:
        return self.sum / self.count


class WindowRow(msgspec.Struct, gc=False, frozen=True):
    """A stored window, for readers."""

    start_ns: int
    window_s: int
    count: int
    min: Number
    max: Number
    mean: float
    last: Number
    last_ts_ns: int
    last_seq: int


_encode = msgspec.msgpack.Encoder().encode
_decoder = msgspec.msgpack.Decoder(Window)


def window_key(series: bytes, window_s: int, start_ns: int) -> bytes:
    return WINDOW_TAG + _WINDOW.pack(window_s, start_ns + _BIAS) + series


def split_window_key(key: bytes) -> tuple[int, int, bytes]:
    """(window length in s, window start in ns, series) of a key made by `window_key`."""
    window_s, biased = _WINDOW.unpack_from(key, 1)
    return int(window_s), int(biased) - _BIAS, key[1 + _WINDOW.size :]


def _length_range(window_s: int) -> tuple[bytes, bytes]:
    """[first, end) of the keys of windows of length `window_s`."""
    return WINDOW_TAG + _LENGTH.pack(window_s), WINDOW_TAG + _LENGTH.pack(window_s + 1)


def series_entry_key(series: bytes, window_s: int) -> bytes:
    return SERIES_TAG + series + _LENGTH.pack(window_s)


def _storable(total: Number) -> Number:
    """An int sum beyond MessagePack's integers (-2**63 .. 2**64-1) goes on as a float."""
    if isinstance(total, int) and not _INT_MIN <= total <= _UINT_MAX:
        return float(total)
    return total


def is_number(value: object) -> TypeGuard[Number]:
    """True for the values a rollup aggregates: int and finite float, never bool."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


class RollupOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """`rollup`'s keys: the window lengths."""

    windows: list[Duration] = msgspec.field(  # window lengths, whole seconds
        default_factory=lambda: [Duration(60), Duration(3600)]
    )

    def __post_init__(self) -> None:
        if not self.windows or any(w < 1 or float(w) % 1 for w in self.windows):
            raise ValueError("rollup windows must be whole seconds, at least 1s")


class RollupProjection:
    """Count, min, max, mean and last per (sensor, field, window)."""

    Options: ClassVar[type[msgspec.Struct]] = RollupOptions
    extra: ClassVar[str | None] = None

    @classmethod
    def from_config(
        cls, config: ProjectionConfig, options: RollupOptions, db: StateDb
    ) -> RollupProjection:
        return cls(projection_name(config), db, [int(w) for w in options.windows])

    def __init__(
        self, name: str, db: StateDb, windows_s: Sequence[int], keep_windows: int = KEEP_WINDOWS
    ) -> None:
        self.name = name
        self.meta = ProjectionMeta("rollup", tuple(sorted(set(windows_s))), LAYOUT)
        self._db = db
        self._windows = [(w, w * NS_PER_S) for w in self.meta.windows_s]
        self._keep = keep_windows
        self._pending: dict[bytes, Window] = {}
        # Newest window start per window length (any series), for retention.
        self._newest: dict[int, int] = {}
        # The directory as stored or about to be (entry -> newest start; None: absent), and
        # the entries to write at the next flush. Small: one entry per series and length.
        self._known: dict[bytes, int | None] = {}
        self._changed: set[bytes] = set()
        self._pruned: list[bytes] = []  # entries the last flush deleted, for `committed`

    def apply(self, events: Sequence[Event]) -> None:
        pending = self._pending
        for event in events:
            body = event.body
            if not isinstance(body, Reading):
                continue
            for field, value in body.values.items():
                if not is_number(value):
                    continue
                series = series_key(body.sensor, field)
                if series is None:
                    continue
                for window_s, window_ns in self._windows:
                    start = event.ts_ns // window_ns * window_ns
                    key = window_key(series, window_s, start)
                    window = pending.get(key)
                    if window is None:
                        # First touch of this window since the last flush: the only time
                        # the newest starts can move (the hot path skips this).
                        self._note_newest(series, window_s, start)
                        window = self._load(key)
                        if window is None:
                            pending[key] = Window(
                                1, value, value, value, value, event.ts_ns, event.seq
                            )
                            continue
                    window.count += 1
                    window.min = min(window.min, value)
                    window.max = max(window.max, value)
                    window.sum = _storable(window.sum + value)
                    window.last = value
                    window.last_ts_ns = event.ts_ns
                    window.last_seq = event.seq

    def _load(self, key: bytes) -> Window | None:
        raw = self._db.get(key)
        if raw is None:
            return None
        window = _decoder.decode(raw)
        self._pending[key] = window
        return window

    def _note_newest(self, series: bytes, window_s: int, start: int) -> None:
        entry = series_entry_key(series, window_s)
        if entry in self._known:
            known = self._known[entry]
        else:
            raw = self._db.get(entry)
            known = None if raw is None else _START.unpack(raw)[0] - _BIAS
        if known is None or start > known:
            known = start
            self._changed.add(entry)
        self._known[entry] = known
        overall = self._newest.get(window_s)
        if overall is None:
            stored = self._db.last_in(_length_range(window_s)[0])
            overall = start if stored is None else split_window_key(stored)[1]
        self._newest[window_s] = max(overall, start)

    def _cutoff(self, window_s: int) -> int | None:
        """Windows of this length starting before this are deleted (None: none known)."""
        newest = self._newest.get(window_s)
        if newest is None:
            return None
        return newest - (self._keep - 1) * window_s * NS_PER_S

    def flush(self, txn: lmdb.Transaction[bytes]) -> None:
        cutoffs = {w: self._cutoff(w) for w, _ in self._windows}
        for key in sorted(self._pending):
            window_s, start, _ = split_window_key(key)
            cutoff = cutoffs[window_s]
            if cutoff is None or start >= cutoff:
                self._db.put(txn, key, _encode(self._pending[key]))
        for entry in sorted(self._changed):
            newest = self._known[entry]
            assert newest is not None  # only entries seen in a reading are changed
            self._db.put(txn, entry, _START.pack(newest + _BIAS))
        pruned = []
        for window_s, cutoff in sorted((w, c) for w, c in cutoffs.items() if c is not None):
            first, _ = _length_range(window_s)
            self._db.delete_range(txn, first, first + _START.pack(cutoff + _BIAS))
            pruned += self._prune_series(txn, window_s, cutoff)
        self._pruned = pruned  # of this transaction only: an aborted one is run again

    def committed(self) -> None:
        for key in self._pruned:
            self._known.pop(key, None)
        self._pruned = []
        self._pending.clear()
        self._newest.clear()
        self._changed.clear()

    def _prune_series(
        self, txn: lmdb.Transaction[bytes], window_s: int, cutoff: int
    ) -> list[bytes]:
        """Delete directory entries of series whose newest window of this length is gone."""
        length = _LENGTH.pack(window_s)
        stale = [
            key
            for key, value in self._db.items(txn, SERIES_TAG, prefix_end(SERIES_TAG))
            if key.endswith(length) and _START.unpack(value)[0] - _BIAS < cutoff
        ]
        for key in stale:
            self._db.delete(txn, key)
        return stale

    def clear(self, txn: lmdb.Transaction[bytes]) -> None:
        self._db.clear(txn)
        self._pending.clear()
        self._newest.clear()
        self._known.clear()
        self._changed.clear()
        self._pruned = []


def read_windows(
    snapshot: Snapshot,
    name: str,
    sensor: str,
    field: str,
    window_s: int,
    since_ns: int | None = None,
) -> list[WindowRow]:
    """The stored windows of one series, oldest first, those starting before `since_ns` left out.

    A window still open when `since_ns` falls inside it is included. One lookup per window
    start between the oldest kept (or `since_ns`) and the series' newest: retention bounds
    them to `KEEP_WINDOWS`.
    """
    series = series_key(sensor, field)
    if series is None:
        return []
    raw_newest = snapshot.get(name, series_entry_key(series, window_s))
    if raw_newest is None:
        return []
    newest = _START.unpack(raw_newest)[0] - _BIAS
    first_key, end_key = _length_range(window_s)
    oldest = next(snapshot.items(name, first_key, end_key), None)
    if oldest is None:
        return []
    window_ns = window_s * NS_PER_S
    start = split_window_key(oldest[0])[1]
    if since_ns is not None:
        start = max(start, since_ns // window_ns * window_ns)
    rows = []
    for start_ns in range(start, newest + 1, window_ns):
        raw = snapshot.get(name, window_key(series, window_s, start_ns))
        if raw is None:
            continue
        w = _decoder.decode(raw)
        rows.append(
            WindowRow(
                start_ns, window_s, w.count, w.min, w.max, w.mean, w.last, w.last_ts_ns, w.last_seq
            )
        )
    return rows


def list_series(snapshot: Snapshot, name: str) -> list[tuple[str, str, int]]:
    """Every (sensor, field, window length) stored, from the directory of series."""
    found = []
    for key, _ in snapshot.items_with_prefix(name, SERIES_TAG):
        sensor, field, rest = split_series_key(key[1:])
        found.append((sensor, field, int(_LENGTH.unpack(rest)[0])))
    return found


PROJECTION = RollupProjection
