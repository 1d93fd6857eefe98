"""The lmdb environment under DATA_DIR/projections: one sub-database per projection, cursors.

Sub-databases: `state:<name>` holds a projection's keys, `cursors` maps a name to its next seq
(8 bytes, big-endian), `meta` maps a name to its `ProjectionMeta`. A projection's state and
its cursor are written in one write transaction (invariant 4).

One environment per process: lmdb's locks are per (process, file), so opening it twice in one
process is refused by py-lmdb. Readers in other processes (`pilog show`) open it read-only
while `pilog run` writes; lmdb's MVCC gives them the last committed snapshot, never a torn one.

The map (address space, not disk; see lmdb_map.py) grows when a write transaction finds it
full: the transaction is aborted, the map doubled and the transaction run again, so writers
pass their work as a function (`_write`). Every transaction of the process passes a
`TxnGate` that keeps them out of the remap. A reader maps what the file holds and adopts a
map the writer grew when lmdb says so (`MDB_MAP_RESIZED`).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import lmdb
import msgspec

from pilog.events import Event
from pilog.log import naming
from pilog.log.fsio import make_dirs
from pilog.projections.base import (
    Projection,
    ProjectionError,
    ProjectionFullError,
    ProjectionMeta,
)
from pilog.projections.lmdb_map import (
    MapLimits,
    TxnGate,
    address_space_free,
    is_32bit,
    map_limits,
    size_text,
    whole_pages,
)

log = logging.getLogger("pilog.projections")

T = TypeVar("T")
LOCK_FILE_MODE = 0o660  # lmdb readers write their slot in lock.mdb; see _share_lock_file
MAX_DBS = 64  # one `state:<name>` per projection, plus `cursors` and `meta`
_CURSORS = b"cursors"
_META = b"meta"
_CURSOR = struct.Struct(">Q")
_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(ProjectionMeta)


def projections_path(data_dir: Path) -> Path:
    return data_dir / naming.PROJECTIONS_DIR


def _state_db_name(name: str) -> bytes:
    return b"state:" + name.encode()


def prefix_end(prefix: bytes) -> bytes | None:
    """The least key greater than every key starting with `prefix` (None: no such key)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class SubDb:
    """One projection's sub-database (the `StateDb` of base.py)."""

    def __init__(self, store: ProjectionStore, db: lmdb._Database | None) -> None:
        self._store = store
        self._db = db  # None: a reader found no such sub-database yet; it reads as empty

    @property
    def missing(self) -> bool:
        return self._db is None

    def get(self, key: bytes) -> bytes | None:
        if self._db is None:
            return None
        with self._store.read(self._db) as txn:
            return txn.get(key)

    def last_in(self, prefix: bytes) -> bytes | None:
        if self._db is None:
            return None
        with self._store.read(self._db) as txn:
            return last_key_in(txn.cursor(), prefix)

    def get_in(self, txn: lmdb.Transaction[bytes], key: bytes) -> bytes | None:
        return None if self._db is None else txn.get(key, db=self._db)

    def put(self, txn: lmdb.Transaction[bytes], key: bytes, value: bytes) -> None:
        txn.put(key, value, db=self._db)

    def delete(self, txn: lmdb.Transaction[bytes], key: bytes) -> None:
        txn.delete(key, db=self._db)

    def delete_range(self, txn: lmdb.Transaction[bytes], start: bytes, end: bytes) -> int:
        cursor = txn.cursor(db=self._db)
        deleted = 0
        # Seek again after each delete: past the last key, py-lmdb's delete() still returns
        # True and leaves the cursor unpositioned (key() == b"").
        while cursor.set_range(start) and cursor.key() < end:
            cursor.delete()
            deleted += 1
        return deleted

    def clear(self, txn: lmdb.Transaction[bytes]) -> None:
        assert self._db is not None  # only readers lack the sub-database, and they never write
        txn.drop(self._db, delete=False)

    def items(
        self, txn: lmdb.Transaction[bytes], start: bytes, end: bytes | None
    ) -> Iterator[Item]:
        """(key, value) in [start, end) in key order, within the caller's transaction."""
        if self._db is None:
            return
        cursor = txn.cursor(db=self._db)
        if not cursor.set_range(start):
            return
        for key, value in cursor:
            if end is not None and key >= end:
                return
            yield key, value


