"""The `latest` projection: the last value of every sensor field, with its time and seq.

Key: `sensor NUL field NUL` (UTF-8). Value: a MessagePack array
`[value, ts_ns, seq, sensor_type]`, `ts_ns` the reading's corrected time (as sinks send it:
pilog/consumers/clock.py). "Last" is by seq, not by wall time (invariant 8): after a
wall-clock step backwards the newer reading still wins although its timestamp is older.
Strings and bools are kept as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import lmdb
import msgspec

from pilog.config import ProjectionConfig, projection_name
from pilog.events import Event, Reading, Value
from pilog.plugins import NoOptions
from pilog.projections.base import ProjectionMeta, StateDb, series_key, split_series_key
from pilog.projections.lmdb_store import Snapshot

META = ProjectionMeta("latest")


class LatestValue(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """The last value of one sensor field."""

    value: Value
    ts_ns: int
    seq: int
    sensor_type: str


class LatestRow(msgspec.Struct, gc=False, frozen=True):
    """A stored `LatestValue` with the names of its sensor and field, for readers."""

    sensor: str
    field: str
    value: Value
    ts_ns: int
    seq: int
    sensor_type: str


_encode = msgspec.msgpack.Encoder().encode
_decoder = msgspec.msgpack.Decoder(LatestValue)


class LatestProjection:
    """Last value, time and seq per (sensor, field)."""

    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    extra: ClassVar[str | None] = None
    meta = META

    @classmethod
    def from_config(
        cls, config: ProjectionConfig, options: NoOptions, db: StateDb
    ) -> LatestProjection:
        return cls(projection_name(config), db)

    def __init__(self, name: str, db: StateDb) -> None:
        self.name = name
        self._db = db
        self._pending: dict[bytes, LatestValue] = {}

    def apply(self, events: Sequence[Event]) -> None:
        pending = self._pending
        for event in events:
            body = event.body
            if not isinstance(body, Reading):
                continue
            for field, value in body.values.items():
                key = series_key(body.sensor, field)
                if key is not None:  # a NUL in a name cannot be keyed; such fields are skipped
                    pending[key] = LatestValue(value, event.ts_ns, event.seq, body.sensor_type)

    def flush(self, txn: lmdb.Transaction[bytes]) -> None:
        # Sorted: lmdb inserts in key order touch each leaf page once.
        for key in sorted(self._pending):
            self._db.put(txn, key, _encode(self._pending[key]))

    def committed(self) -> None:
        self._pending.clear()

    def clear(self, txn: lmdb.Transaction[bytes]) -> None:
        self._db.clear(txn)
        self._pending.clear()


def read_latest(snapshot: Snapshot, name: str, sensor: str | None = None) -> list[LatestRow]:
    """Every stored latest value of projection `name` (of one sensor), by sensor and field."""
    prefix = b"" if sensor is None else sensor.encode() + b"\x00"
    rows = []
    for key, raw in snapshot.items_with_prefix(name, prefix):
        sensor_name, field, _ = split_series_key(key)
        v = _decoder.decode(raw)
        rows.append(LatestRow(sensor_name, field, v.value, v.ts_ns, v.seq, v.sensor_type))
    return rows


PROJECTION = LatestProjection
