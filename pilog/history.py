"""The read side of a data dir, for other processes: events by seq or time, live or not.

Takes no lock and writes nothing; works while `pilog run` appends (invariant 9).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from pilog.datadir import DataDirPaths
from pilog.errors import LogError
from pilog.events import Event, decode_event, decode_record
from pilog.index.store import IndexStore
from pilog.log.format import SegmentHeader, decode_header
from pilog.log.reader import LogReader


class History:
    """Events of the log under `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        self.paths = DataDirPaths(data_dir)
        self.reader = LogReader(self.paths.log_dir)

    def header(self) -> SegmentHeader | None:
        """The newest readable segment header (device id, epoch), or None for an empty log."""
        for _base, path in reversed(self.reader.segments()):
            try:
                with path.open("rb") as f:
                    return decode_header(f.read(512), path.name)
            except (OSError, LogError):
                # A segment just created (header not written yet) or damaged: its
                # predecessor has the same epoch and, almost surely, the same device id.
                continue
        return None

    def events(
        self, from_seq: int = 0, *, follow: bool = False, stop: threading.Event | None = None
    ) -> Iterator[Event]:
        for batch in self.reader.read_batches(from_seq, follow=follow, stop=stop):
            for seq, payload in batch:
                yield decode_event(seq, payload)

    def last_seq(self) -> int | None:
        return self.reader.last_seq()

    def first_seq(self) -> int | None:
        segments = self.reader.segments()
        return segments[0][0] if segments else None

    def seq_at_time(self, ts_ns: int) -> int | None:
        """Seq of the first event (in seq order) stamped at or after `ts_ns`; None if none."""
        start = self._segment_for_time(ts_ns)
        for seq, payload in self.reader.read_from(start):
            if decode_record(payload).ts_ns >= ts_ns:
                return seq
        return None

    def _segment_for_time(self, ts_ns: int) -> int:
        segments = self.reader.segments()
        if not segments:
            return 0
        try:
            index = IndexStore(self.paths.index, readonly=True)
            try:
                base = index.first_segment_reaching(ts_ns)
            finally:
                index.close()
        except sqlite3.Error:
            return segments[0][0]  # no usable index: scan from the oldest segment
        return segments[-1][0] if base is None else base

    def open_index(self) -> IndexStore | None:
        if not self.paths.index.exists():
            return None
        try:
            return IndexStore(self.paths.index, readonly=True)
        except sqlite3.Error:
            return None
