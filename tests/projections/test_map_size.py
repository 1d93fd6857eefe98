"""The lmdb map: sized for the address space, grown when full, a clear error at its ceiling.

Real lmdb environments with maps of a few KiB, so that they fill within a test; the state
they end with is compared byte for byte with one pass into a roomy map.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path

import lmdb
import pytest
from helpers import dump_lmdb

from pilog.config import parse_config
from pilog.errors import ConfigError
from pilog.events import Event, Reading
from pilog.projections import ProjectionFullError, open_store
from pilog.projections.latest.projection import LatestProjection, read_latest
from pilog.projections.lmdb_map import (
    GIB,
    KIB,
    MAP_SIZE_BYTES,
    MAP_SIZE_BYTES_32BIT,
    MAP_SIZE_MAX_BYTES,
    MAP_SIZE_MAX_BYTES_32BIT,
    MIB,
    MapLimits,
    map_limits,
)
from pilog.projections.lmdb_store import CommitGroup, ProjectionRunner, ProjectionStore
from pilog.projections.rollup.projection import RollupProjection

SECOND = 1_000_000_000
T0 = 1_795_000_000 * SECOND
SENSORS = [f"sensor-{i:02d}" for i in range(4)]
FIELDS = ["temperature_c", "humidity_pct", "pressure_hpa"]


def readings(n: int, start: int = 0) -> list[Event]:
    """`n` readings one second apart, each of one of four sensors with three fields."""
    return [
        Event(
            seq,
            T0 + seq * SECOND,
            seq,
            b"",
            Reading(SENSORS[seq % 4], "test", {f: seq * 0.5 + i for i, f in enumerate(FIELDS)}),
        )
        for seq in range(start, start + n)
    ]


def runners(store: ProjectionStore) -> list[ProjectionRunner]:
    """`latest` and a rollup of 1 s and 1 min windows, committed together."""
    built = [
        ProjectionRunner(
            LatestProjection("latest", store.db("latest")), store, commit_interval_s=5
        ),
        ProjectionRunner(
            RollupProjection("rollup", store.db("rollup"), [1, 60]), store, commit_interval_s=5
        ),
    ]
    CommitGroup.assign(store, built)
    return built


def batches(events: list[Event], size: int) -> Iterator[list[Event]]:
    for i in range(0, len(events), size):
        yield events[i : i + size]


def feed(store: ProjectionStore, events: Sequence[Event], batch: int) -> list[ProjectionRunner]:
    """Feed `events` from the stored cursor on, committing the group after every batch."""
    group = runners(store)
    start = group[0].next_seq or 0
    assert all((r.next_seq or 0) == start for r in group)  # they commit together
    for part in batches(list(events)[start:], batch):
        for r in group:
            r.handle(part)
        group[0].maybe_commit(0.0)
        assert group[0].group is not None
        group[0].group._last_commit_s = None  # the next batch commits too
    return group


@pytest.fixture(scope="module")
def one_pass(tmp_path_factory: pytest.TempPathFactory) -> dict[bytes, list[tuple[bytes, bytes]]]:
    """What 3000 readings leave in a roomy map, in one commit."""
    path = tmp_path_factory.mktemp("one-pass") / "projections"
    with ProjectionStore(path, map_size=16 * MIB) as store:
        feed(store, readings(3000), 3000)
    return dump_lmdb(path)


def test_a_tiny_map_fills_grows_and_the_commit_runs_again_with_all_its_state(
    tmp_path: Path,
    one_pass: dict[bytes, list[tuple[bytes, bytes]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "projections"
    caplog.set_level(logging.WARNING, "pilog.projections")
    with ProjectionStore(path, map_size=64 * KIB, map_size_max=16 * MIB) as store:
        assert store.map_size() == 64 * KIB
        feed(store, readings(3000), 250)
        grown = store.map_size()
    assert grown > 64 * KIB
    assert "the lmdb map was full at 64KiB; grew it to 128KiB (at most 16MiB)" in caplog.text
    # Every commit that found the map full ran again with all the pending state of both
    # projections: the result is the one pass, byte for byte.
    assert dump_lmdb(path) == one_pass
    assert (path / "data.mdb").stat().st_size <= grown


def test_at_the_ceiling_a_commit_fails_clearly_and_keeps_its_state_for_a_retry(
    tmp_path: Path, one_pass: dict[bytes, list[tuple[bytes, bytes]]]
) -> None:
    path = tmp_path / "projections"
    events = readings(3000)
    with ProjectionStore(path, map_size=64 * KIB, map_size_max=128 * KIB) as store:
        group = runners(store)

        def fill() -> None:
            for part in batches(events, 250):
                for r in group:
                    r.handle(part)
                for r in group:
                    r.commit()

        with pytest.raises(ProjectionFullError) as failed:
            fill()
        message = str(failed.value)
        assert f"the projections in {path} are full" in message
        assert "at its ceiling of 128KiB ([projections] map_size_max" in message
        assert "`pilog replay --projection NAME --from 0`" in message
        assert f"delete {path}" in message
        assert store.map_size() == 128 * KIB
        stored = store.cursor("rollup")
        assert group[1].pending
        assert group[1].committed_seq == stored

        # More room (what a raised map_size_max gives after a restart): the same runner
        # commits what it held when the map was full, and goes on.
        store.limits = MapLimits(store.limits.initial, 16 * MIB)
        assert group[1].commit() == {"rollup": group[1].next_seq}
        done = group[1].next_seq
        assert done is not None
        for part in batches(events[done:], 250):
            group[1].handle(part)
        group[1].commit()
    rollup = dump_lmdb(path)[b"state:rollup"]
    assert rollup == one_pass[b"state:rollup"]


def test_after_a_failed_commit_a_restart_from_the_stored_cursor_gives_the_same_state(
    tmp_path: Path, one_pass: dict[bytes, list[tuple[bytes, bytes]]]
) -> None:
    path = tmp_path / "projections"
    events = readings(3000)
    with (
        ProjectionStore(path, map_size=64 * KIB, map_size_max=128 * KIB) as store,
        pytest.raises(ProjectionFullError),
    ):
        feed(store, events, 100)
    # pilog stopped with the map full; restarted with room, the projections replay the log
    # from the cursor that was committed with their state.
    with ProjectionStore(path, map_size_max=16 * MIB) as store:
        assert store.cursor("latest") == store.cursor("rollup")
        assert 0 < (store.cursor("latest") or 0) < len(events)
        feed(store, events, 250)
    assert dump_lmdb(path) == one_pass


class FlakyRollup(RollupProjection):
    """A rollup whose every other flush writes everything, then fails (a disk error)."""

    flushes = 0

    def flush(self, txn: lmdb.Transaction[bytes]) -> None:
        super().flush(txn)
        self.flushes += 1
        if self.flushes % 2:
            raise OSError("the disk went away mid-commit")


def test_a_failed_commit_keeps_the_pending_state_for_the_next_one(tmp_path: Path) -> None:
    """Retention prunes windows and directory entries in every commit here: a flush run
    again after an aborted transaction must write exactly what the first would have."""
    events = readings(600)
    expected = tmp_path / "one-pass"
    with ProjectionStore(expected, map_size=16 * MIB) as store:
        runner = ProjectionRunner(
            RollupProjection("rollup", store.db("rollup"), [1, 60], keep_windows=4),
            store,
            commit_interval_s=5,
        )
        runner.handle(events)
        runner.commit()
    path = tmp_path / "flaky"
    with ProjectionStore(path, map_size=16 * MIB) as store:
        runner = ProjectionRunner(
            FlakyRollup("rollup", store.db("rollup"), [1, 60], keep_windows=4),
            store,
            commit_interval_s=5,
        )
        for part in batches(events, 50):
            runner.handle(part)
            with pytest.raises(OSError, match="mid-commit"):
                runner.commit()
            assert store.cursor("rollup") == runner.committed_seq  # nothing of it stored
            assert runner.commit() == {"rollup": part[-1].seq + 1}
    assert dump_lmdb(path) == dump_lmdb(expected)


def test_the_map_is_smaller_in_a_32_bit_address_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = (MAP_SIZE_BYTES_32BIT, GIB) if sys.maxsize < 2**32 else (GIB, MAP_SIZE_MAX_BYTES)
    assert map_limits() == MapLimits(*real)
    with ProjectionStore(tmp_path / "real") as store:
        assert store.map_size() == real[0]
    monkeypatch.setattr(sys, "maxsize", 2**63 - 1)
    assert map_limits() == MapLimits(MAP_SIZE_BYTES, MAP_SIZE_MAX_BYTES)
    assert (MAP_SIZE_BYTES, MAP_SIZE_MAX_BYTES) == (1 * GIB, 1 << 40)
    monkeypatch.setattr(sys, "maxsize", 2**31 - 1)
    assert map_limits() == MapLimits(MAP_SIZE_BYTES_32BIT, MAP_SIZE_MAX_BYTES_32BIT)
    assert (MAP_SIZE_BYTES_32BIT, MAP_SIZE_MAX_BYTES_32BIT) == (512 * MIB, 1 * GIB)
    with ProjectionStore(tmp_path / "small") as store:
        assert store.map_size() == 512 * MIB
        assert store.limits.ceiling == 1 * GIB
    # Configured sizes win; a map_size above the ceiling raises the ceiling.
    assert map_limits(256 * MIB) == MapLimits(256 * MIB, 1 * GIB)
    assert map_limits(None, 128 * MIB) == MapLimits(128 * MIB, 128 * MIB)
    assert map_limits(1536 * MIB) == MapLimits(1536 * MIB, 1536 * MIB)
    assert map_limits(1000, 1000) == MapLimits(64 * KIB, 64 * KIB)  # meta pages, a few dbs


def config_of(text: str, environ: dict[str, str] | None = None) -> tuple[int | None, int | None]:
    config = parse_config(tomllib.loads(text), "pilog.toml", environ or {})
    return config.projections.map_size, config.projections.map_size_max


def test_projections_section_sets_the_map_sizes(tmp_path: Path) -> None:
    assert config_of("") == (None, None)
    assert config_of('[projections]\nmap_size = "256MiB"\nmap_size_max = "1GiB"') == (
        256 * MIB,
        GIB,
    )
    assert config_of("", {"PILOG_PROJECTIONS__MAP_SIZE": '"64MiB"'}) == (64 * MIB, None)
    with pytest.raises(ConfigError, match=r"projections: map_size_max must be at least map_size"):
        config_of('[projections]\nmap_size = "1GiB"\nmap_size_max = "512MiB"')
    with pytest.raises(ConfigError, match=r"map_size must be at least 64KiB"):
        config_of("[projections]\nmap_size = 4096")
    config = parse_config(
        tomllib.loads(f'data_dir = "{tmp_path}"\n[projections]\nmap_size = "128KiB"'), "t", {}
    )
    with open_store(config) as store:
        assert store.map_size() == 128 * KIB


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pilog.events import Event, Reading
    from pilog.projections.latest.projection import LatestProjection
    from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore

    store = ProjectionStore(Path(sys.argv[1]), map_size=64 << 10, map_size_max=64 << 20)
    runner = ProjectionRunner(
        LatestProjection("latest", store.db("latest")), store, commit_interval_s=0
    )
    def commit(first, n):
        runner.handle([
            Event(s, 10**18 + s, s, b"", Reading(f"s{s}", "test", {"seq": s}))
            for s in range(first, first + n)
        ])
        runner.commit()
    commit(0, 10)
    print("ready", flush=True)
    sys.stdin.readline()
    for first in range(10, 5010, 500):  # 5000 keys: past the reader's map and the first map
        commit(first, 500)
    print(store.map_size(), flush=True)
    sys.stdin.read()  # hold the environment open until the test has read it
    store.close()
    """
)


