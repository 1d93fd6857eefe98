"""The `rollup` projection: count, min, max, sum and last per sensor field and time window.

For every window length `w` (whole seconds) of the config, a reading at wall time `ts_ns`
falls in the window starting at `ts_ns // w_ns * w_ns` (UTC-aligned: a 1h window starts on
the hour). Only int and float fields are aggregated: bools, strings and NaN or infinite
floats are skipped (one NaN would make every later min, max and mean of its window NaN).

Key: `sensor NUL field NUL` + window length in seconds (u32) + window start in ns (u64, biased
by 2**63 so that pre-1970 times sort first), both big-endian: the windows of one series are
contiguous and in time order, so a time range is one `set_range` and a forward scan.
Value: a MessagePack array `[count, min, max, sum, last, last_ts_ns, last_seq]`.

Retention: of each (sensor, field, window length), only windows starting within
`keep_windows` window lengths of the newest window start seen are kept (fewer windows where
readings were sparse); older ones are deleted when that series is next committed. The cutoff
depends on the events only, never on when commits happened, so a rebuild deletes the same.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import TypeGuard

import lmdb
import msgspec

from pilog.events import Event, Reading
from pilog.projections.base import ProjectionMeta, StateDb, series_key, split_series_key
from pilog.projections.lmdb_store import Snapshot, prefix_end

NS_PER_S = 1_000_000_000
KEEP_WINDOWS = 10_000  # a week of 1m windows, over a year of 1h windows, per series
_WINDOW = struct.Struct(">IQ")
_LENGTH = struct.Struct(">I")
_START = struct.Struct(">Q")
_BIAS = 1 << 63
_INT_MIN, _UINT_MAX = -(1 << 63), (1 << 64) - 1

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
    return series + _WINDOW.pack(window_s, start_ns + _BIAS)


def _split_window(rest: bytes) -> tuple[int, int]:
    window_s, biased = _WINDOW.unpack(rest)
    return int(window_s), int(biased) - _BIAS


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


class RollupProjection:
    """Count, min, max, mean and last per (sensor, field, window)."""

    def __init__(
        self, name: str, db: StateDb, windows_s: Sequence[int], keep_windows: int = KEEP_WINDOWS
    ) -> None:
        self.name = name
        self.meta = ProjectionMeta("rollup", tuple(sorted(set(windows_s))))
        self._db = db
        self._windows = [(w, w * NS_PER_S) for w in self.meta.windows_s]
        self._keep = keep_windows
        self._pending: dict[bytes, Window] = {}
        # Newest window start per series prefix (series + u32 window length), for retention.
        self._newest: dict[bytes, int] = {}

    def apply(self, events: Sequence[Event]) -> None:
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
                    self._add(window_key(series, window_s, start), value, event)

    def _add(self, key: bytes, value: Number, event: Event) -> None:
        window = self._pending.get(key)
        if window is None:
            window = self._load(key)
        if window is None:
            self._pending[key] = Window(1, value, value, value, value, event.ts_ns, event.seq)
            self._note_newest(key)
            return
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

    def _note_newest(self, key: bytes) -> None:
        prefix, start = key[:-8], _split_window(key[-12:])[1]
        newest = self._newest.get(prefix)
        if newest is None:
            stored = self._db.last_in(prefix)
            newest = start if stored is None else _split_window(stored[-12:])[1]
        self._newest[prefix] = max(newest, start)

    def flush(self, txn: lmdb.Transaction[bytes]) -> None:
        for key in sorted(self._pending):
            self._db.put(txn, key, _encode(self._pending[key]))
        for prefix, newest in sorted(self._newest.items()):
            window_s = _LENGTH.unpack(prefix[-4:])[0]
            cutoff = newest - (self._keep - 1) * window_s * NS_PER_S
            self._db.delete_range(txn, prefix + bytes(8), prefix + _START.pack(cutoff + _BIAS))
        self._pending.clear()
        self._newest.clear()

    def clear(self, txn: lmdb.Transaction[bytes]) -> None:
        self._db.clear(txn)
        self._pending.clear()
        self._newest.clear()


def read_windows(
    snapshot: Snapshot,
    name: str,
    sensor: str,
    field: str,
    window_s: int,
    since_ns: int | None = None,
) -> list[WindowRow]:
    """The stored windows of one series, oldest first, those starting before `since_ns` left out.

    A window still open when `since_ns` falls inside it is included.
    """
    series = series_key(sensor, field)
    if series is None:
        return []
    prefix = series + _LENGTH.pack(window_s)
    start = prefix + bytes(8)
    if since_ns is not None:
        start = window_key(
            series, window_s, since_ns // (window_s * NS_PER_S) * window_s * NS_PER_S
        )
    rows = []
    for key, raw in snapshot.items(name, start, prefix_end(prefix)):
        w = _decoder.decode(raw)
        start_ns = _split_window(key[-12:])[1]
        rows.append(
            WindowRow(
                start_ns, window_s, w.count, w.min, w.max, w.mean, w.last, w.last_ts_ns, w.last_seq
            )
        )
    return rows


def list_series(snapshot: Snapshot, name: str) -> list[tuple[str, str, int]]:
    """Every (sensor, field, window length) stored, skipping over the windows of each."""
    found: list[tuple[str, str, int]] = []
    start = b""
    while True:
        item = next(snapshot.items(name, start), None)
        if item is None:
            return found
        sensor, field, rest = split_series_key(item[0])
        window_s = _split_window(rest)[0]
        found.append((sensor, field, window_s))
        # Past every key of this series and window length: longer than any such key.
        start = item[0][:-8] + b"\xff" * 9
