"""The log writer's behaviour: seqs, segments, bounds, retention, durability and disk faults.

Writers here run with a committer that never wakes on its own (`fsync_interval_s` of an hour)
unless a test is about the committer, so that `sync()` decides when I/O happens. Time that
the writer measures is moved by the `writer_time` and `clock` fixtures, never waited for.
"""

from __future__ import annotations

import contextlib
import errno
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from logfiles import DEVICE, options, payload, read_all

import pilog.log.writer as writer_module
from pilog.errors import LogFullError, LogIOError, RecordTooLargeError
from pilog.log import naming
from pilog.log.format import (
    FRAME_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    decode_header,
    encode_frame,
    frame_size,
)
from pilog.log.fsio import FileSystem
from pilog.log.reader import LogReader
from pilog.log.repair import Repair, open_log
from pilog.log.writer import Drop, LogWriter, SegmentInfo
from pilog.testing.clock import FakeClock
from pilog.testing.faultyfs import FaultyFileSystem, FiredFault

WAIT_S = 30.0  # a bound on waiting for the committer thread, never a measured result
HOUR_NS = 3600 * 10**9
HEADER_BYTES = 46 + len(DEVICE) + 4


class Hooks:
    """LogHooks that record what the writer tells them; `floor` is the slowest consumer."""

    def __init__(self, floor: int | None = None) -> None:
        self.floor = floor
        self.sealed: list[SegmentInfo] = []
        self.deleted: list[int] = []
        self.drops: list[Drop] = []

    def segment_sealed(self, info: SegmentInfo) -> None:
        self.sealed.append(info)

    def segments_deleted(self, base_seqs: list[int]) -> None:
        self.deleted.extend(base_seqs)

    def dropped(self, drop: Drop) -> None:
        self.drops.append(drop)

    def cursor_floor(self) -> int | None:
        return self.floor


class WriterTime:
    """The `time` module as the writer sees it, with a monotonic clock a test moves on."""

    def __init__(self) -> None:
        self.skew_s = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skew_s

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def writer_time(monkeypatch: pytest.MonkeyPatch) -> WriterTime:
    skewed = WriterTime()
    monkeypatch.setattr(writer_module, "time", skewed)
    return skewed


@pytest.fixture
def clock() -> FakeClock:
    # Starts at the real wall time: segments reopened from disk are dated by file mtime.
    return FakeClock(wall_ns=time.time_ns())


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def quarantine(tmp_path: Path) -> Path:
    return tmp_path / "quarantine"


OpenWriter = Callable[..., tuple[LogWriter, list[Repair]]]


@pytest.fixture
def open_writer(log_dir: Path, quarantine: Path, clock: FakeClock) -> Iterator[OpenWriter]:
    """Open the test log with `options(**overrides)`; every writer is closed at the end."""
    writers: list[LogWriter] = []

    def open_(
        *, fs: FileSystem | None = None, hooks: Hooks | None = None, **overrides: Any
    ) -> tuple[LogWriter, list[Repair]]:
        writer, repairs = open_log(
            log_dir, quarantine, options(**overrides), fs=fs, hooks=hooks, wall_ns=clock.wall_ns
        )
        writers.append(writer)
        return writer, repairs

    yield open_
    for writer in writers:
        with contextlib.suppress(LogIOError):
            writer.close()


def segment_files(log_dir: Path) -> dict[int, Path]:
    return dict(naming.list_segments(log_dir))


def disk_bytes(log_dir: Path) -> int:
    return sum(p.stat().st_size for p in segment_files(log_dir).values())


def crash_and_reopen(
    fs: FaultyFileSystem, writer: LogWriter, open_writer: OpenWriter, **overrides: Any
) -> tuple[LogWriter, list[Repair]]:
    """Cut the power under `writer`, drop everything unsynced, and open the log again."""
    fs.power_off()
    with contextlib.suppress(LogIOError):
        writer.close()
    fs.crash(unsynced="none")
    return open_writer(fs=fs, **overrides)


# -- seqs -------------------------------------------------------------------------------------