def test_readers_open_and_follow_a_map_the_writer_grew(tmp_path: Path) -> None:
    path = tmp_path / "projections"
    argv = [sys.executable, "-c", WRITER, str(path)]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as w:
        assert w.stdin is not None
        assert w.stdout is not None
        assert w.stdout.readline() == "ready\n"
        with ProjectionStore(path, readonly=True) as early:
            before = early.map_size()
            assert before < 64 * KIB  # a reader maps what the file holds
            with early.snapshot() as snap:
                assert len(read_latest(snap, "latest")) == 10
            w.stdin.write("go\n")
            w.stdin.flush()
            grown = int(w.stdout.readline())
            assert grown > 64 * KIB
            # The data now lies past this reader's map (MDB_MAP_RESIZED): it maps the file.
            with early.snapshot() as snap:
                assert snap.cursor("latest") == 5010
                assert len(read_latest(snap, "latest")) == 5010
            assert early.map_size() > before
        with ProjectionStore(path, readonly=True) as late:
            assert late.cursor("latest") == 5010
        w.stdin.close()
        assert w.wait(timeout=60) == 0


NO_ROOM = textwrap.dedent(
    """
    import mmap, resource, sys
    from pathlib import Path
    from pilog.events import Event, Reading
    from pilog.projections import ProjectionFullError
    from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore
    from pilog.projections.rollup.projection import RollupProjection

    store = ProjectionStore(Path(sys.argv[1]), map_size=64 << 10, map_size_max=1 << 30)
    runner = ProjectionRunner(
        RollupProjection("rollup", store.db("rollup"), [1], keep_windows=10**6),
        store,
        commit_interval_s=0,
    )
    fields = {f"f{i}": i for i in range(8)}
    events = [
        Event(s, 10**18 + s * 10**9, s, b"", Reading("air", "t", fields))
        for s in range(25_000)
    ]
    status = open("/proc/self/status").read().splitlines()
    vm = next(int(line.split()[1]) for line in status if line.startswith("VmSize:")) << 10
    # The address space ends 16 MiB above what is mapped now: the map reaches 8 MiB, and
    # 8 MiB more to grow it to 16 MiB is not there.
    resource.setrlimit(resource.RLIMIT_AS, (vm + (16 << 20), resource.RLIM_INFINITY))
    try:
        mmap.mmap(-1, 32 << 20, flags=mmap.MAP_PRIVATE, prot=0).close()
        print("unenforced", flush=True)  # qemu-user takes RLIMIT_AS but does not apply it
        sys.exit(0)
    except OSError:
        pass
    try:
        for first in range(0, len(events), 500):
            runner.handle(events[first : first + 500])
            runner.commit()
    except ProjectionFullError as e:
        print(e, flush=True)
        # Still usable: what was committed reads back, and the pending state is kept.
        print(store.map_size(), store.cursor("rollup"), runner.committed_seq, runner.pending)
        sys.exit(0)
    print("never full")
    """
)


def test_a_map_the_address_space_has_no_room_for_is_not_remapped(tmp_path: Path) -> None:
    path = tmp_path / "projections"
    argv = [sys.executable, "-c", NO_ROOM, str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    if done.stdout.startswith("unenforced"):
        pytest.skip("RLIMIT_AS is not enforced here (qemu-user): no address space to run out of")
    message, numbers = done.stdout.splitlines()
    assert f"the projections in {path} are full: their lmdb map of 8MiB cannot grow" in message
    assert "to 16MiB, this 64-bit process has no room for it in its address space" in message
    assert '[projections] map_size = "16MiB"' in message
    size, cursor, committed, pending = numbers.split()
    assert int(size) == 8 * MIB
    assert cursor == committed
    assert pending == "True"
