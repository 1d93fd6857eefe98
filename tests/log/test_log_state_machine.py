"""The log as a state machine over a FaultyFileSystem: whatever happens, nothing durable is lost.

Hypothesis drives one writer through appends, syncs, rotations, reopens, power cuts (between
two commits, or in the middle of one, or while a fresh data dir and its parents are created),
a full disk and a failing fdatasync. The model is the
list of payloads the writer has taken, in seq order, and how many of them it acknowledged as
durable (`durable_seq`). After every step the log read back with a `LogReader` must be the
durable records plus a prefix of the pending ones, seqs dense from 0, nothing reordered; after
every reopen the writer must continue at the next seq.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from logfiles import options, read_all

from pilog.errors import LogIOError
from pilog.log import writer as writer_module
from pilog.log.reader import LogReader
from pilog.log.repair import Repair, open_log
from pilog.log.writer import LogWriter
from pilog.testing.faultyfs import FaultyFileSystem, FiredFault, Unsynced

SEGMENT_BYTES = 512  # a few small frames, or one large one, per segment: rotation is routine


@pytest.fixture(autouse=True)
def idle_committer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the committer thread asleep: every commit is a rule, so runs replay exactly.

    Left awake, it retries a failed write after RETRY_AFTER_IO_ERROR_S and closes batches every
    ALIGN_TICK_S; on a slow machine (qemu) that fires armed faults between rules, and Hypothesis
    sees a rule's precondition change under the same choices (FlakyStrategyDefinition).
    """
    monkeypatch.setattr(writer_module, "RETRY_AFTER_IO_ERROR_S", 3600.0)
    monkeypatch.setattr(writer_module, "ALIGN_TICK_S", 3600.0)


# Mostly small payloads, empty ones included, and now and then one larger than a segment.
PAYLOAD_SIZES = st.one_of(st.integers(0, 48), st.integers(0, 48), st.integers(400, 3000))
UNSYNCED: st.SearchStrategy[Unsynced] = st.sampled_from(["random", "random", "none", "all"])


