"""The SQLite index: segment catalogue, consumer cursors, incidents (gaps and repairs).

Written when a segment seals, when a cursor advances and when an incident happens; never per
event (invariant 10). WAL mode with `synchronous=NORMAL`: a power cut may lose the last
cursor moves, which only means re-delivering events the receivers de-duplicate by id.
Rebuilt from the log when missing, damaged, or from another epoch; cursors are salvaged when
the old file still yields them.
"""

from __future__ import annotations

import bisect
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import msgspec

from pilog.events import Gap, Repair, decode_record
from pilog.log.reader import LogReader
from pilog.log.writer import SegmentInfo

log = logging.getLogger("pilog.index")

SCHEMA_VERSION = "1"


@dataclass(frozen=True, slots=True)
class Incident:
    seq: int
    kind: str
    ts_ns: int
    detail: str


class IndexStore:
    """One connection to index.sqlite, safe to share between threads."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._lock = threading.Lock()
        if readonly:
            uri = f"file:{path}?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5)
        else:
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=5)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open_for_writer(cls, path: Path, log_dir: Path, epoch_hex: str) -> IndexStore:
        """Open read-write; rebuild from `log_dir` when missing, damaged or of another log."""
        cursors: dict[str, int] = {}
        problem = "missing" if not path.exists() else None
        if problem is None:
            try:
                store = cls(path)
                problem = store._problem(epoch_hex)
                if problem is None:
                    return store
                cursors = store._salvage_cursors()
                store.close()
            except sqlite3.DatabaseError as e:
                problem = f"unreadable ({e})"
        if path.exists():
            broken = path.with_name(f"{path.name}.broken-{time.time_ns()}")
            path.rename(broken)
            for suffix in ("-wal", "-shm"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    side.unlink()
            log.warning("index %s; kept as %s, rebuilding from the log", problem, broken.name)
        store = cls(path)
        store._create(epoch_hex)
        store.rebuild(log_dir)
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
        if meta.get("schema_version") != SCHEMA_VERSION:
            return f"of schema version {meta.get('schema_version')}"
        if meta.get("epoch") != epoch_hex:
            return f"of another log (epoch {meta.get('epoch')})"
        return None

    def _salvage_cursors(self) -> dict[str, int]:
        try:
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

    def rebuild(self, log_dir: Path) -> None:
        """Catalogue every sealed segment and re-find incidents by reading the whole log."""
        reader = LogReader(log_dir)
        segments = reader.segments()
        started = time.monotonic()
        rows: list[tuple[int, int, int | None, int | None, int, int]] = []
        incidents: list[tuple[int, str, int, str]] = []
        bounds: dict[int, list[int | None]] = {b: [None, None, b - 1] for b, _ in segments}
        bases = [b for b, _ in segments]
        for seq, payload in reader.read_from(bases[0] if bases else 0):
            base = _segment_of(bases, seq)
            rec = decode_record(payload)
            b = bounds[base]
            if b[0] is None:
                b[0] = rec.ts_ns
            b[1], b[2] = rec.ts_ns, seq
            if isinstance(rec.body, Gap | Repair):
                incidents.append(_incident_row(seq, rec.ts_ns, rec.body))
        for i, (base, path) in enumerate(segments):
            first, last, last_seq = bounds[base]
            sealed = i < len(segments) - 1
            assert last_seq is not None
            rows.append((base, last_seq, first, last, path.stat().st_size, int(sealed)))
        with self._lock, self._db:
            self._db.execute("DELETE FROM segments")
            self._db.execute("DELETE FROM incidents")
            self._db.executemany("INSERT INTO segments VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.executemany("INSERT INTO incidents VALUES (?, ?, ?, ?)", incidents)
        log.info(
            "index rebuilt: %d segments, %d incidents in %.1fs",
            len(rows),
            len(incidents),
            time.monotonic() - started,
        )

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
            self._db.execute(
                "INSERT OR REPLACE INTO cursors VALUES (?, ?, ?)", (name, next_seq, time.time_ns())
            )

    def cursors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT name, next_seq FROM cursors").fetchall())

    def cursor_floor(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_seq) FROM cursors").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    # -- incidents -----------------------------------------------------------------------

    def add_incident(self, seq: int, ts_ns: int, body: Gap | Repair) -> None:
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


def _incident_row(seq: int, ts_ns: int, body: Gap | Repair) -> tuple[int, str, int, str]:
    kind = "gap" if isinstance(body, Gap) else "repair"
    return (seq, kind, ts_ns, msgspec.json.encode(msgspec.structs.asdict(body)).decode())


def _segment_of(bases: list[int], seq: int) -> int:
    return bases[bisect.bisect_right(bases, seq) - 1]
