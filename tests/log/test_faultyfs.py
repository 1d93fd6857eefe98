"""The FaultyFileSystem itself: what a power cut keeps, and the faults it injects."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

from pilog.testing.faultyfs import FaultyFileSystem, FiredFault


@pytest.fixture
def fs() -> FaultyFileSystem:
    return FaultyFileSystem(seed=1)


def written(fs: FaultyFileSystem, path: Path, *chunks: bytes, sync_upto: int = 0) -> None:
    """Create `path` (durable in its directory), append `chunks`, datasync after `sync_upto`."""
    handle = fs.open(path, create=True)
    fs.sync_dir(path.parent)
    offset = 0
    for i, chunk in enumerate(chunks):
        handle.pwrite(chunk, offset)
        offset += len(chunk)
        if i + 1 == sync_upto:
            handle.datasync()
    handle.close()


# -- power cuts -------------------------------------------------------------------------------


def test_synced_writes_survive_a_crash_and_unsynced_ones_may_not(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    written(fs, path, b"durable", b"-lost", sync_upto=1)
    assert path.read_bytes() == b"durable-lost"  # readers see the page cache

    fs.crash(unsynced="none")

    assert path.read_bytes() == b"durable"


def test_crash_keeping_everything_is_a_process_kill(fs: FaultyFileSystem, tmp_path: Path) -> None:
    path = tmp_path / "f"
    written(fs, path, b"durable", b"-kept", sync_upto=1)

    fs.crash(unsynced="all")

    assert path.read_bytes() == b"durable-kept"


def test_random_crash_keeps_the_durable_part_and_a_prefix_of_the_rest(tmp_path: Path) -> None:
    chunks = [b"0123456789", b"abcdefghij", b"ABCDEFGHIJ", b"klmnopqrst"]
    full = b"".join(chunks)
    lengths = set()
    for seed in range(200):
        fs = FaultyFileSystem(seed=seed)
        path = tmp_path / f"f{seed}"
        written(fs, path, *chunks, sync_upto=1)

        fs.crash()

        content = path.read_bytes()
        assert full.startswith(content)
        assert len(content) >= len(chunks[0])
        lengths.add(len(content))
    assert {10, 20, 30, 40} <= lengths  # whole writes kept or not
    assert lengths - {10, 20, 30, 40}, "no write was ever torn"


def test_garbled_crash_turns_only_the_torn_write_into_noise(tmp_path: Path) -> None:
    chunks = [b"\x00" * 8, b"\x11" * 64]
    noisy = 0
    for seed in range(100):
        fs = FaultyFileSystem(seed=seed)
        path = tmp_path / f"f{seed}"
        written(fs, path, *chunks, sync_upto=1)

        fs.crash(garble=True)

        content = path.read_bytes()
        assert content[:8] == chunks[0]
        assert len(content) <= 8 + 64
        if content[8:].strip(b"\x11"):
            noisy += 1
    assert noisy, "no torn write was ever garbled"


def test_a_name_never_synced_in_its_directory_vanishes(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    handle = fs.open(tmp_path / "new", create=True)
    handle.pwrite(b"data", 0)
    handle.datasync()  # the data is durable, the name is not
    handle.close()

    fs.crash(unsynced="none")

    assert not (tmp_path / "new").exists()


def test_an_unlink_never_synced_is_undone(fs: FaultyFileSystem, tmp_path: Path) -> None:
    path = tmp_path / "old"
    written(fs, path, b"keep me", sync_upto=1)
    fs.unlink(path)

    fs.crash(unsynced="none")

    assert path.read_bytes() == b"keep me"


def test_an_unlink_synced_in_its_directory_stays(fs: FaultyFileSystem, tmp_path: Path) -> None:
    path = tmp_path / "old"
    written(fs, path, b"gone", sync_upto=1)
    fs.unlink(path)
    fs.sync_dir(tmp_path)

    fs.crash(unsynced="none")

    assert not path.exists()


def test_truncate_and_allocate_are_undone_unless_synced(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    written(fs, path, b"0123456789", sync_upto=1)
    handle = fs.open(path, create=False)
    handle.truncate(4)
    handle.allocate(64)
    assert handle.size() == 64
    handle.close()

    fs.crash(unsynced="none")

    assert path.read_bytes() == b"0123456789"


def test_files_there_before_count_as_durable(fs: FaultyFileSystem, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"from before")
    handle = fs.open(path, create=False)
    handle.pwrite(b"!", 11)
    handle.close()

    fs.crash(unsynced="none")

    assert path.read_bytes() == b"from before"


def test_write_new_is_durable_data_under_a_name_that_needs_a_dir_sync(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    fs.write_new(tmp_path / "a", b"A")
    fs.write_new(tmp_path / "b", b"B")
    fs.sync_dir(tmp_path)
    fs.write_new(tmp_path / "c", b"C")

    fs.crash(unsynced="none")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    assert (tmp_path / "b").read_bytes() == b"B"


def test_durable_view_is_what_a_crash_dropping_everything_unsynced_leaves(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    written(fs, tmp_path / "synced", b"yes", b"no", sync_upto=1)
    written(fs, tmp_path / "gone", b"x", sync_upto=1)
    fs.unlink(tmp_path / "gone")  # not synced: comes back
    fs.open(tmp_path / "unnamed", create=True).close()  # not synced: vanishes

    view = fs.durable_view(tmp_path)
    fs.crash(unsynced="none")

    assert view == {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert view == {"synced": b"yes", "gone": b"x"}


def test_handles_opened_before_a_crash_are_dead(fs: FaultyFileSystem, tmp_path: Path) -> None:
    handle = fs.open(tmp_path / "f", create=True)
    fs.sync_dir(tmp_path)

    fs.crash()

    with pytest.raises(OSError, match="gone") as raised:
        handle.pwrite(b"after", 0)
    assert raised.value.errno == errno.EIO
    handle.close()  # closing never fails
    again = fs.open(tmp_path / "f", create=False)  # the filesystem works again
    assert again.size() == 0
    again.close()


def test_power_off_fails_every_call_until_the_crash(fs: FaultyFileSystem, tmp_path: Path) -> None:
    handle = fs.open(tmp_path / "f", create=True)
    fs.power_off()

    for call in (
        lambda: handle.pwrite(b"x", 0),
        handle.datasync,
        lambda: fs.open(tmp_path / "g", create=True),
        lambda: fs.sync_dir(tmp_path),
        lambda: fs.unlink(tmp_path / "f"),
    ):
        with pytest.raises(OSError, match="power is off"):
            call()
    handle.close()
    fs.crash()
    fs.write_new(tmp_path / "g", b"up again")


def test_cut_power_after_lets_that_many_calls_through(fs: FaultyFileSystem, tmp_path: Path) -> None:
    handle = fs.open(tmp_path / "f", create=True)
    fs.cut_power_after(2)

    handle.pwrite(b"one", 0)
    handle.pwrite(b"two", 3)
    with pytest.raises(OSError, match="power is off"):
        handle.datasync()
    handle.close()


# -- injected faults --------------------------------------------------------------------------


def test_fail_next_write_writes_some_bytes_then_raises_enospc(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    handle = fs.open(path, create=True)
    fs.fail_next_write(errno.ENOSPC, keep_bytes=3)

    with pytest.raises(OSError, match="No space left") as raised:
        handle.pwrite(b"abcdef", 0)
    handle.pwrite(b"XY", 3)  # one shot: the next write goes through

    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"abcXY"
    assert fs.fired == [FiredFault("write", path, errno.ENOSPC)]
    assert fs.armed() == []


def test_fail_next_datasync_raises_eio_and_leaves_the_writes_unsynced(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    path = tmp_path / "f"
    handle = fs.open(path, create=True)
    fs.sync_dir(tmp_path)
    handle.pwrite(b"data", 0)
    fs.fail_next_datasync(errno.EIO)

    with pytest.raises(OSError, match="Input/output error") as raised:
        handle.datasync()
    handle.close()
    fs.crash(unsynced="none")

    assert raised.value.errno == errno.EIO
    assert path.read_bytes() == b""


def test_fail_allocate_fails_until_cleared(fs: FaultyFileSystem, tmp_path: Path) -> None:
    handle = fs.open(tmp_path / "f", create=True)
    fs.fail_allocate(errno.ENOSPC)

    for _ in range(3):
        with pytest.raises(OSError, match="No space left") as raised:
            handle.allocate(4096)
        assert raised.value.errno == errno.ENOSPC
    fs.clear_faults()
    handle.allocate(4096)

    assert handle.size() == 4096
    assert [f.kind for f in fs.fired] == ["allocate"] * 3
    handle.close()


def test_fail_unlink_keeps_the_name(fs: FaultyFileSystem, tmp_path: Path) -> None:
    path = tmp_path / "f"
    fs.write_new(path, b"x")
    fs.fail_unlink(errno.EIO)

    with pytest.raises(OSError, match="Input/output error") as raised:
        fs.unlink(path)

    assert raised.value.errno == errno.EIO
    assert path.exists()
    fs.unlink(path)
    assert not path.exists()


def test_faults_times_counts_down(fs: FaultyFileSystem, tmp_path: Path) -> None:
    handle = fs.open(tmp_path / "f", create=True)
    fs.fail_next_datasync(errno.EIO, times=2)

    for _ in range(2):
        with pytest.raises(OSError, match="Input/output error"):
            handle.datasync()
    handle.datasync()

    assert len(fs.fired) == 2
    handle.close()


def test_crash_with_its_own_rng_is_reproducible(tmp_path: Path) -> None:
    results = []
    for run in range(2):
        fs = FaultyFileSystem()
        path = tmp_path / f"f{run}"
        written(fs, path, *(bytes([i]) * 10 for i in range(1, 9)), sync_upto=1)
        fs.crash(rng=random.Random(42), garble=True)
        results.append(path.read_bytes())
    assert results[0] == results[1]


def test_a_directory_never_synced_in_its_parent_vanishes_with_its_durable_files(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    fs.mkdir(tmp_path / "new")
    fs.mkdir(tmp_path / "new" / "inner")
    written(fs, tmp_path / "new" / "inner" / "f", b"durable", sync_upto=1)
    assert fs.durable_view(tmp_path / "new" / "inner") == {}

    fs.crash(unsynced="none")

    assert not (tmp_path / "new").exists()


def test_a_directory_synced_in_its_parent_stays(fs: FaultyFileSystem, tmp_path: Path) -> None:
    fs.mkdir(tmp_path / "new")
    fs.sync_dir(tmp_path)
    written(fs, tmp_path / "new" / "f", b"durable", sync_upto=1)
    assert fs.durable_view(tmp_path / "new") == {"f": b"durable"}

    fs.crash(unsynced="none")

    assert (tmp_path / "new" / "f").read_bytes() == b"durable"


def test_a_rename_never_synced_in_its_directory_is_undone(
    fs: FaultyFileSystem, tmp_path: Path
) -> None:
    written(fs, tmp_path / "old", b"old content", sync_upto=1)
    written(fs, tmp_path / "new.tmp", b"new content", sync_upto=1)
    fs.rename(tmp_path / "new.tmp", tmp_path / "old")
    assert (tmp_path / "old").read_bytes() == b"new content"
    assert fs.durable_view(tmp_path) == {"old": b"old content", "new.tmp": b"new content"}

    fs.crash(unsynced="none")

    assert (tmp_path / "old").read_bytes() == b"old content"
    assert (tmp_path / "new.tmp").read_bytes() == b"new content"


def test_a_rename_synced_in_its_directory_stays(fs: FaultyFileSystem, tmp_path: Path) -> None:
    written(fs, tmp_path / "old", b"old content", sync_upto=1)
    written(fs, tmp_path / "new.tmp", b"new content", sync_upto=1)
    fs.rename(tmp_path / "new.tmp", tmp_path / "old")
    fs.sync_dir(tmp_path)

    fs.crash(unsynced="none")

    assert (tmp_path / "old").read_bytes() == b"new content"
    assert not (tmp_path / "new.tmp").exists()