def test_appends_get_dense_seqs_and_read_back_in_order(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, repairs = open_writer()
    payloads = [payload(i, n) for i, n in enumerate([0, 1, 100, 3000, 17])]

    seqs = [writer.append(p) for p in payloads]

    assert repairs == []
    assert seqs == [0, 1, 2, 3, 4]
    assert writer.sync() == 4
    assert read_all(log_dir) == (list(enumerate(payloads)), None)


def test_next_seq_continues_after_reopen(open_writer: OpenWriter, log_dir: Path) -> None:
    writer, _ = open_writer()
    for i in range(3):
        writer.append(payload(i))
    writer.close()

    writer, repairs = open_writer()

    assert repairs == []
    assert (writer.next_seq, writer.durable_seq) == (3, 2)
    assert writer.append(payload(3)) == 3
    writer.sync()
    assert [s for s, _ in read_all(log_dir)[0]] == [0, 1, 2, 3]


def test_appends_from_many_threads_get_distinct_dense_seqs(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(segment_bytes=2048)
    got: dict[int, bytes] = {}
    lock = threading.Lock()
    start = threading.Barrier(4)

    def appender(t: int) -> None:
        start.wait()
        for i in range(200):
            p = f"t{t}-{i}".encode()
            seq = writer.append(p)
            with lock:
                got[seq] = p

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.sync()

    assert sorted(got) == list(range(800))
    assert read_all(log_dir) == (sorted(got.items()), None)


def test_append_after_close_is_refused(open_writer: OpenWriter) -> None:
    writer, _ = open_writer()
    writer.close()

    with pytest.raises(LogFullError, match="closed"):
        writer.append(b"late")


# -- segments ---------------------------------------------------------------------------------


def test_second_segment_starts_at_next_seq(open_writer: OpenWriter, log_dir: Path) -> None:
    writer, _ = open_writer()
    writer.append(payload(0))
    writer.append(payload(1))
    writer.rotate()

    assert writer.append(payload(2)) == 2
    writer.sync()

    files = segment_files(log_dir)
    assert sorted(files) == [0, 2]
    assert decode_header(files[2].read_bytes(), files[2].name).base_seq == 2
    assert [(s.base_seq, s.last_seq, s.sealed) for s in writer.segments()] == [
        (0, 1, True),
        (2, 2, False),
    ]


def test_rotate_on_an_empty_segment_is_a_no_op(open_writer: OpenWriter, log_dir: Path) -> None:
    writer, _ = open_writer()
    writer.rotate()
    writer.rotate()

    for i in range(3):
        writer.append(payload(i))
    writer.sync()

    assert sorted(segment_files(log_dir)) == [0]


def test_segment_rotates_before_a_frame_would_cross_segment_bytes(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(segment_bytes=512)
    for i in range(20):
        writer.append(payload(i, 100))
    writer.sync()

    files = segment_files(log_dir)
    frames_per_segment = (512 - HEADER_BYTES) // frame_size(100)
    assert sorted(files) == list(range(0, 20, frames_per_segment))
    sealed = [files[b] for b in sorted(files)[:-1]]
    assert {p.stat().st_size for p in sealed} == {
        HEADER_BYTES + frames_per_segment * frame_size(100)
    }
    assert read_all(log_dir)[1] is None


def test_a_frame_larger_than_a_segment_gets_a_segment_of_its_own(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(segment_bytes=512)
    writer.append(payload(0))
    writer.append(payload(1, 2000))
    writer.append(payload(2))
    writer.sync()

    files = segment_files(log_dir)
    assert sorted(files) == [0, 1, 2]
    assert files[1].stat().st_size == HEADER_BYTES + frame_size(2000)


def test_segment_older_than_segment_max_age_rotates(
    open_writer: OpenWriter, log_dir: Path, writer_time: WriterTime
) -> None:
    writer, _ = open_writer(segment_max_age_s=60.0)
    writer.append(payload(0))
    writer.append(payload(1))
    writer_time.skew_s += 61.0

    writer.append(payload(2))
    writer.append(payload(3))
    writer.sync()

    assert sorted(segment_files(log_dir)) == [0, 2]


@pytest.mark.parametrize(("away_s", "rotated"), [(61.0, True), (30.0, False)])
def test_a_reopened_segment_is_as_old_as_its_first_record(
    open_writer: OpenWriter, log_dir: Path, clock: FakeClock, away_s: float, rotated: bool
) -> None:
    first_ts = clock.wall_ns()
    writer, _ = open_writer(segment_max_age_s=60.0)
    writer.append(payload(0), ts_ns=first_ts)
    writer.close()
    clock.advance(int(away_s * 1e9))  # the writer was down (or restarting) this long

    writer, _ = open_log(
        log_dir,
        log_dir.parent / "quarantine",
        options(segment_max_age_s=60.0),
        ts_of=lambda _payload: first_ts,
        wall_ns=clock.wall_ns,
    )
    try:
        writer.append(payload(1))
        writer.sync()
    finally:
        writer.close()

    assert sorted(segment_files(log_dir)) == ([0, 1] if rotated else [0])


def test_sealed_segments_are_truncated_to_their_data(
    open_writer: OpenWriter, log_dir: Path, clock: FakeClock
) -> None:
    hooks = Hooks()
    writer, _ = open_writer(hooks=hooks, preallocate=True, segment_bytes=4096)
    for i in range(3):
        writer.append(payload(i, 50), ts_ns=1000 + i)
    writer.rotate()
    writer.append(payload(3, 50))
    writer.sync()

    data_bytes = HEADER_BYTES + 3 * frame_size(50)
    files = segment_files(log_dir)
    assert files[0].stat().st_size == data_bytes
    assert files[3].stat().st_size == 4096  # the active one keeps its preallocation
    assert hooks.sealed == [SegmentInfo(0, 2, 1000, 1002, data_bytes, sealed=True)]
    assert read_all(log_dir)[1] is None


def test_active_segment_is_preallocated_and_zero_after_its_data(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(preallocate=True, segment_bytes=8192)
    for i in range(5):
        writer.append(payload(i, 30))
    writer.sync()

    data = segment_files(log_dir)[0].read_bytes()
    data_end = HEADER_BYTES + 5 * frame_size(30)
    assert len(data) == 8192
    assert data[data_end:] == bytes(8192 - data_end)
    assert [s for s, _ in read_all(log_dir)[0]] == [0, 1, 2, 3, 4]


def test_reopen_preallocates_the_newest_segment_again(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(preallocate=False)
    writer.append(payload(0))
    writer.close()

    open_writer(preallocate=True, segment_bytes=8192)

    assert segment_files(log_dir)[0].stat().st_size == 8192


# -- repair on open ---------------------------------------------------------------------------


def test_torn_trailing_frame_is_cut_and_quarantined(
    open_writer: OpenWriter, log_dir: Path, quarantine: Path
) -> None:
    writer, _ = open_writer(preallocate=True, segment_bytes=4096)
    for i in range(3):
        writer.append(payload(i))
    writer.close()
    path = segment_files(log_dir)[0]
    data_end = HEADER_BYTES + 3 * frame_size(len(payload(0)))
    torn = encode_frame(3, b"x" * 50)[: FRAME_HEADER_BYTES + 3]  # a frame cut mid-payload
    with path.open("r+b") as f:
        f.seek(data_end)
        f.write(torn)

    writer, repairs = open_writer(preallocate=True, segment_bytes=4096)

    (repair,) = repairs
    assert (repair.segment, repair.offset, repair.bytes_cut) == (path.name, data_end, len(torn))
    assert repair.reason == "frame checksum mismatch"  # the zeros after it became "payload"
    assert repair.quarantined is not None
    assert Path(repair.quarantined).parent == quarantine
    assert Path(repair.quarantined).read_bytes() == torn
    assert path.read_bytes()[data_end:] == bytes(4096 - data_end)
    assert writer.next_seq == 3
    writer.append(payload(3))
    writer.sync()
    assert [s for s, _ in read_all(log_dir)[0]] == [0, 1, 2, 3]


def test_open_proceeds_without_preallocation_when_the_disk_is_full(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer()
    writer.append(payload(0))
    writer.close()
    fs = FaultyFileSystem()
    fs.fail_allocate(errno.ENOSPC)

    writer, repairs = open_writer(fs=fs, preallocate=True)

    assert repairs == []
    assert fs.fired == [FiredFault("allocate", segment_files(log_dir)[0], errno.ENOSPC)]
    writer.append(payload(1))
    assert writer.sync() == 1


# -- bounds -----------------------------------------------------------------------------------


def test_drop_oldest_reports_dropped_range(open_writer: OpenWriter, log_dir: Path) -> None:
    hooks = Hooks(floor=0)  # a consumer that never gets anywhere
    writer, _ = open_writer(hooks=hooks, segment_bytes=1024, max_bytes=2048, on_full="drop_oldest")
    for i in range(40):
        writer.append(payload(i, 200))
        writer.sync()
        assert disk_bytes(log_dir) <= 2048 + 1024

    assert hooks.drops, "the log never filled"
    assert hooks.drops[0].first_seq == 0
    for before, after in zip(hooks.drops, hooks.drops[1:], strict=False):
        assert after.first_seq == before.last_seq + 1
    assert hooks.deleted == [d.first_seq for d in hooks.drops]
    assert all(d.reason == "log full (on_full = drop_oldest)" for d in hooks.drops)
    records, error = read_all(log_dir)
    assert error is None
    assert [s for s, _ in records] == list(range(hooks.drops[-1].last_seq + 1, 40))


def test_drop_oldest_without_consumers_deletes_without_reporting_drops(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    hooks = Hooks(floor=None)
    writer, _ = open_writer(hooks=hooks, segment_bytes=1024, max_bytes=2048)
    for i in range(40):
        writer.append(payload(i, 200))
        writer.sync()

    assert hooks.deleted
    assert hooks.drops == []
    assert disk_bytes(log_dir) <= 2048 + 1024


def test_block_refuses_appends_until_consumers_pass(open_writer: OpenWriter, log_dir: Path) -> None:
    hooks = Hooks(floor=0)
    writer, _ = open_writer(hooks=hooks, segment_bytes=1024, max_bytes=2048, on_full="block")
    taken = 0
    while not writer.full and taken < 100:
        writer.append(payload(taken, 200))
        taken += 1
        writer.sync()
    with pytest.raises(LogFullError, match="full"):
        writer.append(b"refused")
    assert writer.full
    assert hooks.deleted == []
    assert hooks.drops == []

    hooks.floor = writer.next_seq  # the consumer catches up with everything taken
    writer.sync()

    assert not writer.full
    seq = writer.append(payload(taken, 200))
    assert seq == taken
    writer.sync()
    records, error = read_all(log_dir)
    assert error is None
    assert [s for s, _ in records] == list(range(records[0][0], seq + 1))
    assert hooks.deleted
    assert hooks.drops == []


# -- retention --------------------------------------------------------------------------------


def make_sealed_segments(writer: LogWriter, count: int, per_segment: int = 2) -> None:
    """`count` sealed segments of `per_segment` records each, and an active one of one."""
    seq = writer.next_seq
    for _ in range(count):
        for _ in range(per_segment):
            writer.append(payload(seq))
            seq += 1
        writer.rotate()
    writer.append(payload(seq))
    writer.sync()


def test_retention_deletes_passed_segments_older_than_retain(
    open_writer: OpenWriter, log_dir: Path, clock: FakeClock, writer_time: WriterTime
) -> None:
    hooks = Hooks(floor=None)
    writer, _ = open_writer(hooks=hooks, retain_s=3600.0)
    make_sealed_segments(writer, 3)
    clock.advance(HOUR_NS + 1)
    writer_time.skew_s += writer_module.RETENTION_CHECK_INTERVAL_S + 1

    writer.sync()

    assert hooks.deleted == [0, 2, 4]
    assert sorted(segment_files(log_dir)) == [6]
    assert [s for s, _ in read_all(log_dir)[0]] == [6]


def test_retention_keeps_segments_younger_than_retain(
    open_writer: OpenWriter, log_dir: Path, clock: FakeClock, writer_time: WriterTime
) -> None:
    hooks = Hooks(floor=None)
    writer, _ = open_writer(hooks=hooks, retain_s=3600.0)
    make_sealed_segments(writer, 3)
    clock.advance(HOUR_NS - 1)
    writer_time.skew_s += writer_module.RETENTION_CHECK_INTERVAL_S + 1

    writer.sync()

    assert hooks.deleted == []
    assert sorted(segment_files(log_dir)) == [0, 2, 4, 6]


def test_retention_keeps_segments_a_consumer_has_not_passed(
    open_writer: OpenWriter, log_dir: Path, clock: FakeClock, writer_time: WriterTime
) -> None:
    hooks = Hooks(floor=3)  # the slowest consumer has seqs 0-2: all of segment 0 only
    writer, _ = open_writer(hooks=hooks, retain_s=3600.0)
    make_sealed_segments(writer, 3)
    clock.advance(10 * HOUR_NS)
    writer_time.skew_s += writer_module.RETENTION_CHECK_INTERVAL_S + 1

    writer.sync()

    assert hooks.deleted == [0]
    assert sorted(segment_files(log_dir)) == [2, 4, 6]


def test_retention_after_reopen_dates_segments_by_their_files(
    open_writer: OpenWriter, log_dir: Path, clock: FakeClock
) -> None:
    writer, _ = open_writer(retain_s=3600.0)
    make_sealed_segments(writer, 2)
    writer.close()
    clock.advance(HOUR_NS + 10**9)
    hooks = Hooks(floor=None)

    writer, _ = open_writer(hooks=hooks, retain_s=3600.0)
    writer.sync()  # the first commit after opening applies retention

    assert hooks.deleted == [0, 2]
    assert sorted(segment_files(log_dir)) == [4]


def test_failing_delete_in_retention_is_reported_and_retried(
    open_writer: OpenWriter, log_dir: Path, clock: FakeClock, writer_time: WriterTime
) -> None:
    fs = FaultyFileSystem()
    hooks = Hooks(floor=None)
    writer, _ = open_writer(fs=fs, hooks=hooks, retain_s=3600.0)
    make_sealed_segments(writer, 2)
    clock.advance(HOUR_NS + 1)
    writer_time.skew_s += writer_module.RETENTION_CHECK_INTERVAL_S + 1
    fs.fail_unlink(errno.EIO)

    with pytest.raises(LogIOError) as raised:
        writer.sync()

    assert raised.value.op == "delete"
    assert fs.armed() == []
    writer.append(payload(5))  # the writer goes on
    writer_time.skew_s += writer_module.RETENTION_CHECK_INTERVAL_S + 1
    assert writer.sync() == 5
    assert writer.io_error is None
    assert hooks.deleted == [0, 2]
    assert [s for s, _ in read_all(log_dir)[0]] == [4, 5]


# -- durability -------------------------------------------------------------------------------


def test_fsync_always_makes_each_append_durable_on_its_own(open_writer: OpenWriter) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, fsync="always")

    seq = writer.append(payload(0))

    assert writer.wait_durable(seq, timeout=WAIT_S)
    writer, _ = crash_and_reopen(fs, writer, open_writer)
    assert writer.next_seq == 1


def test_fsync_interval_makes_appends_durable_without_sync(open_writer: OpenWriter) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, fsync="interval", fsync_interval_s=0.01)

    seq = writer.append(payload(0))

    assert writer.wait_durable(seq, timeout=WAIT_S)
    writer, _ = crash_and_reopen(fs, writer, open_writer)
    assert writer.next_seq == 1


def test_fsync_never_raises_durable_seq_without_fdatasync(open_writer: OpenWriter) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, fsync="never", fsync_interval_s=0.01)
    datasyncs = fs.stats.datasyncs

    seq = writer.append(payload(0))

    assert writer.wait_durable(seq, timeout=WAIT_S)
    assert fs.stats.datasyncs == datasyncs
    writer, _ = crash_and_reopen(fs, writer, open_writer)
    assert writer.next_seq == 0  # "never" trades the power-cut guarantee for fewer writes


def test_close_makes_pending_appends_durable_whatever_the_policy(
    open_writer: OpenWriter,
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, fsync="never")
    for i in range(3):
        writer.append(payload(i))

    writer.close()

    fs.crash(unsynced="none")
    writer, _ = open_writer(fs=fs)
    assert writer.next_seq == 3


def test_synced_appends_survive_a_power_cut_and_unsynced_ones_are_lost(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs)
    for i in range(3):
        writer.append(payload(i))
    writer.sync()
    writer.append(payload(3))

    writer, repairs = crash_and_reopen(fs, writer, open_writer)

    assert repairs == []
    assert writer.next_seq == 3
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(3)], None)


def test_wait_durable_times_out_while_nothing_commits(open_writer: OpenWriter) -> None:
    writer, _ = open_writer()
    seq = writer.append(payload(0))

    assert not writer.wait_durable(seq, timeout=0)
    writer.sync()
    assert writer.wait_durable(seq, timeout=0)


def test_wait_durable_wakes_when_another_thread_syncs(open_writer: OpenWriter) -> None:
    writer, _ = open_writer()
    seq = writer.append(payload(0))
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(writer.wait_durable(seq)))
    waiter.start()

    writer.sync()
    waiter.join(WAIT_S)

    assert result == [True]


def test_durable_listeners_see_the_watermark_rise(open_writer: OpenWriter) -> None:
    writer, _ = open_writer(segment_bytes=512)
    seen: list[int] = []
    writer.add_durable_listener(seen.append)

    for batch in range(4):
        for i in range(5):
            writer.append(payload(batch * 5 + i, 60))
        writer.sync()

    assert seen == sorted(set(seen))
    assert seen[-1] == 19
    assert {4, 9, 14} <= set(seen)  # each sync's last seq was announced


def test_durable_listener_that_raises_does_not_stop_the_committer(
    open_writer: OpenWriter, caplog: pytest.LogCaptureFixture
) -> None:
    writer, _ = open_writer(fsync="interval", fsync_interval_s=0.01)
    seen: list[int] = []

    def broken(durable: int) -> None:
        seen.append(durable)
        raise RuntimeError("consumer is gone")

    writer.add_durable_listener(broken)
    first = writer.append(payload(0))
    assert writer.wait_durable(first, timeout=WAIT_S)
    second = writer.append(payload(1))

    assert writer.wait_durable(second, timeout=WAIT_S)  # the committer thread lives on
    assert second in seen
    assert "durable listener" in caplog.text


# -- disk faults ------------------------------------------------------------------------------


def test_enospc_on_write_keeps_appends_and_resumes(open_writer: OpenWriter, log_dir: Path) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs)
    writer.append(payload(0))
    writer.sync()
    fs.fail_next_write(errno.ENOSPC, keep_bytes=5)  # the disk fills mid-write
    writer.append(payload(1))
    writer.append(payload(2))

    with pytest.raises(LogIOError) as raised:
        writer.sync()

    assert raised.value.errno == errno.ENOSPC
    assert [f.kind for f in fs.fired] == ["write"]
    assert writer.durable_seq == 0
    assert writer.io_error is not None
    assert writer.append(payload(3)) == 3  # appends are kept in memory meanwhile
    assert writer.sync() == 3  # space came back: the retry rewrites over the partial bytes
    assert writer.io_error is None
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(4)], None)


