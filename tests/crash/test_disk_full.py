"""A real disk full (ENOSPC) under `pilog run`: on a small tmpfs the log stays readable, the
error is reported once, and appends resume when space returns (or stop cleanly if it does not).
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from helpers import (
    Running,
    last_seq,
    pilog,
    run_pilog,
    status_json,
    tail_json,
    wait_for_seq,
    wait_until,
    write_config,
)

from pilog.counts import counted
from pilog.log.naming import list_segments

FS_BYTES = 4 << 20
SEGMENT = "256KiB"
FILL_CHUNK = 64 << 10
ENOSPC_LINE = "No space left on device"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (root only), unmounted afterwards."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mount.returncode != 0:
        pytest.skip(
            f"a real small filesystem is needed and mount is not permitted here: "
            f"{mount.stderr.strip() or mount.returncode}"
        )
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """Take every free byte of `fs` with a filler file; return it (delete it to free space)."""
    filler = fs / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (FILL_CHUNK, 4096, 512, 1):  # what did not fit may have been written in part
            _write_until_full(f, b"\xff" * size)
    return filler


def _write_until_full(f: BinaryIO, block: bytes) -> None:
    while True:
        try:
            f.write(block)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            return


def config_on(fs: Path, tmp_path: Path, sensor: dict[str, object]) -> Path:
    # The log is capped well inside the filesystem: once the filler is gone it always fits.
    return write_config(
        tmp_path / "pilog.toml",
        fs / "data",
        log={"segment_bytes": SEGMENT, "max_bytes": "1MiB", "fsync": "interval"},
        sensors=[sensor],
    )


def stall(run: Running, fs: Path) -> tuple[Path, int]:
    """Fill the disk under a running pilog; return the filler and the seq reached when the
    writer reported ENOSPC (everything up to it is on disk)."""
    wait_for_seq(fs / "data", 50)
    filler = fill(fs)
    run.stderr.wait_for(lambda ln: ENOSPC_LINE in ln, "the ENOSPC log line")
    stalled = last_seq(fs / "data")
    assert stalled is not None
    return filler, stalled


def assert_dense_and_verified(config: Path) -> list[dict[str, object]]:
    events = tail_json("-c", config, "--from", "0")
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[-1]["seq"] + 1))  # type: ignore[call-overload,operator]
    result = pilog("verify", "-c", config)
    assert result.returncode == 0, result.stderr
    return events


def test_disk_full_stalls_appends_keeps_the_log_readable_and_resumes_when_space_returns(
    small_fs: Path, tmp_path: Path
) -> None:
    data = small_fs / "data"
    config = config_on(small_fs, tmp_path, {"name": "air", "interval_ms": 2, "batch": 10})
    with run_pilog(config) as run:
        filler, stalled = stall(run, small_fs)
        error_at = len(run.stderr.lines)
        # While the disk is full, readers see a sound log with everything written so far.
        during = tail_json("-c", config, "--from", "0")
        assert during[-1]["seq"] >= stalled
        assert pilog("verify", "-c", config).returncode == 0
        assert status_json("-c", config)["writer_pid"] == run.pid

        filler.unlink()
        run.stderr.wait_for(lambda ln: "recovered" in ln, "the recovery log line", start=error_at)
        resumed = wait_for_seq(data, during[-1]["seq"] + 500)
        assert run.alive()
        assert run.stop() == 0, run.stderr.text()

    # Said once when it starts (not once per retry) and once when it ends, without traceback.
    errors = [ln for ln in run.stderr.lines if ENOSPC_LINE in ln]
    assert len(errors) == 2, run.stderr.text()
    assert "ERROR" in errors[0]
    assert "recovered" in errors[1]
    assert "Traceback" not in run.stderr.text()
    after = assert_dense_and_verified(config)
    assert after[-1]["seq"] > resumed
    by_seq = {e["seq"]: e for e in after}
    assert all(by_seq.get(e["seq"], e) == e for e in during)  # nothing rewritten


def test_stop_while_the_disk_is_full_exits_nonzero_with_one_clear_sentence(
    small_fs: Path, tmp_path: Path
) -> None:
    config = config_on(small_fs, tmp_path, {"name": "air", "interval_ms": 2, "batch": 10})
    with run_pilog(config) as run:
        _filler, stalled = stall(run, small_fs)
        code = run.stop()
    assert code != 0
    assert "Traceback" not in run.stderr.text()
    assert run.stderr.lines[-1].startswith("pilog: error: "), run.stderr.text()
    assert ENOSPC_LINE in run.stderr.lines[-1]
    # What was on disk before the stop is all there, and sound.
    events = assert_dense_and_verified(config)
    assert events[-1]["seq"] >= stalled


def test_stop_right_after_space_returns_records_the_refused_readings_and_driver_stopped(
    small_fs: Path, tmp_path: Path
) -> None:
    # A fast scheduled sensor: while the disk is full, the writer's in-memory batch reaches
    # its bound and readings are refused at the source (interval_ms = 0 would wait instead).
    # Stopping before the writer's next retry must still get the backlog, a Gap counting the
    # refused readings and DriverStopped in.
    config = config_on(small_fs, tmp_path, {"name": "fast", "interval_ms": 1, "batch": 200})
    with run_pilog(config) as run:
        wait_for_seq(small_fs / "data", 50)
        filler, _stalled = stall(run, small_fs)

        def refusing_at_the_source() -> bool:
            # The in-memory batch is at its bound: the sensor's readings are being refused.
            live = status_json("-c", config)
            return live["writer"]["backlog_fraction"] >= 1 and live["drivers"][0]["dropped"] > 0

        wait_until(refusing_at_the_source, "readings refused at the in-memory bound")
        filler.unlink()
        assert run.stop() == 0, run.stderr.text()

    assert "Traceback" not in run.stderr.text()
    last = tail_json("-c", config, "--from", "-2")
    assert last[1]["type"] == "driver_stopped"
    assert last[0]["type"] == "gap"
    assert last[0]["sensor"] == "fast"
    assert last[0]["count"] > 0
    assert f"sensor fast: {counted(last[0]['count'], 'reading')} dropped" in run.stderr.text()
    assert status_json("-c", config)["gaps"] >= 1
    assert pilog("verify", "-c", config).returncode == 0
    assert len(list_segments(small_fs / "data" / "log")) >= 2
