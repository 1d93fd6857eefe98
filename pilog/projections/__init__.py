"""Projections: local views of the log in lmdb (`latest`, `rollup`), and rebuilding them.

A consumer loop opens one `ProjectionStore` per process (`open_store`), wraps each configured
projection in a `ProjectionRunner` (`open_runners`), feeds it batches from the runner's
`next_seq` on, and calls `maybe_commit` as time passes and `commit` at shutdown.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from pilog.config import Config, ProjectionConfig, driver_dirs, projection_name
from pilog.errors import ConfigError, LockedError
from pilog.events import Event, decode_event
from pilog.plugins import PluginKind, convert_options, extra_missing, find_plugin
from pilog.projections.base import (
    Projection,
    ProjectionError,
    ProjectionFullError,
    ProjectionMeta,
    ProjectionPlugin,
)
from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore, projections_path

if TYPE_CHECKING:
    from pilog.consumers.clock import ClockCorrection
    from pilog.history import History
    from pilog.log.reader import Progress

__all__ = [
    "BUILTIN",
    "KIND",
    "Projection",
    "ProjectionError",
    "ProjectionFullError",
    "ProjectionMeta",
    "ProjectionPlugin",
    "ProjectionRunner",
    "ProjectionStore",
    "find_projection",
    "make_projection",
    "open_runners",
    "open_store",
    "projections_path",
    "rebuild",
]

_HERE = Path(__file__).parent
# Every folder here with a projection.py is a built-in projection named after the folder; its
# module exposes the class as PROJECTION (as drivers expose DRIVER).
BUILTIN: dict[str, str] = {
    p.parent.name.replace("_", "-"): f"pilog.projections.{p.parent.name}.projection:PROJECTION"
    for p in sorted(_HERE.glob("*/projection.py"))
}
KIND = PluginKind("projection", BUILTIN, "pilog.projections", "pilog projections")

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


def find_projection(ref: str, search: Sequence[Path] = ()) -> type[ProjectionPlugin]:
    """The projection class named by a built-in type, "module:Class", or an entry point.

    `search`: directories where a "module:Class" projection's module may live (the config
    file's directory and its `driver_paths`).
    """
    cls = find_plugin(KIND, ref, search)
    if not isinstance(cls, type) or not callable(getattr(cls, "from_config", None)):
        raise ConfigError(
            f"projection '{ref}' is not a projection class: it needs a from_config classmethod "
            "(pilog.projections.ProjectionPlugin)"
        )
    return cls  # checked structurally above


def make_projection(
    config: ProjectionConfig, store: ProjectionStore, search: Sequence[Path] = ()
) -> Projection:
    """The projection a `[[projection]]` table describes, reading through `store`."""
    import msgspec  # noqa: PLC0415

    cls = find_projection(config.type, search)
    name = projection_name(config)
    try:
        options = convert_options(cls, config.options)
    except msgspec.ValidationError as e:
        raise ConfigError(f"projection {name}: {e}") from e
    try:
        return cls.from_config(config, options, store.db(name))
    except ImportError as e:
        what = f"the {config.type} projection" if config.type in BUILTIN else f"projection {name}"
        raise ConfigError(extra_missing(what, cls, getattr(cls, "extra", None))) from e


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
    search = driver_dirs(config)
    return [
        ProjectionRunner(
            make_projection(p, store, search), store, commit_interval_s=p.commit_interval
        )
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
    # Imported here: the config loader imports this package for the built-in types, and
    # every command loads a config.
    from pilog.datadir import DataDirPaths, writer_pid  # noqa: PLC0415
    from pilog.history import History  # noqa: PLC0415

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
    from pilog.consumers.clock import ClockCorrection  # noqa: PLC0415

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
