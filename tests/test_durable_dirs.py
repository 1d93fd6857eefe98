"""Every directory pilog creates in a data dir, and the data dir's missing parents, is made
durable by an fsync of its parent (a power cut must not take a directory of durable files)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from pilog.config import parse_config
from pilog.datadir import EventLog
from pilog.log.fsio import OsFileSystem
from pilog.projections.lmdb_store import ProjectionStore
from pilog.uploader import loop


def test_every_directory_pilog_creates_is_synced_in_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[Path] = []
    real_sync_dir = OsFileSystem.sync_dir

    def sync_dir(self: OsFileSystem, path: Path) -> None:
        synced.append(Path(os.path.abspath(path)))
        real_sync_dir(self, path)

    monkeypatch.setattr(OsFileSystem, "sync_dir", sync_dir)
    root = tmp_path / "srv" / "pilog" / "data"  # the data dir and two parents are new
    config = parse_config(
        tomllib.loads(f'device_id = "d"\ndata_dir = "{root}"\n[log]\nfsync = "never"\n'),
        "test.toml",
        {},
    )
    events = EventLog(config)
    events.close()
    ProjectionStore(events.paths.projections_dir).close()
    loop._append_line(events.paths.deadletter("sink"), "{}")

    created = [p for p in sorted(tmp_path.rglob("*")) if p.is_dir()]
    assert {p.relative_to(tmp_path).as_posix() for p in created} >= {
        "srv",
        "srv/pilog",
        "srv/pilog/data",
        "srv/pilog/data/log",
        "srv/pilog/data/quarantine",
        "srv/pilog/data/projections",
        "srv/pilog/data/deadletter",
    }
    for directory in created:
        assert directory.parent in synced, f"{directory}: its parent was never fsynced"
