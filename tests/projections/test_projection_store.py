"""The projections' lmdb store and runner: state and cursor commit together, reset, meta."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lmdb
import msgspec
import pytest

from pilog.events import Event, Note, Reading
from pilog.projections.base import ProjectionError, ProjectionMeta
from pilog.projections.latest.projection import LatestProjection, read_latest
from pilog.projections.lmdb_store import (
    CommitGroup,
    ProjectionRunner,
    ProjectionStore,
    last_key_in,
    prefix_end,
    projections_path,
)
from pilog.projections.rollup.projection import LAYOUT, RollupProjection

T0 = 1_795_000_000_000_000_000
SECOND = 1_000_000_000


def reading(seq: int, **values: float | int | str | bool) -> Event:
    return Event(seq, T0 + seq * SECOND, seq, b"", Reading("air", "bme280", dict(values)))


class FailingFlush(LatestProjection):
    """A latest projection whose flush writes its state, then fails before returning."""

    def flush(self, txn: lmdb.Transaction[bytes]) -> None:
        super().flush(txn)
        raise OSError("disk went away mid-commit")


def latest_runner(store: ProjectionStore, interval_s: float = 5.0) -> ProjectionRunner:
    return ProjectionRunner(
        LatestProjection("latest", store.db("latest")), store, commit_interval_s=interval_s
    )


def committed(store: ProjectionStore) -> tuple[int | None, dict[str, object]]:
    with store.snapshot() as snap:
        values = {r.field: r.value for r in read_latest(snap, "latest")}
        return snap.cursor("latest"), values


def test_commit_writes_state_and_cursor_in_one_transaction(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        runner = latest_runner(store)
        assert runner.next_seq is None
        runner.handle([reading(0, t=1.0), reading(1, t=2.0)])
        assert committed(store) == (None, {})  # nothing visible before the commit
        runner.commit()
        assert committed(store) == (2, {"t": 2.0})

        broken = FailingFlush("latest", store.db("latest"))
        broken_runner = ProjectionRunner(broken, store, commit_interval_s=5.0)
        assert broken_runner.next_seq == 2
        broken_runner.handle([reading(2, t=3.0)])
        with pytest.raises(OSError, match="mid-commit"):
            broken_runner.commit()
        # The state written before the failure was aborted together with the cursor.
        assert committed(store) == (2, {"t": 2.0})


def test_cursor_and_state_survive_reopening_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "projections"
    with ProjectionStore(path) as store:
        runner = latest_runner(store)
        runner.handle([reading(0, t=1.5), Event(1, T0, 1, b"", Note("hello"))])
        runner.commit()
    with ProjectionStore(path) as store:
        assert latest_runner(store).next_seq == 2  # the Note moved the cursor, not the state
        assert committed(store) == (2, {"t": 1.5})


def test_reset_drops_state_and_cursor_together(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        runner = latest_runner(store)
        runner.handle([reading(0, t=1.0)])
        runner.commit()
        runner.reset()
        assert runner.next_seq is None
        assert not runner.pending
        assert committed(store) == (None, {})
        runner.handle([reading(5, t=9.0)])  # after a reset the log may start anywhere
        runner.commit()
        assert committed(store) == (6, {"t": 9.0})


def test_changed_definition_resets_the_projection_for_a_rebuild(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        hourly = RollupProjection("rollup", store.db("rollup"), [3600])
        runner = ProjectionRunner(hourly, store, commit_interval_s=5.0)
        runner.handle([reading(0, t=1.0)])
        runner.commit()
        assert store.metas()["rollup"] == ProjectionMeta("rollup", (3600,), LAYOUT)
        both = RollupProjection("rollup", store.db("rollup"), [3600, 60])
        again = ProjectionRunner(both, store, commit_interval_s=5.0)
        assert again.next_seq is None  # replays the whole log into the new windows
        assert store.metas()["rollup"] == ProjectionMeta("rollup", (60, 3600), LAYOUT)
        with store.snapshot() as snap:
            assert list(snap.items("rollup")) == []


def test_a_rollup_stored_in_the_series_major_layout_is_rebuilt(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        dbs = {name: store.env.open_db(name) for name in (b"meta", b"cursors", b"state:rollup")}
        with store.env.begin(write=True) as txn:  # as a layout-1 pilog left it
            old_meta = msgspec.msgpack.encode(["rollup", [60]])
            txn.put(b"rollup", old_meta, db=dbs[b"meta"])
            txn.put(b"rollup", (50).to_bytes(8, "big"), db=dbs[b"cursors"])
            txn.put(b"air\x00t\x00" + bytes(12), b"old", db=dbs[b"state:rollup"])
        assert store.metas()["rollup"] == ProjectionMeta("rollup", (60,), 1)
        runner = rollup_runner(store)
        assert runner.next_seq is None  # rebuilt from the log's first event
        with store.snapshot() as snap:
            assert list(snap.items("rollup")) == []
            assert snap.cursor("rollup") is None


def test_maybe_commit_waits_for_the_interval_and_for_pending_events(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        runner = latest_runner(store, interval_s=5.0)
        assert not runner.maybe_commit(100.0)  # nothing pending
        runner.handle([reading(0, t=1.0)])
        assert runner.maybe_commit(100.0)  # the first commit is not delayed
        runner.handle([reading(1, t=2.0)])
        assert not runner.maybe_commit(104.9)
        assert committed(store)[0] == 1
        assert runner.maybe_commit(105.0)
        assert committed(store)[0] == 2
        assert not runner.maybe_commit(200.0)


def rollup_runner(store: ProjectionStore, interval_s: float = 5.0) -> ProjectionRunner:
    return ProjectionRunner(
        RollupProjection("rollup", store.db("rollup"), [60]), store, commit_interval_s=interval_s
    )


def txn_id(store: ProjectionStore) -> int:
    return int(store.env.info()["last_txnid"])


def test_a_group_commits_every_pending_runner_in_one_transaction(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        latest, rollup = latest_runner(store), rollup_runner(store)
        CommitGroup.assign(store, [latest, rollup])
        latest.handle([reading(0, t=1.0), reading(1, t=2.0)])
        rollup.handle([reading(0, t=1.0)])
        before = txn_id(store)
        assert latest.maybe_commit(100.0) == {"latest": 2, "rollup": 1}
        assert txn_id(store) == before + 1  # one transaction for both
        assert (latest.committed_seq, rollup.committed_seq) == (2, 1)
        with store.snapshot() as snap:
            assert (snap.cursor("latest"), snap.cursor("rollup")) == (2, 1)
        # The group's interval holds for each member, whichever thread asks.
        rollup.handle([reading(1, t=2.0)])
        assert rollup.maybe_commit(104.9) == {}
        assert latest.maybe_commit(105.0) == {"rollup": 2}  # only what is pending
        assert txn_id(store) == before + 2


def test_a_group_member_that_never_committed_commits_without_waiting_for_the_interval(
    tmp_path: Path,
) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        latest, rollup = latest_runner(store, 60.0), rollup_runner(store, 60.0)
        CommitGroup.assign(store, [latest, rollup])
        rollup.handle([reading(0, t=1.0)])
        assert rollup.maybe_commit(100.0) == {"rollup": 1}  # latest had nothing yet
        latest.handle([reading(0, t=1.0)])
        rollup.handle([reading(1, t=2.0)])

        # Its first commit (and whatever else is pending) goes in now, not a minute later.
        assert latest.maybe_commit(101.0) == {"latest": 1, "rollup": 2}
        latest.handle([reading(1, t=2.0)])
        assert latest.maybe_commit(102.0) == {}  # from now on, the group's interval
        assert latest.maybe_commit(161.0) == {"latest": 2}


def test_runners_of_different_commit_intervals_commit_apart(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        latest, rollup = latest_runner(store, 5.0), rollup_runner(store, 60.0)
        CommitGroup.assign(store, [latest, rollup])
        assert latest.group is not rollup.group
        latest.handle([reading(0, t=1.0)])
        rollup.handle([reading(0, t=1.0)])
        assert latest.maybe_commit(100.0) == {"latest": 1}
        assert rollup.maybe_commit(100.0) == {"rollup": 1}
        latest.handle([reading(1, t=2.0)])
        rollup.handle([reading(1, t=2.0)])
        assert latest.maybe_commit(105.0) == {"latest": 2}
        assert rollup.maybe_commit(105.0) == {}  # its own 60 s


def test_handle_refuses_redelivery_and_holes_but_skips_lost_seqs(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        runner = latest_runner(store)
        runner.handle([reading(3, t=1.0), reading(4, t=2.0)])
        with pytest.raises(AssertionError):
            runner.handle([reading(4, t=2.0)])
        with pytest.raises(AssertionError):
            runner.handle([reading(5, t=2.0), reading(7, t=2.0)])
        runner.handle([reading(10, t=3.0)])  # 5..9 deleted from the log before we read them
        assert runner.next_seq == 11


def test_reader_sees_a_missing_environment_as_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectionError, match=r"no projections yet .*\[\[projection\]\]"):
        ProjectionStore(projections_path(tmp_path), readonly=True)


def test_reader_sees_projections_not_yet_committed_as_empty(tmp_path: Path) -> None:
    path = projections_path(tmp_path)
    ProjectionStore(path).close()
    with ProjectionStore(path, readonly=True) as reader:
        assert reader.metas() == {}
        assert reader.cursor("latest") is None
        with reader.snapshot() as snap:
            assert read_latest(snap, "latest") == []


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"ab", b"ac"), (b"a\xff", b"b"), (b"\xff\xff", None), (b"", None), (b"a\x00", b"a\x01")],
)
def test_prefix_end_is_the_least_key_past_the_prefix(prefix: bytes, end: bytes | None) -> None:
    assert prefix_end(prefix) == end


def test_last_key_in_finds_the_greatest_key_of_a_prefix(tmp_path: Path) -> None:
    keys: Sequence[bytes] = [b"a", b"a\x00\x01", b"a\x00\xff", b"a\x01", b"b\xff", b"b\xff\xff"]
    with ProjectionStore(tmp_path / "projections") as store:
        db = store.db("x")
        with store.env.begin(write=True) as txn:
            for k in keys:
                db.put(txn, k, b"")
        assert db.last_in(b"a\x00") == b"a\x00\xff"
        assert db.last_in(b"a") == b"a\x01"
        assert db.last_in(b"b\xff") == b"b\xff\xff"
        assert db.last_in(b"c") is None
        assert db.last_in(b"") == b"b\xff\xff"
        with store.env.begin() as txn:
            assert last_key_in(txn.cursor(), b"0") is None


def test_delete_range_deletes_exactly_the_half_open_range(tmp_path: Path) -> None:
    with ProjectionStore(tmp_path / "projections") as store:
        db = store.db("x")
        with store.env.begin(write=True) as txn:
            for k in (b"a", b"b", b"c", b"d"):
                db.put(txn, k, b"")
            assert db.delete_range(txn, b"b", b"d") == 2
            assert db.delete_range(txn, b"x", b"z") == 0
            db.put(txn, b"e", b"")
            assert db.delete_range(txn, b"d", b"z") == 2  # up to the last key
        with store.snapshot() as snap:
            assert [k for k, _ in snap.items("x")] == [b"a"]
