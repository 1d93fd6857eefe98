"""Projections inside `pilog run`: one consumer thread per `[[projection]]`.

All of them share the process's one lmdb environment (lmdb allows one per process). State and
cursor commit together in lmdb at most every `commit_interval` (invariant 4); projections of
the same `commit_interval` commit together, in one transaction (`CommitGroup`), and their
cursors are then copied to the index in one transaction, where retention's cursor floor and
`pilog status` see them. A `pilog replay --projection` request resets the projection and
rebuilds it from the oldest event in the log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from pilog.config import Config
from pilog.consumers.base import Consumer
from pilog.datadir import EventLog
from pilog.events import Event
from pilog.index.store import Rewind
from pilog.projections import open_runners
from pilog.projections.lmdb_store import (
    CommitGroup,
    ProjectionRunner,
    ProjectionStore,
    projections_path,
)


class _SharedStore:
    """The process's one store, closed when the last projection consumer finishes."""

    def __init__(self, store: ProjectionStore, users: int) -> None:
        self.store = store
        self._users = users
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self.store.close()


class ProjectionConsumer(Consumer):
    drain_on_stop = True  # local and fast: stop with the whole log folded in

    def __init__(
        self,
        runner: ProjectionRunner,
        shared: _SharedStore,
        events: EventLog,
        stop: threading.Event,
    ) -> None:
        super().__init__(f"projection:{runner.name}", events, stop)
        self.runner = runner
        self._shared = shared

    @classmethod
    def open_all(
        cls, config: Config, events: EventLog, stop: threading.Event
    ) -> list[ProjectionConsumer]:
        store = ProjectionStore(projections_path(config.data_dir))
        try:
            runners = open_runners(config, store)
            CommitGroup.assign(store, runners)
        except BaseException:
            store.close()
            raise
        shared = _SharedStore(store, len(runners))
        return [cls(r, shared, events, stop) for r in runners]

    def load_cursor(self) -> int | None:
        # The runner's own position: it may be ahead of its last commit, and re-applying
        # events it already folded in would count them twice.
        return self.runner.next_seq

    def restart_at(self, seq: int) -> None:
        self.state.next_seq = self.runner.next_seq

    def handle(self, events: Sequence[Event]) -> None:
        self.runner.handle(events)
        self.state.delivered += len(events)

    def tick(self, now: float) -> None:
        self._committed(self.runner.maybe_commit(now))  # maybe the whole group's
        self._note_commit()
        self.state.state = "idle"

    def apply_rewind(self, rewind: Rewind) -> int:
        self.runner.reset()
        start = self.oldest_seq()
        done = Rewind(rewind.name, start, None, None, False, rewind.requested_ns)
        self.log.update_index("replay", lambda i: i.apply_rewind(done))
        return start

    def finish(self) -> None:
        try:
            self._committed(self.runner.commit())
            self._note_commit()
        finally:
            self._shared.release()

    def _committed(self, cursors: dict[str, int]) -> None:
        """Copy cursors just committed in lmdb to the index, in one transaction."""
        if cursors:
            moved = {f"projection:{name}": seq for name, seq in cursors.items()}
            self.log.update_index("cursor", lambda i: i.set_cursors(moved))

    def _note_commit(self) -> None:
        """Show this runner's commit in `status`, whichever thread made it."""
        seq = self.runner.committed_seq
        if seq is not None and seq != self.state.next_seq:
            self.state.next_seq = seq
            self.state.last_ok_ns = time.time_ns()