def test_enospc_creating_a_segment_keeps_appends_and_resumes(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, preallocate=True)
    writer.append(payload(0))
    writer.rotate()
    writer.append(payload(1))
    fs.fail_allocate(errno.ENOSPC)

    with pytest.raises(LogIOError) as raised:
        writer.sync()

    assert raised.value.errno == errno.ENOSPC
    assert writer.durable_seq == 0  # the first segment was sealed before the failure
    assert sorted(segment_files(log_dir)) == [0]  # the half-made segment was removed
    fs.clear_faults()
    assert writer.sync() == 1
    assert sorted(segment_files(log_dir)) == [0, 1]
    assert read_all(log_dir) == ([(0, payload(0)), (1, payload(1))], None)


def test_eio_on_fsync_fails_writer_and_reopen_recovers(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs)
    writer.append(payload(0))
    writer.sync()
    fs.fail_next_datasync(errno.EIO)
    seq = writer.append(payload(1))

    with pytest.raises(LogIOError) as raised:
        writer.sync()

    assert raised.value.errno == errno.EIO
    assert writer.io_error is raised.value
    assert not writer.wait_durable(seq, timeout=WAIT_S)  # returns at once: it never will be
    with pytest.raises(LogIOError):
        writer.append(payload(2))
    writer.close()

    writer, repairs = open_writer(fs=fs)

    # The frame reached the page cache before the fdatasync failed: it is recovered.
    assert repairs == []
    assert (writer.next_seq, writer.durable_seq) == (2, 1)
    assert writer.append(payload(2)) == 2
    writer.sync()
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(3)], None)


