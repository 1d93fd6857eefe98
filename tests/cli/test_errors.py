"""Errors a user can cause: one clear sentence on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    assert_one_sentence_error,
    pilog,
    run_pilog,
    status_json,
    wait_for_seq,
    wait_until,
    write_config,
)

from pilog.config import load_config
from pilog.datadir import EventLog
from pilog.events import Note
from pilog.log.format import SegmentHeader, decode_header
from pilog.log.naming import list_segments

VERSION_OFFSET = 8  # docs/log-format.md: magic (8 bytes), then the format version byte


def bad_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pilog.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n' + text)
    return path


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[log]\nfsyn = "always"\n', ["log", "`fsyn`", "unknown"]),
        ('colour = "blue"\n', ["`colour`", "unknown"]),
        ('[[sensor]]\nname = "air"\ndriver = "synthetic"\nperiod = 3\n', ["air", "`period`"]),
        ('[[sensor]]\nname = "air"\ndriver = "bme999"\n', ["bme999", "unknown driver"]),
    ],
    ids=["log-key", "top-level-key", "sensor-option", "driver"],
)
def test_unknown_key_is_refused_naming_the_key_before_touching_the_data_dir(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    config = bad_config(tmp_path, text)
    line = assert_one_sentence_error(pilog("run", "-c", config))
    assert str(config) in line or "bme999" in line
    for part in expected:
        assert part in line, line
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[log]\nfsync = "sometimes"\n', ["log.fsync", "'sometimes'", "'always'", "'never'"]),
        ('[log]\nsegment_bytes = "lots"\n', ["log.segment_bytes", "'lots'", "16MiB"]),
        ('[log]\nretain = "forever"\n', ["log.retain", "'forever'", "7d"]),
        ("[log]\nfsync_interval_ms = 0\n", ["fsync_interval_ms", "at least 1"]),
        ('[log]\nsegment_bytes = "1MiB"\nmax_bytes = "1MiB"\n', ["max_bytes", "two segments"]),
        ('[[sensor]]\nname = "air"\ndriver = "synthetic"\ninterval_ms = "fast"\n', ["interval_ms"]),
        ("device_id = 7\n", ["device_id", "str"]),
    ],
    ids=["enum", "size", "duration", "range", "cap", "sensor-type", "type"],
)
def test_bad_value_is_refused_naming_the_key_and_what_was_expected(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    line = assert_one_sentence_error(pilog("run", "-c", bad_config(tmp_path, text)))
    for part in expected:
        assert part in line, line


@pytest.mark.parametrize("command", ["run", "tail", "status", "verify"])
def test_malformed_toml_is_refused_with_its_line(tmp_path: Path, command: str) -> None:
    config = bad_config(tmp_path, '[log\nfsync = "always"\n')
    line = assert_one_sentence_error(pilog(command, "-c", config))
    assert "not valid TOML" in line
    assert "line 2" in line


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "pilog.toml"
    line = assert_one_sentence_error(pilog("run", "-c", missing))
    assert str(missing) in line
    assert "does not exist" in line


def test_unknown_tail_options_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    line = assert_one_sentence_error(pilog("tail", "--data-dir", data, "--type", "readng"))
    assert "readng" in line
    assert "reading" in line  # the known types are listed
    line = assert_one_sentence_error(pilog("tail", "--data-dir", data, "--from", "yesterday"))
    assert "'yesterday'" in line


# -- data dir -------------------------------------------------------------------------------


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a read-only filesystem (root ignores permission bits, not this)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(f"mount not permitted here: {mount.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_data_dir_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    data = blocker / "data"
    config = write_config(tmp_path / "pilog.toml", data)
    line = assert_one_sentence_error(pilog("run", "-c", config))
    assert str(data) in line
    assert "Not a directory" in line


def test_data_dir_under_proc_is_refused(tmp_path: Path) -> None:
    data = Path("/proc/pilog-test/data")
    line = assert_one_sentence_error(pilog("run", "-c", write_config(tmp_path / "p.toml", data)))
    assert str(data) in line


def test_data_dir_on_a_read_only_filesystem_is_refused(tmp_path: Path, read_only_dir: Path) -> None:
    config = write_config(tmp_path / "pilog.toml", read_only_dir / "data")
    line = assert_one_sentence_error(pilog("run", "-c", config))
    assert str(read_only_dir / "data") in line
    assert "read-only" in line.lower()


def test_data_dir_whose_log_dir_is_a_file_is_refused(tmp_path: Path) -> None:
    # Root may write anywhere, but not into a "directory" that is a file.
    data = tmp_path / "data"
    data.mkdir()
    (data / "log").write_text("not a directory")
    config = write_config(tmp_path / "pilog.toml", data)
    line = assert_one_sentence_error(pilog("run", "-c", config))
    assert str(data) in line


# -- log format version ---------------------------------------------------------------------


def make_small_log(tmp_path: Path) -> Path:
    """A stopped log of several segments, written in-process; returns its config."""
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log={"segment_bytes": "4KiB", "max_bytes": "1MiB", "preallocate": False},
    )
    events = EventLog(load_config(config))
    try:
        for i in range(300):
            events.append(Note(f"event {i}"))
    finally:
        events.close()
    assert len(list_segments(tmp_path / "data" / "log")) >= 3
    return config


@pytest.mark.parametrize("which", [0, -1], ids=["oldest", "newest"])
@pytest.mark.parametrize("command", ["run", "tail", "verify"])
def test_log_of_an_unknown_format_version_is_refused(
    tmp_path: Path, command: str, which: int
) -> None:
    config = make_small_log(tmp_path)
    _base, segment = list_segments(tmp_path / "data" / "log")[which]
    data = bytearray(segment.read_bytes())
    assert data[VERSION_OFFSET] == 1
    # A whole header of version 9 (its checksum holds): a flipped version byte alone is damage.
    old = decode_header(data, segment.name)
    newer = SegmentHeader(old.epoch, old.base_seq, old.created_ns, old.device_id, version=9)
    data[: old.size] = newer.encode()
    segment.write_bytes(data)
    before = segment.read_bytes()

    args = ["--from", "0"] if command == "tail" else []
    result = pilog(command, "-c", config, *args)
    if command == "verify":  # reported as damage with the rest, exit 1
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        line = next(x for x in result.stderr.splitlines() if x.startswith("damage:"))
    else:
        line = assert_one_sentence_error(result)
    assert segment.name in line
    assert "version 9" in line
    assert segment.read_bytes() == before  # refused, not "repaired"


# -- one writer -----------------------------------------------------------------------------


def test_second_run_on_the_same_data_dir_is_refused_naming_the_first_pid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path / "pilog.toml", data)
    with run_pilog(config) as first:
        wait_until((data / "LOCK").exists, "the data dir")  # status refuses it until then
        wait_until(lambda: status_json("-c", config)["writer_pid"] == first.pid, "the lock")
        seen = wait_for_seq(data, 0)
        second = pilog("run", "-c", config)
        line = assert_one_sentence_error(second)
        assert f"pid {first.pid}" in line
        assert str(data) in line
        # The first one is unharmed and still the writer.
        wait_for_seq(data, seen + 3)
        assert status_json("-c", config)["writer_pid"] == first.pid
        assert first.stop() == 0
