"""Projections inside `pilog run`: one consumer thread per `[[projection]]`.

All of them share the process's one lmdb environment (lmdb allows one per process). State and
cursor commit together in lmdb at most every `commit_interval` (invariant 4); projections of
the same `commit_interval` commit together, in one transaction (`CommitGroup`), and their
cursors are then copied to the index in one transaction, where retention's cursor floor and
`pilog status` see them. A `pilog replay --projection` request resets the projection and
rebuilds it from the oldest event in the log.

A store that is full and cannot grow, or does not fit in the address space, pauses the
projections (`ProjectionFullError`, state "paused" with the fix in `last_error`): the log,
the drivers and the sinks go on, and `pilog run` never exits over it (under systemd's
Restart=on-failure it would restart into the same wall forever). A paused projection keeps
its pending state and tries its commit again every `PAUSED_RETRY_S`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import NoReturn

from pilog.config import Config, projection_name
from pilog.consumers.base import Consumer, Restart
from pilog.datadir import EventLog
from pilog.events import Event
from pilog.index.store import Rewind
from pilog.projections import open_runners, open_store
from pilog.projections.base import ProjectionError, ProjectionFullError
from pilog.projections.lmdb_store import CommitGroup, ProjectionRunner, ProjectionStore

log = logging.getLogger("pilog.projections")

PAUSED_RETRY_S = 60.0  # a paused projection tries its commit again this often


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
    def open_all(cls, config: Config, events: EventLog, stop: threading.Event) -> list[Consumer]:
        """A consumer per `[[projection]]`; paused ones when the store cannot be opened."""
        try:
            store = open_store(config)
        except ProjectionFullError as e:
            return _paused_all(config, e, events, stop)
        try:
            runners = open_runners(config, store)
            CommitGroup.assign(store, runners)
        except ProjectionFullError as e:
            store.close()
            return _paused_all(config, e, events, stop)
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
        try:
            self.runner.handle(events)
        except ProjectionFullError as e:
            self._broken(e)
        self.state.delivered += len(events)

    def tick(self, now: float) -> None:
        try:
            cursors = self.runner.maybe_commit(now)  # maybe the whole group's
        except ProjectionFullError as e:
            self._pause(e)
            return
        self._committed(cursors)
        self._note_commit()
        if self.state.state != "holding":  # the hold says when it ends
            self.state.state = "idle"

    def _pause(self, e: ProjectionFullError) -> None:
        """Hold this projection, its pending state kept, until a commit goes through or
        pilog stops; the consumer reads no further meanwhile."""
        if self.state.state != "paused":
            log.error("projection %s paused: %s", self.runner.name, e)
        self.state.state = "paused"
        self.state.retries += 1
        self.note_error(str(e))
        self.drain_on_stop = False  # its events are replayed from the log on the next start
        while not self.stop.wait(PAUSED_RETRY_S):
            try:
                cursors = self.runner.commit()
            except ProjectionFullError as again:
                self.state.retries += 1
                self.note_error(str(again))
                continue
            self._committed(cursors)
            self._note_commit()
            self.state.state = "idle"
            self.drain_on_stop = True
            log.warning("projection %s resumed: its commit went through", self.runner.name)
            return

    def apply_rewind(self, rewind: Rewind) -> int:
        try:
            self.runner.reset()
        except ProjectionFullError as e:
            self._broken(e)
        start = self.oldest_seq()
        done = Rewind(rewind.name, start, None, None, False, rewind.requested_ns)
        self.log.update_index("replay", lambda i: i.apply_rewind(done))
        return start

    def _broken(self, e: ProjectionFullError) -> NoReturn:
        """Reading the store failed: a remap failed and closed it (until pilog restarts)."""
        self._pause(e)  # returns only on stop: every commit fails the same way
        raise Restart

    def finish(self) -> None:
        try:
            self._committed(self.runner.commit())
            self._note_commit()
        except ProjectionFullError as e:
            if self.state.state != "paused":
                log.error("projection %s: not committed on stop: %s", self.runner.name, e)
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


class PausedProjection(Consumer):
    """A configured projection whose store could not be opened: paused, saying why, until
    pilog stops. Its cursor stays where it was; the log keeps its events."""

    def __init__(self, name: str, why: str, events: EventLog, stop: threading.Event) -> None:
        super().__init__(f"projection:{name}", events, stop)
        self.state.state = "paused"
        self.note_error(why)

    def run(self) -> None:
        self.stop.wait()
        self.state.state = "stopped"

    def load_cursor(self) -> int | None:
        return None

    def handle(self, events: Sequence[Event]) -> None:
        raise AssertionError("a paused projection reads nothing")

    def tick(self, now: float) -> None:
        pass

    def restart_at(self, seq: int) -> None:
        pass

    def apply_rewind(self, rewind: Rewind) -> int:
        raise AssertionError("a paused projection reads nothing")


def _paused_all(
    config: Config, e: ProjectionError, events: EventLog, stop: threading.Event
) -> list[Consumer]:
    log.error("projections paused: %s", e)
    return [PausedProjection(projection_name(p), str(e), events, stop) for p in config.projection]