def test_reopen_makes_the_recovered_tail_durable(open_writer: OpenWriter, log_dir: Path) -> None:
    """What the new writer calls durable after a failed fdatasync survives a power cut."""
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs)
    fs.fail_next_datasync(errno.EIO)
    writer.append(payload(0))
    with pytest.raises(LogIOError):
        writer.sync()
    writer.close()
    writer, _ = open_writer(fs=fs)
    assert writer.durable_seq == 0

    writer, _ = crash_and_reopen(fs, writer, open_writer)

    assert writer.next_seq == 1
    assert read_all(log_dir) == ([(0, payload(0))], None)


@pytest.mark.parametrize("calls", range(12))
def test_power_cut_anywhere_in_a_rotation_loses_nothing_durable(
    open_writer: OpenWriter, log_dir: Path, calls: int
) -> None:
    """Power goes after `calls` calls of: seal (sync, truncate, sync), create the next segment
    (open, allocate, write header, sync, sync dir), write and sync its first frame."""
    fs = FaultyFileSystem()
    for seed in range(30):
        writer, _ = open_writer(fs=fs, preallocate=True, segment_bytes=1024)
        base = writer.next_seq
        writer.append(payload(base))
        writer.sync()
        writer.rotate()
        writer.append(payload(base + 1))
        fs.cut_power_after(calls)
        with contextlib.suppress(LogIOError):
            writer.sync()
        durable = writer.durable_seq
        fs.power_off()
        with contextlib.suppress(LogIOError):
            writer.close()
        fs.crash(unsynced="random", garble=seed % 2 == 1, rng=random.Random(seed))

        writer, _ = open_writer(fs=fs, preallocate=True, segment_bytes=1024)

        assert writer.next_seq > durable
        assert read_all(log_dir) == ([(s, payload(s)) for s in range(writer.next_seq)], None)
        writer.close()