class LogMachine(RuleBasedStateMachine):
    """One log directory, its writer, and the model of what it must hold."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="pilog-log-machine-"))
        # A data dir that does not exist yet, nor its parent: creating them is a step too.
        self.log_dir = self.root / "var" / "data" / "log"
        self.quarantine = self.root / "var" / "data" / "quarantine"
        self.fs = FaultyFileSystem()
        self.writer: LogWriter | None = None
        self.taken: list[bytes] = []  # payload of every seq the writer returned, from 0
        self.durable = 0  # seqs below this were acknowledged durable
        self.failed = False  # a fdatasync failed: the writer must refuse appends
        self.fired_seen = 0
        self.appends = 0  # makes every payload distinct, also across a reused seq

    # -- opening --------------------------------------------------------------------------

    @initialize(
        preallocate=st.booleans(),
        seed=st.integers(0, 2**32 - 1),
        align_bytes=st.sampled_from([0, 16, 64, 4096]),
        zero_ahead_bytes=st.sampled_from([0, 40, 256]),
        crash_after=st.none() | st.integers(0, 12),
        unsynced=UNSYNCED,
    )
    def open_new_log(
        self,
        preallocate: bool,
        seed: int,
        align_bytes: int,
        zero_ahead_bytes: int,
        crash_after: int | None,
        unsynced: Unsynced,
    ) -> None:
        self.fs = FaultyFileSystem(seed=seed)
        # Blocks far smaller than a disk's, so that small appends cross them: the committer's
        # block-aligned commits (`commit_when_due`) then leave frames half written.
        self.options = options(
            segment_bytes=SEGMENT_BYTES,
            preallocate=preallocate,
            align_bytes=align_bytes,
            zero_ahead_bytes=zero_ahead_bytes,
        )
        if crash_after is not None:
            self.crash_while_creating(crash_after, unsynced)
        self.writer, repairs = open_log(self.log_dir, self.quarantine, self.options, fs=self.fs)
        assert all(r.bytes_cut == 0 or r.quarantined for r in repairs)
        assert self.writer.next_seq == 0
        assert read_all(self.log_dir) == ([], None)

    def crash_while_creating(self, calls: int, unsynced: Unsynced) -> None:
        """The first start in a fresh data dir, the power cut `calls` calls into it."""
        self.fs.cut_power_after(calls)
        writer: LogWriter | None = None
        with contextlib.suppress(OSError, LogIOError):
            writer, _ = open_log(self.log_dir, self.quarantine, self.options, fs=self.fs)
        self.fs.power_off()
        if writer is not None:
            with contextlib.suppress(LogIOError):
                writer.close()
            event("the power went after a fresh log was created")
        self.fs.crash(unsynced=unsynced)

    def reopen(self, *, everything_durable: bool) -> None:
        """Open the log again after the writer stopped, cleanly or not."""
        self.fs.clear_faults()
        self.writer, repairs = open_log(self.log_dir, self.quarantine, self.options, fs=self.fs)
        records, error = read_all(self.log_dir)
        assert error is None
        self.check_durable_plus_prefix([p for _, p in records])
        if everything_durable:
            assert len(records) == len(self.taken)
            assert repairs == []
        for repair in repairs:
            self.check_quarantined(repair)
        # Recovered records are durable now (open_log synced them): the model restarts there.
        self.taken = [p for _, p in records]
        self.durable = len(records)
        self.failed = False
        self.fired_seen = len(self.fs.fired)
        assert self.writer.next_seq == len(records)
        assert self.writer.durable_seq == len(records) - 1
        assert self.writer.io_error is None

    def check_quarantined(self, repair: Repair) -> None:
        assert repair.segment.endswith(".seg")
        if repair.bytes_cut:
            assert repair.quarantined is not None
            assert len(Path(repair.quarantined).read_bytes()) == repair.bytes_cut
        else:
            assert repair.quarantined is None

    def close_writer(self) -> bool:
        """Close the writer; True when it closed without an error."""
        assert self.writer is not None
        try:
            self.writer.close()
        except LogIOError:
            return False
        finally:
            self.observe_faults()
        return True

    # -- faults ---------------------------------------------------------------------------

    def new_faults(self) -> list[FiredFault]:
        fired = self.fs.fired[self.fired_seen :]
        self.fired_seen = len(self.fs.fired)
        return fired

    def observe_faults(self) -> list[FiredFault]:
        """Note which injected faults fired since the last look; a failed fdatasync is fatal."""
        fired = self.new_faults()
        if any(f.kind == "datasync" for f in fired):
            self.failed = True
        return fired

    def observe_durable(self) -> None:
        assert self.writer is not None
        durable = self.writer.durable_seq + 1
        assert durable >= self.durable, "the durable watermark went back"
        assert durable <= len(self.taken)
        self.durable = durable

    # -- rules ----------------------------------------------------------------------------

    @rule(size=PAYLOAD_SIZES)
    def append(self, size: int) -> None:
        assert self.writer is not None
        self.appends += 1
        payload = (f"{self.appends}:".encode() * size)[:size]
        if self.failed:
            with pytest.raises(LogIOError):
                self.writer.append(payload)
            return
        seq = self.writer.append(payload)
        assert seq == len(self.taken)
        self.taken.append(payload)

    @rule()
    def sync(self) -> None:
        assert self.writer is not None
        error: LogIOError | None = None
        try:
            durable = self.writer.sync()
        except LogIOError as e:
            error = e
        fired = self.observe_faults()
        if error is None:
            assert not self.failed
            assert durable == len(self.taken) - 1
        else:
            assert fired or self.failed, f"sync failed without an injected fault: {error}"
            assert error.errno in (errno.ENOSPC, errno.EIO)
        self.observe_durable()

    @rule()
    def tick_with_nothing_due(self) -> None:
        """A committer tick before anything is due: it only closes the batch appends go to."""
        assert self.writer is not None
        self.writer._commit_when_due(3600.0)

    @rule()
    def commit_when_due(self) -> None:
        """What the committer does when the oldest record is due: block-aligned if it can."""
        assert self.writer is not None
        pending = len(self.taken) - (self.writer.durable_seq + 1)
        self.writer._commit_when_due(0.0)
        self.observe_faults()
        self.observe_durable()
        if pending and self.durable < len(self.taken) and not self.failed:
            event("a block-aligned commit left records pending")

    @rule()
    def rotate(self) -> None:
        assert self.writer is not None
        self.writer.rotate()

    @rule(seq=st.integers(0, 60))
    def read_from(self, seq: int) -> None:
        records = [(s, bytes(p)) for s, p in LogReader(self.log_dir).read_from(seq)]
        expected = list(enumerate(self.taken))[seq : seq + len(records)]
        assert records == expected

    @rule()
    def close_and_reopen(self) -> None:
        failed_before = self.failed
        closed_cleanly = self.close_writer()  # a failed fdatasync in close is not raised
        self.reopen(everything_durable=closed_cleanly and not failed_before and not self.failed)

    @rule(unsynced=UNSYNCED, garble=st.booleans())
    def crash_and_reopen(self, unsynced: Unsynced, garble: bool) -> None:
        assert self.writer is not None
        self.observe_durable()
        self.fs.power_off()
        self.close_writer()
        self.fs.crash(unsynced=unsynced, garble=garble)
        self.reopen(everything_durable=False)

    @rule(calls=st.integers(0, 12), unsynced=UNSYNCED, garble=st.booleans())
    def crash_mid_commit_and_reopen(self, calls: int, unsynced: Unsynced, garble: bool) -> None:
        assert self.writer is not None
        self.fs.cut_power_after(calls)
        with contextlib.suppress(LogIOError):
            self.writer.sync()
        self.observe_faults()
        self.observe_durable()
        self.fs.power_off()
        self.close_writer()
        self.fs.crash(unsynced=unsynced, garble=garble)
        self.reopen(everything_durable=False)

    @precondition(lambda self: not self.failed)
    @rule(keep_bytes=st.integers(0, 64))
    def disk_full_on_next_write(self, keep_bytes: int) -> None:
        self.fs.fail_next_write(errno.ENOSPC, keep_bytes=keep_bytes)

    @precondition(lambda self: not self.failed)
    @rule()
    def eio_on_next_fdatasync(self) -> None:
        self.fs.fail_next_datasync(errno.EIO)

    # -- invariants -----------------------------------------------------------------------

    def check_durable_plus_prefix(self, payloads: list[bytes]) -> None:
        assert len(payloads) >= self.durable, "a durable record was lost"
        assert payloads == self.taken[: len(payloads)], "records differ from what was taken"

    @invariant()
    def log_is_durable_records_plus_a_prefix_of_pending(self) -> None:
        records, error = read_all(self.log_dir)
        assert error is None
        assert [s for s, _ in records] == list(range(len(records)))
        self.check_durable_plus_prefix([p for _, p in records])

    @invariant()
    def acknowledged_records_survive_a_power_cut_now(self) -> None:
        """What the writer calls durable is in the durable view of the disk (invariant 3)."""
        if self.writer is None:
            return
        acknowledged = max(self.durable, self.writer.durable_seq + 1)
        view_dir = self.root / "durable-view"
        shutil.rmtree(view_dir, ignore_errors=True)
        view_dir.mkdir()
        for name, content in self.fs.durable_view(self.log_dir).items():
            (view_dir / name).write_bytes(content)
        records, error = read_all(view_dir)
        assert error is None
        assert len(records) >= acknowledged, "an acknowledged record is not durable"
        assert [p for _, p in records] == self.taken[: len(records)]

    @invariant()
    def writer_takes_the_next_seq(self) -> None:
        if self.writer is not None:
            assert self.writer.next_seq == len(self.taken)
            assert self.writer.durable_seq < len(self.taken)

    @invariant()
    def a_failed_writer_says_so(self) -> None:
        if self.writer is not None and self.failed:
            assert self.writer.io_error is not None

    def teardown(self) -> None:
        if self.writer is not None:
            self.fs.clear_faults()
            with contextlib.suppress(LogIOError):
                self.writer.close()
        shutil.rmtree(self.root, ignore_errors=True)


# "log-machine" keeps the suite quick (about half a minute); "log-machine-thorough" is for
# a change to pilog/log (minutes):
#   PILOG_LOG_MACHINE_PROFILE=log-machine-thorough pytest --timeout=0 tests/log
settings.register_profile(
    "log-machine",
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "log-machine-thorough", settings.get_profile("log-machine"), max_examples=5000
)
PROFILE = os.environ.get("PILOG_LOG_MACHINE_PROFILE", "log-machine")

TestLogStateMachine = pytest.mark.slow(LogMachine.TestCase)
TestLogStateMachine.settings = settings.get_profile(PROFILE)
