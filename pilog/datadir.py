"""A data dir: its layout, its writer lock, and the event log the one writer appends to.

`EventLog` joins the byte-level log (pilog.log) with event meaning: it stamps wall time,
monotonic time and boot id on each body, keeps the index in step with the writer's hooks,
and turns repairs and drops into `Repair` and `Gap` events so that the log itself records
every loss (invariant 6).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import sqlite3
import stat
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pilog.clock import Clock, SystemClock, boot_id
from pilog.config import Config, log_options
from pilog.errors import DataDirError, LockedError, LogError
from pilog.events import Body, Gap, Record, Repair, encode_record, record_ts
from pilog.index.store import Incidental, IndexStore
from pilog.log import naming
from pilog.log.fsio import FileSystem, make_dirs
from pilog.log.reader import Progress
from pilog.log.repair import open_log
from pilog.log.writer import Drop, LogOptions, SegmentInfo

_T = TypeVar("_T")
log = logging.getLogger("pilog")


@dataclass(frozen=True, slots=True)
class DataDirPaths:
    """Where everything of one data dir lives."""

    root: Path

    @property
    def log_dir(self) -> Path:
        return self.root / naming.LOG_DIR

    @property
    def quarantine_dir(self) -> Path:
        return self.root / naming.QUARANTINE_DIR

    @property
    def index(self) -> Path:
        return self.root / naming.INDEX_FILE

    @property
    def lock(self) -> Path:
        return self.root / naming.LOCK_FILE

    @property
    def projections_dir(self) -> Path:
        return self.root / naming.PROJECTIONS_DIR

    @property
    def deadletter_dir(self) -> Path:
        return self.root / naming.DEADLETTER_DIR

    def deadletter(self, sink: str) -> Path:
        return self.deadletter_dir / naming.deadletter_name(sink)

    @property
    def control_socket(self) -> Path:
        return self.root / naming.CONTROL_SOCKET

    def is_data_dir(self) -> bool:
        """`root` holds what `pilog run` makes, first to last: LOCK, log/ or index.sqlite.

        Raises PermissionError when `root` cannot be searched (a user outside its group).
        """
        return (
            _stat_is(self.lock, stat.S_ISREG)
            or _stat_is(self.log_dir, stat.S_ISDIR)
            or _stat_is(self.index, stat.S_ISREG)
        )


def _stat_is(path: Path, kind: Callable[[int], bool]) -> bool:
    """`kind(mode)` of `path`; False if it does not exist. Unlike Path.is_dir on 3.13, a
    permission error is raised, not taken for absence."""
    try:
        return kind(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False


class WriterLock:
    """The flock on DATA_DIR/LOCK that makes one process the writer (invariant 9)."""

    def __init__(self, paths: DataDirPaths) -> None:
        self.path = paths.lock
        try:
            make_dirs(paths.root)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except PermissionError as e:
            raise DataDirError(
                f"data dir {paths.root} is not writable by this user: {e.strerror}; "
                f"{_writer_fix(paths.root)}"
            ) from e
        except OSError as e:
            raise DataDirError(f"cannot use data dir {paths.root}: {e.strerror}") from e
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = read_lock_pid(self.path)
            os.close(self._fd)
            raise LockedError(str(paths.root), pid) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.close(self._fd)  # closing drops the flock; the pid stays for post-mortems


def _writer_fix(root: Path) -> str:
    """How to write to a data dir this user may not: as its owner, or make it theirs."""
    try:
        owner = pwd.getpwuid(root.stat().st_uid).pw_name
    except FileNotFoundError:
        return "create it for the user that runs pilog (see docs/install.md)"
    except (OSError, KeyError):
        return "run this as the user that owns it"
    return f"run this as its owner (sudo -u {owner} pilog ...)"


def read_lock_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def writer_pid(paths: DataDirPaths) -> int | None:
    """Pid of a live process holding the data dir, judged without taking the lock."""
    pid = read_lock_pid(paths.lock)
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"pilog" in cmdline else None


def _data_dir_error(root: Path, e: OSError) -> DataDirError:
    """One sentence for an OS error met while opening a data dir."""
    where = f" ({e.filename})" if e.filename else ""
    if isinstance(e, PermissionError):
        return DataDirError(f"data dir {root} is not writable: {e.strerror}{where}")
    if e.errno == errno.EROFS:
        return DataDirError(f"data dir {root} is on a read-only filesystem{where}")
    return DataDirError(f"cannot use data dir {root}: {e.strerror or e}{where}")


class EventLog:
    """The writer side of a data dir: stamped events in, durable seqs out."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        fs: FileSystem | None = None,
        lock: WriterLock | None = None,
        index_progress: Progress | None = None,
    ) -> None:
        """Take the data dir (or use `lock`, already taken by the caller) and open its log.

        `index_progress` is told how a rebuild of the index from the segments goes.
        """
        self.config = config
        self.paths = DataDirPaths(config.data_dir)
        self.clock = clock or SystemClock()
        self._wall_ns = self.clock.wall_ns
        self._mono_ns = self.clock.mono_ns
        self.boot_id = boot_id()
        self._lock = lock or WriterLock(self.paths)
        self.index: IndexStore | None = None
        self._index_lock = threading.Lock()  # the committer thread updates it too
        self._index_behind = False
        self._missed_incidents: list[tuple[int, int, Incidental]] = []
        try:
            self.writer, repairs = open_log(
                self.paths.log_dir,
                self.paths.quarantine_dir,
                LogOptions(**log_options(config)),
                fs=fs,
                hooks=self,
                ts_of=record_ts,
                wall_ns=self.clock.wall_ns,
            )
            self.epoch_hex = self.writer.epoch.hex()
            self.index = IndexStore.open_for_writer(
                self.paths.index, self.paths.log_dir, self.epoch_hex, index_progress
            )
        except OSError as e:
            self._abandon()
            raise _data_dir_error(config.data_dir, e) from e
        except sqlite3.Error as e:
            self._abandon()
            raise DataDirError(f"cannot open the index of data dir {config.data_dir}: {e}") from e
        except Exception:
            self._abandon()
            raise
        for r in repairs:
            self.append_incident(Repair(r.segment, r.offset, r.bytes_cut, r.reason, r.quarantined))

    def _abandon(self) -> None:
        """Undo a half-done open: stop the writer if it started, release the lock."""
        try:
            if hasattr(self, "writer"):
                self.writer.close()
        except LogError:
            pass  # the error being raised says more
        finally:
            self._lock.release()

    def append(self, body: Body) -> int:
        """Stamp `body` with the clocks and append it; return its seq (durable later)."""
        ts = self._wall_ns()
        return self.writer.append(
            encode_record(Record(ts, self._mono_ns(), self.boot_id, body)), ts
        )

    def append_many(self, bodies: Sequence[Body]) -> int:
        """Append several bodies, stamped alike, under one writer lock; return the last seq.

        All or nothing, as `LogWriter.append_many`.
        """
        ts = self._wall_ns()
        mono = self._mono_ns()
        boot = self.boot_id
        return self.writer.append_many(
            [encode_record(Record(ts, mono, boot, body)) for body in bodies], ts
        )

    def append_incident(self, body: Incidental) -> int:
        """Append a loss, repair or dead letter and note it in the index for `status`."""
        ts = self._wall_ns()
        seq = self.writer.append(encode_record(Record(ts, self._mono_ns(), self.boot_id, body)), ts)
        if not self._update_index("incident", lambda i: i.add_incident(seq, ts, body)):
            with self._index_lock:
                self._missed_incidents.append((seq, ts, body))
        return seq

    def update_index(self, what: str, update: Callable[[IndexStore], None]) -> bool:
        """Apply `update` to the index (cursor moves, rewinds); False if it was refused."""
        return self._update_index(what, update)

    def read_index(self, read: Callable[[IndexStore], _T], default: _T) -> _T:
        """`read(index)`, or `default` when there is no index or the database refuses."""
        if self.index is None:
            return default
        with self._index_lock:
            try:
                return read(self.index)
            except sqlite3.Error as e:
                log.warning("index not readable: %s", e)
                return default

    def close(self) -> None:
        """Commit and sync everything appended, then release the data dir."""
        try:
            self.writer.close()
        finally:
            if self.index is not None:
                self.index.close()
            self._lock.release()

    def _update_index(self, what: str, update: Callable[[IndexStore], None]) -> bool:
        """Apply `update` to the index; False when the database refused it (a full disk).

        The log is the source of truth (invariant 1): a refused update is reported once and
        made good from the log by the next update that succeeds, never a reason to stop.
        """
        if self.index is None:
            return True
        with self._index_lock:
            try:
                if self._index_behind:
                    self._catch_up(self.index)
                update(self.index)
            except sqlite3.Error as e:
                if not self._index_behind:
                    log.error("index not updated (%s): %s; it catches up when it can", what, e)
                self._index_behind = True
                return False
            return True

    def _catch_up(self, index: IndexStore) -> None:
        index.reconcile(self.paths.log_dir)
        while self._missed_incidents:
            index.add_incident(*self._missed_incidents[0])
            self._missed_incidents.pop(0)
        self._index_behind = False
        log.warning("index caught up with the log")

    # -- LogHooks ------------------------------------------------------------------------

    def segment_sealed(self, info: SegmentInfo) -> None:
        self._update_index("sealed segment", lambda i: i.upsert_segment(info))

    def segments_deleted(self, base_seqs: list[int]) -> None:
        self._update_index("deleted segments", lambda i: i.delete_segments(base_seqs))

    def dropped(self, drop: Drop) -> None:
        try:
            self.append_incident(Gap(drop.reason, first_seq=drop.first_seq, last_seq=drop.last_seq))
        except LogError as e:
            log.error(
                "seq %d..%d were dropped and no Gap event records it: %s",
                drop.first_seq,
                drop.last_seq,
                e,
            )

    def cursor_floor(self) -> int | None:
        return self.index.cursor_floor() if self.index is not None else None