def test_hook_that_raises_does_not_stop_the_writer(
    open_writer: OpenWriter, log_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Hooks):
        def segment_sealed(self, info: SegmentInfo) -> None:
            raise RuntimeError("index is gone")

    writer, _ = open_writer(hooks=Broken())
    writer.append(payload(0))
    writer.rotate()
    writer.append(payload(1))

    assert writer.sync() == 1
    assert "log hook segment_sealed failed" in caplog.text
    assert [s for s, _ in read_all(log_dir)[0]] == [0, 1]


def test_stalled_disk_keeps_appends_refused_across_retries(
    open_writer: OpenWriter, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, max_pending_bytes=2000)
    taken = 0
    during_commit: list[bool] = []

    def full_disk(self: Any, data: Any, offset: int) -> None:
        # A driver appends while the committer is busy failing to write.
        try:
            writer.append(payload(-1))
            during_commit.append(True)
        except LogFullError:
            during_commit.append(False)
        raise OSError(errno.ENOSPC, "No space left on device")

    while taken < 1000:
        try:
            writer.append(payload(taken))
        except LogFullError:
            break
        taken += 1
    assert 0 < taken < 1000
    with monkeypatch.context() as m:
        m.setattr(type(writer._active.handle), "pwrite", full_disk)
        for _ in range(3):  # failed retries must not make room for more appends
            with pytest.raises(LogIOError):
                writer.sync()
    assert during_commit == [False, False, False]
    assert writer.sync() == taken - 1
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(taken)], None)


