"""Directories made durable: a new directory's name lives in its parent until that is fsynced."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from logfiles import options, read_all

from pilog.errors import LogIOError
from pilog.log.fsio import make_dirs
from pilog.log.repair import open_log
from pilog.testing.faultyfs import FaultyFileSystem


def test_make_dirs_makes_each_new_level_durable_in_its_parent(tmp_path: Path) -> None:
    fs = FaultyFileSystem(seed=1)
    leaf = tmp_path / "a" / "b" / "c"

    make_dirs(leaf, fs)

    assert leaf.is_dir()
    assert fs.stats.dir_syncs == 3  # tmp_path, a and b: each parent of a new level
    fs.crash(unsynced="none")
    assert leaf.is_dir()


def test_make_dirs_of_an_existing_directory_changes_nothing(tmp_path: Path) -> None:
    fs = FaultyFileSystem(seed=1)
    make_dirs(tmp_path, fs)
    assert fs.stats.dir_syncs == 0


def test_make_dirs_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="Not a directory"):
        make_dirs(tmp_path / "f" / "d", FaultyFileSystem(seed=1))


def test_a_crash_after_the_first_commit_in_a_new_data_dir_keeps_the_log(tmp_path: Path) -> None:
    """Power goes soon after the first start: what was acknowledged durable is still there."""
    fs = FaultyFileSystem(seed=1)
    data = tmp_path / "var" / "lib" / "pilog"  # none of it exists yet
    writer, _ = open_log(data / "log", data / "quarantine", options(), fs=fs)
    epoch = writer.epoch
    writer.append(b"acknowledged")
    assert writer.sync() == 0

    fs.power_off()
    with contextlib.suppress(LogIOError):
        writer.close()
    fs.crash(unsynced="none")

    writer, repairs = open_log(data / "log", data / "quarantine", options(), fs=fs)
    try:
        assert repairs == []
        assert writer.epoch == epoch, "a new log began: the data dir's name was not durable"
        assert writer.next_seq == 1
    finally:
        writer.close()
    assert read_all(data / "log") == ([(0, b"acknowledged")], None)