Item = tuple[bytes, bytes]


def last_key_in(cursor: lmdb.Cursor[bytes], prefix: bytes) -> bytes | None:
    """The greatest key starting with `prefix` that `cursor`'s database holds, or None."""
    end = prefix_end(prefix)
    if end is None:
        found = cursor.last()
    elif cursor.set_range(end):
        found = cursor.prev()  # the key just below `end`
    else:
        found = cursor.last()  # nothing at or after `end`: the candidate is the very last key
    if not found:
        return None
    key = cursor.key()
    return key if key.startswith(prefix) else None


class ProjectionStore:
    """The projections' lmdb environment: state, cursors and meta of every projection.

    A writer's map starts at `map_size` and doubles when full, up to `map_size_max` (None:
    what the address space affords, lmdb_map.py). When it cannot grow, writes raise
    `ProjectionFullError` naming the fix and reads go on; after a remap that failed (no
    address space), lmdb has no map left and every call raises it.
    """

    def __init__(
        self,
        path: Path,
        *,
        readonly: bool = False,
        map_size: int | None = None,
        map_size_max: int | None = None,
    ) -> None:
        self.path = path
        self.readonly = readonly
        self.limits = map_limits(map_size, map_size_max)
        self._gate = TxnGate()
        self._broken: str | None = None  # why the environment is unusable (a failed remap)
        self.env = _open_env(path, readonly, self.limits)
        try:
            self._subdbs: dict[str, SubDb] = {}
            self._cursors = self._open_db(_CURSORS)
            self._meta = self._open_db(_META)
            if not readonly:
                # A reader killed mid-transaction (kill -9 of `pilog show`) leaves its slot
                # taken, which pins old pages and grows the file; the writer clears dead
                # slots at start (and when the map is full, see `_make_room`).
                self.env.reader_check()
        except BaseException:
            self.env.close()
            raise

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def read(self, db: lmdb._Database | None = None) -> Iterator[lmdb.Transaction[bytes]]:
        """A read transaction (on `db` by default), after adopting a map the writer grew."""
        while True:
            self._check()
            with self._gate.txn():
                try:
                    txn = self.env.begin(db=db)
                except lmdb.MapResizedError:
                    pass  # the data grew past this process's map: adopt it, outside the gate
                else:
                    with txn:
                        yield txn
                    return
            self._adopt_grown_map()

    def _write(self, work: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """`work` in one write transaction; when the map is full, grow it and run `work`
        again in a new one (so `work` must leave memory as it found it until the commit)."""
        while True:
            self._check()
            try:
                with self._gate.txn():
                    full_at = self._map_bytes()
                    with self.env.begin(write=True) as txn:
                        return work(txn)
            except lmdb.MapFullError:
                self._make_room(full_at)

    def map_size(self) -> int:
        """The size of the map now, in bytes."""
        self._check()
        with self._gate.txn():
            return self._map_bytes()

    def _map_bytes(self) -> int:
        # Within the gate: lmdb reads the meta page through the map, which a remap replaces.
        return int(self.env.info()["map_size"])

    def _check(self) -> None:
        if self._broken is not None:
            raise ProjectionFullError(self._broken)

    def _make_room(self, full_at: int) -> None:
        """After MDB_MAP_FULL with a map of `full_at` bytes: free what dead readers pinned,
        else grow the map; ProjectionFullError when it cannot grow."""
        with self._gate.alone():
            self._check()
            current = self._map_bytes()
            if current > full_at:
                return  # another thread grew it meanwhile
            if self.env.reader_check():
                return  # their pages are free again: try once more before growing
            new = self.limits.grown(current)
            if new is None:
                raise ProjectionFullError(_full_message(self.path, current))
            if not address_space_free(new):
                raise ProjectionFullError(_no_room_message(self.path, current, new))
            self._remap(new, f"grow the map from {size_text(current)} to {size_text(new)}")
        log.warning(
            "projections in %s: the lmdb map was full at %s; grew it to %s (at most %s)",
            self.path,
            size_text(current),
            size_text(new),
            size_text(self.limits.ceiling),
        )

    def _adopt_grown_map(self) -> None:
        """A reader: map what the file holds now (the writer grew it past this map)."""
        with self._gate.alone():
            self._check()
            size = max(self._map_bytes(), _file_bytes(self.path))
            self._remap(size, f"map the grown file ({size_text(size)})")

    def _remap(self, size: int, what: str) -> None:
        """`env.set_mapsize`; a failure leaves the environment unusable (lmdb unmapped the
        old map first): close it and make every later call raise why."""
        try:
            self.env.set_mapsize(size)
        except lmdb.Error as e:
            self._broken = _remap_message(self.path, what, e)
            with contextlib.suppress(lmdb.Error):
                self.env.close()
            raise ProjectionFullError(self._broken) from e

    def _open_db(self, name: bytes) -> lmdb._Database | None:
        # Without a txn of ours: py-lmdb keeps a handle only from a transaction it commits.
        while True:
            self._check()
            try:
                with self._gate.txn():
                    full_at = self._map_bytes()
                    return self.env.open_db(name, create=not self.readonly)
            except lmdb.NotFoundError:
                return None  # a reader: nothing committed under this name yet
            except lmdb.MapResizedError:
                self._adopt_grown_map()
            except lmdb.MapFullError:
                self._make_room(full_at)  # creating a sub-database is a write transaction

    # -- projections --------------------------------------------------------------------

    def db(self, name: str) -> SubDb:
        """The sub-database of projection `name` (a reader sees a missing one as empty)."""
        sub = self._subdbs.get(name)
        if sub is None:
            sub = SubDb(self, self._open_db(_state_db_name(name)))
            if not sub.missing:  # a reader looks again next time: the writer may create it
                self._subdbs[name] = sub
        return sub

    def cursor(self, name: str) -> int | None:
        """The next seq projection `name` handles; None if it never committed."""
        with self.read() as txn:
            return self._get_cursor(txn, name)

    def _get_cursor(self, txn: lmdb.Transaction[bytes], name: str) -> int | None:
        if self._cursors is None:
            return None
        raw = txn.get(name.encode(), db=self._cursors)
        return None if raw is None else int(_CURSOR.unpack(raw)[0])

    def metas(self) -> dict[str, ProjectionMeta]:
        """The meta of every projection ever prepared here, by name."""
        if self._meta is None:
            return {}
        with self.read(self._meta) as txn:
            return {k.decode(): _meta_decoder.decode(v) for k, v in txn.cursor()}

    @contextmanager
    def snapshot(self) -> Iterator[Snapshot]:
        """One read transaction: cursors and state as one commit left them.

        Sub-databases are opened before it begins: lmdb refuses a handle in a transaction
        older than the handle. It sees the projections of `metas` and those opened by `db`.
        """
        for name in self.metas():
            self.db(name)
        with self.read() as txn:
            yield Snapshot(self, txn)

    def prepare(self, projection: Projection) -> bool:
        """Record the projection's meta; reset it first if its stored meta differs.

        Returns True when stored state was reset (the projection's definition changed).
        """
        stored = self.metas().get(projection.name)
        if stored == projection.meta:
            return False

        def record(txn: lmdb.Transaction[bytes]) -> None:
            if stored is not None:
                self._reset(txn, projection)
            txn.put(projection.name.encode(), _meta_encoder.encode(projection.meta), db=self._meta)

        self._write(record)
        if stored is not None:
            log.warning(
                "projection %s changed (%s -> %s): rebuilding it from the log",
                projection.name,
                stored,
                projection.meta,
            )
        return stored is not None

    def commit(self, projection: Projection, next_seq: int) -> None:
        """Write the projection's pending state and its cursor in one transaction."""
        self.commit_many([(projection, next_seq)])

    def commit_many(self, done: Sequence[tuple[Projection, int]]) -> None:
        """Write several projections' pending state and cursors in one transaction.

        One transaction is one fdatasync and one copy of the pages every commit rewrites
        (the meta page, the free list, the cursors, the sub-database records): committing
        projections together is how they stay cheap on an SD card (invariant 10). Their
        pending state is forgotten only once it committed: a transaction aborted on a full
        map runs again, and one that failed otherwise is retried later, with it all.
        """

        def flush(txn: lmdb.Transaction[bytes]) -> None:
            for projection, next_seq in done:
                projection.flush(txn)
                txn.put(projection.name.encode(), _CURSOR.pack(next_seq), db=self._cursors)

        self._write(flush)
        for projection, _ in done:
            projection.committed()

    def reset(self, projection: Projection) -> None:
        """Delete the projection's state and cursor in one transaction."""
        self._write(lambda txn: self._reset(txn, projection))

    def _reset(self, txn: lmdb.Transaction[bytes], projection: Projection) -> None:
        projection.clear(txn)
        txn.delete(projection.name.encode(), db=self._cursors)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> ProjectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Snapshot:
    """Reads within one read transaction of a `ProjectionStore`."""

    def __init__(self, store: ProjectionStore, txn: lmdb.Transaction[bytes]) -> None:
        self._store = store
        self._txn = txn

    def cursor(self, name: str) -> int | None:
        return self._store._get_cursor(self._txn, name)

    def _db(self, name: str) -> SubDb | None:
        return self._store._subdbs.get(name)  # never opened mid-transaction (see snapshot)

    def get(self, name: str, key: bytes) -> bytes | None:
        sub = self._db(name)
        return None if sub is None else sub.get_in(self._txn, key)

    def items(self, name: str, start: bytes = b"", end: bytes | None = None) -> Iterator[Item]:
        sub = self._db(name)
        return iter(()) if sub is None else sub.items(self._txn, start, end)

    def items_with_prefix(self, name: str, prefix: bytes) -> Iterator[Item]:
        return self.items(name, prefix, prefix_end(prefix))


def _open_env(path: Path, readonly: bool, limits: MapLimits) -> lmdb.Environment:
    data = path / naming.LMDB_DATA_FILE
    if readonly and not data.exists():
        raise ProjectionError(
            f"no projections yet in {path.parent}: is a [[projection]] configured "
            "and has pilog run?"
        )
    if not readonly:
        # Made here, not by lmdb: lmdb would give the directory the files' mode, without x.
        make_dirs(path)
    # A reader maps what the file holds (lmdb raises a smaller map to the data in use), so
    # `pilog show` on a 32-bit box takes no more address space than the store needs.
    size = _file_bytes(path) if readonly else limits.initial
    try:
        env = _lmdb_open(path, readonly, size)
    except lmdb.Error as e:
        raise _env_error(path, readonly, size, e) from e
    if not readonly:
        _share_lock_file(path)
    return env


def _lmdb_open(path: Path, readonly: bool, size: int) -> lmdb.Environment:
    # sync=True, metasync=False: one fdatasync of the data pages per commit instead of two
    # (data, then meta page), at most every commit_interval (invariant 10). lmdb keeps its
    # integrity; a power cut may undo the last commit, and since state and cursor commit
    # together that only means replaying those events from the log (invariant 1).
    # writemap stays off: with it, a stray write through the map could corrupt the file.
    return lmdb.open(
        str(path),
        map_size=size,
        subdir=True,
        readonly=readonly,
        create=not readonly,
        sync=True,
        metasync=False,
        writemap=False,
        max_dbs=MAX_DBS,
        mode=0o640,
        # Readers keep the lock file: lmdb's docs allow MDB_NOLOCK only when no reader
        # uses an old transaction while a writer is active, and `pilog show` runs beside
        # `pilog run`, whose commits reuse the pages a lock-less reader may be reading.
        # A reader takes a slot in lock.mdb, so the writer makes it group-writable.
        lock=True,
    )


def _share_lock_file(path: Path) -> None:
    """Make lock.mdb writable by the group: group members' `pilog show` takes a slot in it.

    lmdb creates it with the data file's mode less the umask (0640 under `pilog run`); a
    group member could at worst disturb the lock table, the data file stays read-only to it.
    """
    lock = path / naming.LMDB_LOCK_FILE
    try:
        os.chmod(lock, LOCK_FILE_MODE)
    except OSError as e:
        log.warning(
            "projections in %s: cannot make %s group-writable (%s): members of its group "
            "cannot run `pilog show`; chown it to the user pilog runs as",
            path,
            lock,
            e.strerror or e,
        )


def _file_bytes(path: Path) -> int:
    """The size of the data file in whole pages (at least one)."""
    try:
        return whole_pages(max(1, (path / naming.LMDB_DATA_FILE).stat().st_size))
    except FileNotFoundError:
        return whole_pages(1)


def _env_error(path: Path, readonly: bool, size: int, e: lmdb.Error) -> ProjectionError:
    if "Permission denied" in str(e) or getattr(e, "code", None) == errno.EACCES:
        if readonly:
            return ProjectionError(
                f"cannot read projections in {path}: permission denied (a reader writes its "
                f"slot in {path / naming.LMDB_LOCK_FILE}, which `pilog run` makes "
                "group-writable when it starts): restart pilog once after upgrading, and "
                "check that this user is in the group that owns the data dir"
            )
        return ProjectionError(f"cannot open projections in {path}: permission denied")
    if _out_of_address_space(e):
        return ProjectionFullError(_map_open_message(path, readonly, size, e))
    return ProjectionError(f"cannot open projections in {path}: {e}")


def _out_of_address_space(e: lmdb.Error) -> bool:
    return isinstance(e, lmdb.MemoryError) or "Cannot allocate memory" in str(e)


def _bits() -> str:
    return "32-bit" if is_32bit() else "64-bit"


_REBUILT = "stop pilog and delete {path}: projections are rebuilt from the log on the next start"


def _map_open_message(path: Path, readonly: bool, size: int, e: lmdb.Error) -> str:
    """Opening failed for want of address space: what to change."""
    held = size_text(_file_bytes(path))
    if readonly:
        fix = f"the store holds {held}; a smaller one: " + _REBUILT.format(path=path)
    else:
        fix = (
            f'set a smaller map in pilog.toml, e.g. [projections] map_size = "256MiB" (the '
            f"store holds {held} now; the map grows when full), or "
        ) + _REBUILT.format(path=path)
    return (
        f"cannot map the projections in {path}: {size_text(size)} of address space is not "
        f"free in this {_bits()} process ({e}); {fix}"
    )


def _full_message(path: Path, size: int) -> str:
    """The map is at its ceiling: what to change. The projections pause; logging goes on."""
    return (
        f"the projections in {path} are full: their lmdb map is at its ceiling of "
        f"{size_text(size)} ([projections] map_size_max; {_bits()} process). Raise "
        f"map_size_max (and map_size) in pilog.toml and restart pilog; or rebuild them with "
        f"`pilog replay --projection NAME --from 0` (fewer windows take less); or "
        + _REBUILT.format(path=path)
    )


def _no_room_message(path: Path, size: int, new: int) -> str:
    """The map is full and the address space has no room for the larger one."""
    return (
        f"the projections in {path} are full: their lmdb map of {size_text(size)} cannot grow "
        f"to {size_text(new)}, this {_bits()} process has no room for it in its address "
        f'space. Set [projections] map_size = "{size_text(new)}" in pilog.toml (mapped at '
        f"start, while the address space is free) and restart pilog; or rebuild them with "
        f"`pilog replay --projection NAME --from 0` (fewer windows take less); or "
        + _REBUILT.format(path=path)
    )


def _remap_message(path: Path, what: str, e: lmdb.Error) -> str:
    """Remapping failed (address space): the environment is closed until pilog restarts."""
    room = " (no room in the address space)" if _out_of_address_space(e) else ""
    return (
        f"cannot {what} of the projections in {path}: {e}{room}; they are paused until pilog "
        f"restarts. Set [projections] map_size_max in pilog.toml below what failed, or "
        + _REBUILT.format(path=path)
    )


class ProjectionRunner:
    """One projection fed by a consumer loop: batches in seq order, commits rate-limited.

    `next_seq` is the cursor: the next seq to handle (None: never ran, start at the log's
    first event). State reaches lmdb only in `commit`, together with the cursor, so a crash
    loses nothing but the work since the last commit, which the log replays.

    Runners may share a `CommitGroup`: then `maybe_commit` commits every runner of the group
    in one transaction, possibly from another runner's thread; `lock` keeps that commit and
    this runner's own `handle` apart.
    """

    def __init__(
        self, projection: Projection, store: ProjectionStore, *, commit_interval_s: float
    ) -> None:
        self.projection = projection
        self.store = store
        self.commit_interval_s = commit_interval_s
        self.lock = threading.Lock()
        self.group: CommitGroup | None = None
        store.prepare(projection)
        self.next_seq = store.cursor(projection.name)
        self.committed_seq = self.next_seq  # the cursor as lmdb has it
        self._last_commit_s: float | None = None

    @property
    def name(self) -> str:
        return self.projection.name

    @property
    def pending(self) -> bool:
        """Events were handled since the last commit."""
        return self.next_seq != self.committed_seq

    def handle(self, events: Sequence[Event]) -> None:
        """Apply a batch of consecutive events that starts at `next_seq` (or later).

        A later start means the log lost those events (drop_oldest deleted them before this
        projection read them; a `Gap` event records it): they are skipped, with a warning.
        """
        if not events:
            return
        first, last = events[0].seq, events[-1].seq
        with self.lock:
            # Re-delivery or a hole inside a batch is the consumer loop's bug, not the log's.
            assert self.next_seq is None or first >= self.next_seq, (first, self.next_seq)
            assert all(b.seq == a.seq + 1 for a, b in itertools.pairwise(events)), (first, last)
            if self.next_seq is not None and first > self.next_seq:
                log.warning(
                    "projection %s: seq %d..%d are no longer in the log; skipped",
                    self.name,
                    self.next_seq,
                    first - 1,
                )
            self.projection.apply(events)
            self.next_seq = last + 1

    def maybe_commit(self, now_mono_s: float) -> dict[str, int]:
        """Commit if something is pending and `commit_interval_s` passed since the last one
        (with the whole group, if any); return the cursors committed, by projection name."""
        if self.group is not None:
            return self.group.maybe_commit(now_mono_s)
        with self.lock:
            if not self._due(now_mono_s):
                return {}
            self._last_commit_s = now_mono_s
            return self._commit_locked()

    def _due(self, now_mono_s: float) -> bool:
        last = self._last_commit_s
        return self.pending and (last is None or now_mono_s - last >= self.commit_interval_s)

    def commit(self) -> dict[str, int]:
        """Commit pending state and the cursor now (shutdown, end of a rebuild)."""
        with self.lock:
            return self._commit_locked()

    def _commit_locked(self) -> dict[str, int]:
        seq = self.next_seq
        if seq is None or not self.pending:
            return {}
        self.store.commit(self.projection, seq)
        self.committed_seq = seq
        return {self.name: seq}

    def reset(self) -> None:
        """Forget all state and the cursor: the next batch may start anywhere."""
        with self.lock:
            try:
                self.store.reset(self.projection)
            except BaseException:
                # `clear` dropped the pending state, and the transaction that would have
                # dropped the stored state too did not commit: go on from the stored cursor.
                self.next_seq = self.committed_seq
                raise
            self.next_seq = None
            self.committed_seq = None


class CommitGroup:
    """Runners of one store and one `commit_interval`, committed in one transaction.

    The first runner whose interval has passed commits them all: each projection still
    commits at most every `commit_interval`, and the SD card sees one transaction where it
    would see one per projection (measured in tools/bench_wear.py).
    """

    def __init__(self, store: ProjectionStore, runners: Sequence[ProjectionRunner]) -> None:
        self.store = store
        self.runners = sorted(runners, key=lambda r: r.name)  # the order locks are taken in
        self.interval_s = self.runners[0].commit_interval_s
        assert all(r.commit_interval_s == self.interval_s for r in self.runners)
        self._lock = threading.Lock()
        self._last_commit_s: float | None = None
        for r in self.runners:
            r.group = self

    @classmethod
    def assign(cls, store: ProjectionStore, runners: Sequence[ProjectionRunner]) -> None:
        """Put runners of equal `commit_interval` into groups."""
        by_interval: dict[float, list[ProjectionRunner]] = {}
        for r in runners:
            by_interval.setdefault(r.commit_interval_s, []).append(r)
        for same in by_interval.values():
            cls(store, same)

    def maybe_commit(self, now_mono_s: float) -> dict[str, int]:
        with self._lock:
            last = self._last_commit_s
            # A projection that never committed does so at once, not a whole interval after
            # the other one: `pilog show` has something to show soon after the start.
            first = any(r.committed_seq is None and r.pending for r in self.runners)
            if last is not None and now_mono_s - last < self.interval_s and not first:
                return {}
            with contextlib.ExitStack() as held:
                for r in self.runners:
                    held.enter_context(r.lock)
                done = [
                    (r, seq) for r in self.runners if r.pending and (seq := r.next_seq) is not None
                ]
                if not done:
                    return {}
                self.store.commit_many([(r.projection, seq) for r, seq in done])
                for r, seq in done:
                    r.committed_seq = seq
            self._last_commit_s = now_mono_s
            return {r.name: seq for r, seq in done}
