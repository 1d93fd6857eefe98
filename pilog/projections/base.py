"""The `Projection` contract: a local view of the log, kept in one lmdb sub-database.

A projection folds events, in seq order, into keyed state. It never owns its cursor: the
store commits the projection's pending state and its cursor in one write transaction
(invariant 4), so after any crash the state on disk is exactly the fold of the events below
the stored cursor, and the log replays the rest.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Protocol

import lmdb
import msgspec

from pilog.config import ProjectionConfig
from pilog.errors import PilogError
from pilog.events import Event


class ProjectionError(PilogError):
    """Projections cannot be read or rebuilt (none yet, unknown name, sensor or field)."""


class ProjectionFullError(ProjectionError):
    """The projections' lmdb map is full and cannot grow, or does not fit in the address
    space: `pilog run` pauses its projections (logging and sinks go on); says the fix."""


class ProjectionMeta(msgspec.Struct, array_like=True, frozen=True):
    """What a stored projection is, so that readers need no config to interpret it.

    A projection whose stored meta differs from its config (rollup windows changed) is reset
    and rebuilt from the log: mixing windows of two definitions would be silently wrong.
    """

    type: str
    windows_s: tuple[int, ...] = ()
    layout: int = 1  # of the stored keys; a stored meta of another layout is rebuilt too


class StateDb(Protocol):
    """One projection's sub-database: committed reads, and writes inside a caller's txn."""

    def get(self, key: bytes) -> bytes | None:
        """The committed value of `key`, or None."""
        ...

    def last_in(self, prefix: bytes) -> bytes | None:
        """The greatest committed key that starts with `prefix`, or None."""
        ...

    def put(self, txn: lmdb.Transaction[bytes], key: bytes, value: bytes) -> None: ...

    def items(
        self, txn: lmdb.Transaction[bytes], start: bytes, end: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in [start, end) in key order, as `txn` sees them."""
        ...

    def delete(self, txn: lmdb.Transaction[bytes], key: bytes) -> None:
        """Delete `key` if it is there."""
        ...

    def delete_range(self, txn: lmdb.Transaction[bytes], start: bytes, end: bytes) -> int:
        """Delete the keys in [start, end); return how many."""
        ...

    def clear(self, txn: lmdb.Transaction[bytes]) -> None:
        """Delete every key (the sub-database itself stays)."""
        ...


class Projection(Protocol):
    """A fold of events into keyed state, flushed into an lmdb write transaction.

    Implementors guarantee:
    - `apply` is fed events in seq order, each exactly once between two commits; it keeps
      its effect in memory (reading committed values through its `StateDb` when a key is
      first touched) and writes nothing.
    - `flush(txn)` writes every pending change into `txn` (its own sub-database only) and
      keeps them pending, changing nothing else in memory: the transaction may be aborted
      (a full map is grown) and `flush` called again with a new one, or the commit retried
      later after more `apply`.
    - `committed()` follows the commit of the transaction of the last `flush`: the changes
      it wrote are no longer pending.
    - The bytes stored depend only on the sequence of events applied, never on how they were
      split into batches or commits, nor on the wall clock of the machine: a rebuild from
      the log is byte-identical to the state kept incrementally.
    - Events other than `Reading` are ignored (the cursor still moves past them).
    - `clear(txn)` deletes all stored state and drops pending state.
    """

    name: str
    meta: ProjectionMeta

    def apply(self, events: Sequence[Event]) -> None: ...

    def flush(self, txn: lmdb.Transaction[bytes]) -> None: ...

    def committed(self) -> None: ...

    def clear(self, txn: lmdb.Transaction[bytes]) -> None: ...


class ProjectionPlugin(Protocol):
    """A projection type: the class a `[[projection]]` table's `type` names (`PROJECTION` of
    a built-in). Implementors guarantee:

    - `Options` is a frozen msgspec Struct with `forbid_unknown_fields=True` holding the
      table's keys other than `type`, `name` and `commit_interval`; its `__post_init__`
      validates what types alone cannot (ValueError naming the key and the fix).
    - `extra` names the pip extra holding its optional dependencies (None: it has none); the
      class's module imports without them, `from_config` raises ImportError when one is
      missing, and `open_projection` turns that into a ConfigError naming the extra.
    - `from_config(config, options, db)` returns a `Projection` named `projection_name(config)`
      that keeps its state in `db` only; it does no I/O besides reading `db`. Its `meta`
      describes the options that change what is stored (a changed meta is rebuilt).
    """

    Options: ClassVar[type[msgspec.Struct]]
    extra: ClassVar[str | None]

    @classmethod
    def from_config(cls, config: ProjectionConfig, options: Any, db: StateDb) -> Projection: ...


KEY_SEP = b"\x00"


def series_key(sensor: str, field: str) -> bytes | None:
    """`sensor NUL field NUL` in UTF-8; None when a name holds NUL and cannot be keyed.

    The separator sorts below every other byte, so keys sort by sensor, then field, as the
    strings do ("a" before "ab").
    """
    if "\x00" in sensor or "\x00" in field:
        return None
    return sensor.encode() + KEY_SEP + field.encode() + KEY_SEP


def split_series_key(key: bytes) -> tuple[str, str, bytes]:
    """(sensor, field, rest of the key) of a key made by `series_key`."""
    sensor, field, rest = key.split(KEY_SEP, 2)
    return sensor.decode(), field.decode(), rest
