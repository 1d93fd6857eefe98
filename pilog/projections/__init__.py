"""Projections: local views of the log in lmdb (`latest`, `rollup`), and rebuilding them.

A consumer loop opens one `ProjectionStore` per process (`open_store`), wraps each configured
projection in a `ProjectionRunner` (`open_runners`), feeds it batches from the runner's
`next_seq` on, and calls `maybe_commit` as time passes and `commit` at shutdown.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from pilog.config import (
    Config,
    LatestProjectionConfig,
    ProjectionConfig,
    RollupProjectionConfig,
    projection_name,
)
from pilog.consumers.clock import ClockCorrection
from pilog.datadir import DataDirPaths, writer_pid
from pilog.errors import LockedError
from pilog.events import Event, decode_event
from pilog.history import History
from pilog.log.reader import Progress
from pilog.projections.base import (
    Projection,
    ProjectionError,
    ProjectionFullError,
    ProjectionMeta,
)
from pilog.projections.latest import LatestProjection
from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore, projections_path
from pilog.projections.rollup import RollupProjection

__all__ = [
    "Projection",
    "ProjectionError",
    "ProjectionFullError",
    "ProjectionMeta",
    "ProjectionRunner",
    "ProjectionStore",
    "make_projection",
    "open_runners",
    "open_store",
    "projections_path",
    "rebuild",
]

# Events a rebuild applies between commits: bounds the pending state held in memory.
REBUILD_COMMIT_EVENTS = 50_000
_REBUILD_BATCH = 1024


def open_store(config: Config) -> ProjectionStore:
    """The writer's store of `config`'s data dir, its map sized by `[projections]`."""
    sizes = config.projections
    return ProjectionStore(
        projections_path(config.data_dir),
        map_size=sizes.map_size,
        map_size_max=sizes.map_size_max,
    )


def make_projection(config: ProjectionConfig, store: ProjectionStore) -> Projection:
    """The projection a `[[projection]]` table describes, reading through `store`."""
    name = projection_name(config)
    if isinstance(config, LatestProjectionConfig):
        return LatestProjection(name, store.db(name))
    assert isinstance(config, RollupProjectionConfig)
    return RollupProjection(name, store.db(name), [int(w) for w in config.windows])


def select(config: Config, names: list[str] | None) -> list[ProjectionConfig]:
    """The configured projections named in `names` (None: all); unknown names are an error."""
    if names is None:
        return list(config.projection)
    by_name = {projection_name(p): p for p in config.projection}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        known = ", ".join(sorted(by_name)) or "none configured"
        raise ProjectionError(f"unknown projection {', '.join(unknown)} (known: {known})")
    return [by_name[n] for n in names]


def open_runners(
    config: Config, store: ProjectionStore, names: list[str] | None = None
) -> list[ProjectionRunner]:
    """A runner for each selected configured projection, its cursor read from `store`."""
    return [
        ProjectionRunner(make_projection(p, store), store, commit_interval_s=p.commit_interval)
        for p in select(config, names)
    ]


def rebuild(
    data_dir: Path,
    config: Config,
    names: list[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, int]:
    """Reset the selected projections and fold the whole log into them again.

    For `pilog replay --projection NAME` while pilog is not running: a running pilog's runner
    would commit its own cursor over the rebuilt one. Readings get their corrected times, as
    in `pilog run`, and the fold stops where `pilog run` would hold: at a reading stamped
    before the clock was set whose boot has no clock step yet. Returns the next seq of each
    projection (the log's next seq, or that reading's; 0 for an empty log). `progress` is
    told as the log is read.
    """
    pid = writer_pid(DataDirPaths(data_dir))
    if pid is not None and pid != os.getpid():
        raise LockedError(str(data_dir), pid)
    selected = select(config, names)
    with open_store(msgspec.structs.replace(config, data_dir=data_dir)) as store:
        runners = open_runners(config, store, [projection_name(p) for p in selected])
        for runner in runners:
            runner.reset()
        _feed(History(data_dir), runners, progress)
        return {r.name: r.next_seq or 0 for r in runners}


def _feed(
    history: History, runners: list[ProjectionRunner], progress: Progress | None = None
) -> None:
    last = history.last_seq()
    # pilog is not running: what is on disk is all the log there is.
    clock = ClockCorrection(history.reader, lambda: -1 if last is None else last)
    batch: list[Event] = []
    since_commit = 0
    read = history.reader.read_batches(0, progress=progress)
    for event in (decode_event(seq, payload) for records in read for seq, payload in records):
        batch.append(event)
        if len(batch) < _REBUILD_BATCH:
            continue
        if not _handle(clock, runners, batch):
            break
        since_commit += len(batch)
        batch = []
        if since_commit >= REBUILD_COMMIT_EVENTS:
            for runner in runners:
                runner.commit()
            since_commit = 0
    else:
        _handle(clock, runners, batch)
    for runner in runners:
        runner.commit()


def _handle(clock: ClockCorrection, runners: list[ProjectionRunner], batch: list[Event]) -> bool:
    """Fold `batch` with corrected times; False when it stopped at a reading whose time the
    log does not tell yet."""
    done = clock.correct(batch)
    for runner in runners:
        runner.handle(batch[:done])
    return done == len(batch)