def test_failure_to_create_a_segment_names_the_new_segment(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, preallocate=True)
    writer.append(payload(0))
    writer.rotate()
    writer.append(payload(1))
    fs.fail_allocate(errno.ENOSPC)
    with pytest.raises(LogIOError) as raised:
        writer.sync()
    assert raised.value.op == "create"
    assert raised.value.path.endswith(naming.segment_name(1))


def test_a_payload_over_the_frame_limit_is_refused_before_anything_is_written(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(segment_bytes=4096)
    writer.append(b"before")
    writer.sync()
    files_before = {p.name: p.read_bytes() for p in log_dir.iterdir()}

    with pytest.raises(RecordTooLargeError) as raised:
        writer.append(bytes(MAX_PAYLOAD_BYTES + 1))
    assert (raised.value.size, raised.value.limit) == (MAX_PAYLOAD_BYTES + 1, MAX_PAYLOAD_BYTES)
    assert f"{MAX_PAYLOAD_BYTES + 1} bytes" in str(raised.value)
    assert f"limit of {MAX_PAYLOAD_BYTES} bytes" in str(raised.value)
    with pytest.raises(RecordTooLargeError) as raised:
        writer.append_many([b"fits", bytes(MAX_PAYLOAD_BYTES + 1), b"fits too"])
    assert raised.value.index == 1  # and none of the three was taken
    writer.sync()
    assert {p.name: p.read_bytes() for p in log_dir.iterdir()} == files_before
    assert (writer.next_seq, writer.durable_seq) == (1, 0)

    # The writer goes on; a payload of exactly the limit is a frame readers accept.
    assert writer.append(b"after") == 1
    assert writer.append(bytes(MAX_PAYLOAD_BYTES)) == 2
    writer.sync()
    records, error = read_all(log_dir)
    assert error is None
    assert [(s, len(p)) for s, p in records] == [(0, 6), (1, 5), (2, MAX_PAYLOAD_BYTES)]
    assert LogReader(log_dir).verify().ok


def test_append_many_takes_all_in_order_or_none(open_writer: OpenWriter, log_dir: Path) -> None:
    writer, _ = open_writer(segment_bytes=4096)
    assert writer.append_many([]) == -1
    last = writer.append_many((payload(i, 100) for i in range(100)), ts_ns=7)
    assert last == 99
    writer.sync()
    assert read_all(log_dir) == ([(i, payload(i, 100)) for i in range(100)], None)
    assert len(segment_files(log_dir)) > 1  # rotation inside one call
    writer.close()
    with pytest.raises(LogFullError):
        writer.append_many([payload(100)])


def test_close_commits_gap_events_that_its_own_drops_cause(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    class GapOnDrop(Hooks):
        def dropped(self, drop: Drop) -> None:
            super().dropped(drop)
            writer.append(b"gap:%d-%d" % (drop.first_seq, drop.last_seq))

    hooks = GapOnDrop(floor=0)  # a consumer that holds everything
    writer, _ = open_writer(hooks=hooks, segment_bytes=4096, max_bytes=8192, preallocate=True)
    for i in range(300):  # rotations pending in memory: only close() commits them
        writer.append(payload(i, 100))
    writer.close()
    assert hooks.drops
    records, error = read_all(log_dir)
    assert error is None
    gaps = [p for _, p in records if p.startswith(b"gap:")]
    last = hooks.drops[-1]
    assert gaps
    assert gaps[-1] == b"gap:%d-%d" % (last.first_seq, last.last_seq)


def test_reading_many_segments_lists_the_directory_a_bounded_number_of_times(
    open_writer: OpenWriter, log_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, _ = open_writer(segment_bytes=1024)
    for i in range(2000):
        writer.append(payload(i, 40))
    writer.sync()
    assert len(segment_files(log_dir)) > 50
    listings = 0
    real = naming.list_segments

    def counting(path: Path) -> list[tuple[int, Path]]:
        nonlocal listings
        listings += 1
        return real(path)

    monkeypatch.setattr(naming, "list_segments", counting)
    records, error = read_all(log_dir)
    assert error is None
    assert [s for s, _ in records] == list(range(2000))
    assert listings <= 3  # not one per segment: long logs read in linear time


# -- block-aligned commits and zero-ahead -------------------------------------------------------


def _two_batches(writer: LogWriter, first: int, second: int) -> None:
    """Append `first` records, let the committer close that batch (nothing is due for an
    hour), then append `second` more: two batches, as ticks of a running committer make."""
    start = writer.next_seq
    writer.append_many(payload(start + i) for i in range(first))
    writer._commit_when_due(3600.0)
    writer.append_many(payload(start + first + i) for i in range(second))


def _records_ending_by(offset: int, count: int) -> int:
    """How many of `count` records of `payload(i)` end at or before `offset` of a segment."""
    ends = [HEADER_BYTES + frame_size(len(payload(0))) * (i + 1) for i in range(count)]
    return sum(1 for end in ends if end <= offset)


def test_a_due_commit_writes_whole_blocks_and_keeps_the_rest_pending(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(align_bytes=64)
    _two_batches(writer, 3, 7)
    total = HEADER_BYTES + 10 * frame_size(len(payload(0)))
    boundary = total // 64 * 64
    assert boundary > HEADER_BYTES + 3 * frame_size(len(payload(0)))  # covers the first batch

    writer._commit_when_due(0.0)

    assert writer.segments()[-1].size == boundary  # a record straddles it, half written
    durable = _records_ending_by(boundary, 10)
    assert writer.durable_seq == durable - 1
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(durable)], None)
    writer.sync()
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(10)], None)


