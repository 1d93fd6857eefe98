"""The SQLite index: segment catalogue, consumer cursors, incidents (gaps and repairs).

Written when a segment seals, when a cursor advances and when an incident happens; never per
event (invariant 10). WAL mode with `synchronous=NORMAL`: a power cut may lose the last
cursor moves, which only means re-delivering events the receivers de-duplicate by id.
Rebuilt from the log when missing, damaged, or from another epoch; cursors are salvaged when
the old file still yields them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from pilog.counts import counted
from pilog.events import DeadLetter, Gap, Repair, decode_record
from pilog.log import naming
from pilog.log.reader import LogReader, Progress
from pilog.log.writer import SegmentInfo

log = logging.getLogger("pilog.index")

SCHEMA_VERSION = "3"  # 2: rewinds, dead_letter incidents; 3: 1 KiB pages, cursors WITHOUT ROWID
# A cursor move is one page appended to the WAL (no fsync: synchronous=NORMAL), so the page
# size is the bytes each move costs the SD card: 1 KiB against 8 KiB for SQLite's default
# 4 KiB pages and a rowid table with its key index (docs/index-schema.md).
PAGE_SIZE_BYTES = 1024
_OUTDATED = "is of an older layout"


Incidental = Gap | Repair | DeadLetter  # the events `status` counts and lists


@dataclass(frozen=True, slots=True)
class Rewind:
    """A `pilog replay` request: re-deliver from `from_seq` (to `to_seq`, then resume)."""

    name: str
    from_seq: int
    to_seq: int | None  # inclusive; None: everything from `from_seq` on
    resume_seq: int | None  # where the consumer jumps once past `to_seq`
    applied: bool  # the consumer has rewound and is re-delivering
    requested_ns: int


@dataclass(frozen=True, slots=True)
class Incident:
    seq: int
    kind: str
    ts_ns: int
    detail: str


def _closed_index_flag(path: Path) -> str:
    """`&immutable=1` for a reader that cannot create the WAL files beside an index no one
    has open (no -wal file: pilog stopped), else "".

    A member of the data dir's group cannot create files there, and SQLite refuses a WAL
    database to a reader without -wal and -shm unless told the file cannot change. Were
    pilog to start during this read, the read may fail or be stale; it changes nothing.
    """
    wal = path.with_name(path.name + "-wal")
    if wal.exists() or os.access(path.parent, os.W_OK):
        return ""
    return "&immutable=1"


class IndexStore:
    """One connection to index.sqlite, safe to share between threads."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        if readonly:
            uri = f"file:{path}?mode=ro{_closed_index_flag(path)}"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5)
        else:
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=5)
            # Takes effect only in a new, empty file (before WAL mode and the first table).
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE_BYTES}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open_for_writer(
        cls, path: Path, log_dir: Path, epoch_hex: str, progress: Progress | None = None
    ) -> IndexStore:
        """Open read-write; rebuild from `log_dir` when missing, damaged or of another log.

        `progress` is told as segments are read, to the last byte (done == total) at the end.
        """
        cursors: dict[str, int] = {}
        problem = "missing" if not path.exists() else None
        if problem is None:
            try:
                store = cls(path)
                problem = store._problem(epoch_hex)
                if problem is None:
                    store.reconcile(log_dir, progress)
                    return store
                cursors = store._salvage_cursors(epoch_hex)
                store.close()
            except sqlite3.DatabaseError as e:
                problem = f"unreadable ({e})"
        if path.exists():
            if problem.startswith(_OUTDATED):  # an upgrade: nothing the log and cursors lack
                path.unlink()
                fate = "rebuilding it from the log, cursors kept"
            else:
                broken = path.with_name(f"{path.name}.broken-{time.time_ns()}")
                path.rename(broken)
                fate = f"kept as {broken.name}, rebuilding from the log"
            for suffix in ("-wal", "-shm"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    side.unlink()
            log.warning("index %s; %s", problem, fate)
        store = cls(path)
        store._create(epoch_hex)
        store.rebuild(log_dir, progress)
        for name, seq in cursors.items():
            store.set_cursor(name, seq)
        return store

    def _problem(self, epoch_hex: str) -> str | None:
        row = self._db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            return f"damaged ({row[0] if row else 'no answer'})"
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError:
            return "without schema"
        version = meta.get("schema_version")
        if version != SCHEMA_VERSION:
            if version is not None and version.isdigit() and int(version) < int(SCHEMA_VERSION):
                return f"{_OUTDATED} (schema version {version}, now {SCHEMA_VERSION})"
            return f"of schema version {version}"
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        if page_size != PAGE_SIZE_BYTES:
            return f"{_OUTDATED} ({page_size}-byte pages, now {PAGE_SIZE_BYTES})"
        if meta.get("epoch") != epoch_hex:
            return f"of another log (epoch {meta.get('epoch')})"
        return None

    def _salvage_cursors(self, epoch_hex: str) -> dict[str, int]:
        """Cursors of this same log, if the old file still yields them (seqs of another
        epoch mean nothing here)."""
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("epoch") != epoch_hex:
                return {}
            return dict(self._db.execute("SELECT name, next_seq FROM cursors").fetchall())
        except sqlite3.DatabaseError:
            return {}

    def _create(self, epoch_hex: str) -> None:
        schema = resources.files("pilog.index").joinpath("schema.sql").read_text()
        with self._lock, self._db:
            self._db.executescript(schema)
            self._db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("schema_version", SCHEMA_VERSION), ("epoch", epoch_hex)],
            )

    def rebuild(self, log_dir: Path, progress: Progress | None = None) -> None:
        """Catalogue every segment and re-find incidents by reading the whole log."""
        started = time.monotonic()
        segments = naming.list_segments(log_dir)
        rows, incidents = self._scan(log_dir, segments, [b for b, _ in segments], progress)
        with self._lock, self._db:
            self._db.execute("DELETE FROM segments")
            self._db.execute("DELETE FROM incidents")
            self._db.executemany("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("INSERT INTO incidents VALUES (?, ?, ?, ?)", incidents)
        if any(r[1] >= r[0] for r in rows):  # a log with events, not one just created
            log.info(
                "index rebuilt: %s, %s in %.1fs",
                counted(len(rows), "segment"),
                counted(len(incidents), "incident"),
                time.monotonic() - started,
            )

    def reconcile(self, log_dir: Path, progress: Progress | None = None) -> None:
        """Match the catalogue to the sealed segments on disk.

        A crash can fall between sealing a segment and recording it, or between deleting
        segments and forgetting them; only the difference is read from the log.
        """
        segments = naming.list_segments(log_dir)
        sealed = {b for b, _ in segments[:-1]}
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT base_seq FROM segments WHERE sealed")}
        missing = sorted(sealed - known)
        stale = sorted(known - sealed)
        rows, incidents = self._scan(log_dir, segments, missing, progress) if missing else ([], [])
        if not (rows or stale):
            return
        with self._lock, self._db:
            self._db.executemany("DELETE FROM segments WHERE base_seq = ?", [(b,) for b in stale])
            self._db.executemany("INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?)", incidents)
        log.info(
            "index reconciled: %s added, %d removed", counted(len(rows), "segment"), len(stale)
        )

    @staticmethod
    def _scan(
        log_dir: Path,
        segments: list[tuple[int, Path]],
        bases: list[int],
        progress: Progress | None = None,
    ) -> tuple[list[_SegmentRow], list[_IncidentRow]]:
        """Catalogue rows and incidents of the segments starting at `bases`."""
        reader = LogReader(log_dir)
        all_bases = [b for b, _ in segments]
        rows: list[_SegmentRow] = []
        incidents: list[_IncidentRow] = []
        meter = _ScanMeter(progress, [segments[all_bases.index(b)][1] for b in bases])
        for base in bases:
            i = all_bases.index(base)
            path = segments[i][1]
            sealed = i < len(segments) - 1
            end = all_bases[i + 1] if sealed else None
            first_ts = last_ts = None
            last_seq = base - 1
            for batch in reader.read_batches(base, progress=meter.within(path)):
                for seq, payload in batch:
                    if end is not None and seq >= end:
                        break
                    rec = decode_record(payload)
                    first_ts = rec.ts_ns if first_ts is None else first_ts
                    last_ts, last_seq = rec.ts_ns, seq
                    if isinstance(rec.body, Gap | Repair | DeadLetter):
                        incidents.append(_incident_row(seq, rec.ts_ns, rec.body))
                else:
                    continue
                break
            rows.append((base, last_seq, first_ts, last_ts, path.stat().st_size, int(sealed)))
            meter.segment_done(path, last_seq + 1 - base)
        meter.finish()
        return rows, incidents

    # -- segments ------------------------------------------------------------------------

    def upsert_segment(self, info: SegmentInfo) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?)",
                (
                    info.base_seq,
                    info.last_seq,
                    info.first_ts_ns,
                    info.last_ts_ns,
                    info.size,
                    int(info.sealed),
                ),
            )

    def delete_segments(self, base_seqs: list[int]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "DELETE FROM segments WHERE base_seq = ?", [(b,) for b in base_seqs]
            )

    def segments(self) -> list[SegmentInfo]:
        with self._lock:
            rows = self._db.execute(
                "SELECT base_seq, last_seq, first_ts_ns, last_ts_ns, bytes, sealed "
                "FROM segments ORDER BY base_seq"
            ).fetchall()
        return [SegmentInfo(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def first_segment_reaching(self, ts_ns: int) -> int | None:
        """Base seq of the oldest sealed segment holding an event at or after `ts_ns`."""
        with self._lock:
            row = self._db.execute(
                "SELECT base_seq FROM segments WHERE sealed = 1 AND last_ts_ns >= ? "
                "ORDER BY base_seq LIMIT 1",
                (ts_ns,),
            ).fetchone()
        return None if row is None else int(row[0])

    # -- cursors -------------------------------------------------------------------------

    def set_cursor(self, name: str, next_seq: int) -> None:
        with self._lock, self._db:
            self._set_cursor(name, next_seq)

    def set_cursors(self, cursors: dict[str, int]) -> None:
        """Move several cursors in one transaction (one WAL page for a few cursors)."""
        with self._lock, self._db:
            for name, next_seq in sorted(cursors.items()):
                self._set_cursor(name, next_seq)

    def _set_cursor(self, name: str, next_seq: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)", (name, next_seq, time.time_ns())
        )

    def cursor_rows(self) -> dict[str, tuple[int, int]]:
        """Each cursor's next seq and when it last moved (ns UTC)."""
        with self._lock:
            rows = self._db.execute("SELECT name, next_seq, updated_ns FROM cursors").fetchall()
        return {name: (seq, ts) for name, seq, ts in rows}

    def delete_cursor(self, name: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM cursors WHERE name = ?", (name,))

    def cursors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, next_seq FROM cursors").fetchall())

    def cursor_floor(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_seq) FROM cursors").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- rewinds (pilog replay) ----------------------------------------------------------

    def request_rewind(
        self, name: str, from_seq: int, to_seq: int | None = None, resume_seq: int | None = None
    ) -> None:
        """Ask the consumer `name` to re-deliver from `from_seq`; replaces an earlier request."""
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO rewinds VALUES (?, ?, ?, ?, 0, ?)",
                (name, from_seq, to_seq, resume_seq, time.time_ns()),
            )

    def rewind(self, name: str) -> Rewind | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, from_seq, to_seq, resume_seq, applied, requested_ns"
                " FROM rewinds WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else _rewind(row)

    def rewinds(self) -> list[Rewind]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, from_seq, to_seq, resume_seq, applied, requested_ns FROM rewinds"
            ).fetchall()
        return [_rewind(r) for r in rows]

    def apply_rewind(self, rewind: Rewind) -> None:
        """The consumer rewinds: its cursor goes to `from_seq`, in one transaction with the
        request being marked applied (or removed, when there is no `to_seq` to come back from).
        """
        with self._lock, self._db:
            self._set_cursor(rewind.name, rewind.from_seq)
            if rewind.to_seq is None:
                self._db.execute("DELETE FROM rewinds WHERE name = ?", (rewind.name,))
            else:
                self._db.execute(
                    "UPDATE rewinds SET applied = 1, resume_seq = ? WHERE name = ?",
                    (rewind.resume_seq, rewind.name),
                )

    def finish_rewind(self, name: str, next_seq: int) -> None:
        """The consumer is past the replayed range: set its cursor and forget the request."""
        with self._lock, self._db:
            self._set_cursor(name, next_seq)
            self._db.execute("DELETE FROM rewinds WHERE name = ?", (name,))

    # -- incidents -----------------------------------------------------------------------

    def add_incident(self, seq: int, ts_ns: int, body: Incidental) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?)",
                _incident_row(seq, ts_ns, body),
            )

    def incidents(self, limit: int = 100) -> list[Incident]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, ts_ns, detail FROM incidents ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [Incident(*r) for r in rows]

    def incident_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(
                self._db.execute("SELECT kind, COUNT(*) FROM incidents GROUP BY kind").fetchall()
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


_SegmentRow = tuple[int, int, int | None, int | None, int, int]
_IncidentRow = tuple[int, str, int, str]


class _ScanMeter:
    """Progress over a scan of some segments, each read on its own from its base seq."""

    def __init__(self, progress: Progress | None, paths: list[Path]) -> None:
        self._progress = progress
        self._total = sum(p.stat().st_size for p in paths) if progress is not None else 0
        self._bytes = self._records = 0  # of the segments done
        if progress is not None:
            progress(0, self._total, 0)

    def within(self, path: Path) -> Progress | None:
        """A callback for reading from `path` on: counts its bytes only, not its successors'."""
        if self._progress is None:
            return None
        size = path.stat().st_size
        tell = self._progress

        def told(done: int, _total: int, records: int) -> None:
            tell(self._bytes + min(done, size), self._total, self._records + records)

        return told

    def segment_done(self, path: Path, records: int) -> None:
        self._bytes += path.stat().st_size
        self._records += records
        self._total = max(self._total, self._bytes)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress(self._total, self._total, self._records)


def _rewind(row: tuple[Any, ...]) -> Rewind:
    return Rewind(row[0], row[1], row[2], row[3], bool(row[4]), row[5])


def _incident_row(seq: int, ts_ns: int, body: Incidental) -> _IncidentRow:
    kind = {Gap: "gap", Repair: "repair", DeadLetter: "dead_letter"}[type(body)]
    return (seq, kind, ts_ns, msgspec.json.encode(msgspec.structs.asdict(body)).decode())