def test_a_due_commit_that_cannot_cover_the_oldest_batch_with_blocks_writes_everything(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(align_bytes=4096)
    _two_batches(writer, 3, 2)  # far less than a block: the due records must not wait

    writer._commit_when_due(0.0)

    assert writer.durable_seq == 4
    assert len(read_all(log_dir)[0]) == 5


def test_a_power_cut_after_an_aligned_commit_keeps_every_acknowledged_record(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, align_bytes=64)
    _two_batches(writer, 3, 7)
    writer._commit_when_due(0.0)
    acknowledged = writer.durable_seq + 1

    writer, repairs = crash_and_reopen(fs, writer, open_writer)

    # The straddling record's first half was synced: cut as a torn tail, as after any crash.
    assert [r.offset for r in repairs] == [HEADER_BYTES + acknowledged * frame_size(24)]
    assert writer.next_seq == acknowledged
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(acknowledged)], None)


def test_aligned_commits_continue_a_half_written_record(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    writer, _ = open_writer(align_bytes=16)
    expected = 0
    for round_ in range(6):
        _two_batches(writer, 2, 3)
        expected += 5
        writer._commit_when_due(0.0)
        assert writer.segments()[-1].size % 16 == 0, round_
    writer.sync()

    assert read_all(log_dir) == ([(i, payload(i)) for i in range(expected)], None)


def test_zero_ahead_writes_zeros_after_the_data_while_commits_are_small(
    open_writer: OpenWriter, log_dir: Path
) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, preallocate=True, align_bytes=64, zero_ahead_bytes=1024)
    _two_batches(writer, 3, 7)
    written = fs.stats.bytes_written

    writer._commit_when_due(0.0)

    boundary = writer.segments()[-1].size
    # The whole blocks, then 1 KiB of zeros from the end of the data on (not past the cut:
    # the straddling record's bytes are still to come).
    assert fs.stats.bytes_written - written == (boundary - HEADER_BYTES) + 1024
    writer.sync()
    assert read_all(log_dir) == ([(i, payload(i)) for i in range(10)], None)


def test_no_zero_ahead_without_preallocation(open_writer: OpenWriter) -> None:
    fs = FaultyFileSystem()
    writer, _ = open_writer(fs=fs, preallocate=False, align_bytes=64, zero_ahead_bytes=1024)
    _two_batches(writer, 3, 7)
    written = fs.stats.bytes_written

    writer._commit_when_due(0.0)

    assert fs.stats.bytes_written - written == writer.segments()[-1].size - HEADER_BYTES
