"""What `pilog run` creates in its data dir is group-readable at most, never other-readable.

Operators in the `pilog` group read the log over SSH (`pilog tail`, `pilog status`; see
docs/install.md) and nobody else may. The one group-writable file is lmdb's lock file, in
which a reader of the projections takes its slot (tests/cli/test_group_access.py). The
parent's umask here is the common 022: pilog must tighten it itself (to 027), not rely on
the unit's `UMask=0027` or a container runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PILOG, WAIT_S, clean_env, run_pilog, wait_for_seq, wait_until, write_config

from pilog.testing.receiver import Receiver

DIR_MODE = 0o750
FILE_MODE = 0o640
SOCKET_MODE = 0o660  # connecting to a Unix socket needs write permission on it
# lmdb readers (`pilog show`) write their slot in it; the data file stays 0640.
LMDB_LOCK_FILE_MODE = 0o660
POISONED_SEQ = 3  # the receiver refuses this reading: a dead letter is written
# Numeric ids without passwd entries: the service's user, an operator in its group, a stranger.
SERVICE_UID, PILOG_GID = 20001, 20001
OPERATOR_UID = 20002
STRANGER_UID = STRANGER_GID = 20003


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The child inherits the usual login umask, which leaves files readable by all."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it, by path relative to `root`."""
    found: dict[str, int] = {}
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue  # a WAL file checkpointed away while we walked
        found[str(path.relative_to(root))] = st.st_mode
    return found


def wrong_modes(found: dict[str, int]) -> list[str]:
    """Every entry whose mode is not the one for its kind, as 'mode kind path'."""
    wrong = []
    for name, mode in sorted(found.items()):
        if stat.S_ISDIR(mode):
            kind, want = "dir", DIR_MODE
        elif stat.S_ISSOCK(mode):
            kind, want = "socket", SOCKET_MODE
        elif name == "projections/lock.mdb":
            kind, want = "lmdb lock file", LMDB_LOCK_FILE_MODE
        else:
            kind, want = "file", FILE_MODE
        if stat.S_IMODE(mode) != want:
            wrong.append(f"{stat.S_IMODE(mode):04o} {kind} {name} (want {want:04o})")
    return wrong


def test_run_creates_everything_group_readable_and_hidden_from_others(
    tmp_path: Path, umask_022: None
) -> None:
    data = tmp_path / "data"
    with Receiver() as rx:
        rx.poison(lambda obj: obj["seq"] == POISONED_SEQ)
        extra = (
            f'[[sink]]\nname = "rx"\ntype = "http-json"\nurl = "{rx.url}"\nlinger_ms = 20\n'
            '[[projection]]\ntype = "latest"\n'
            '[[projection]]\ntype = "rollup"\nwindows = ["1m"]\n'
        )
        config = write_config(tmp_path / "pilog.toml", data, extra=extra)
        with run_pilog(config) as run:
            dead_letters = data / "deadletter" / "rx.ndjson"
            wait_until(dead_letters.exists, "a dead letter")
            wait_until((data / "control.sock").exists, "the control socket")
            while_running = modes(data)
            assert run.stop() == 0, run.stderr.text()
    after_stop = modes(data)

    expected = {
        "LOCK",
        "log/00000000000000000000.seg",
        "index.sqlite",
        "projections/data.mdb",
        "projections/lock.mdb",
        "quarantine",
        "deadletter/rx.ndjson",
    }
    assert expected | {"control.sock"} <= while_running.keys()
    assert expected <= after_stop.keys()
    assert wrong_modes(while_running) == []
    assert wrong_modes(after_stop) == []


def argv_as(uid: int, gid: int, *args: object) -> list[str]:
    """The argv of `pilog ARGS` run as `uid:gid` with no supplementary groups."""
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        *PILOG,
        *map(str, args),
    ]


def as_user(uid: int, gid: int, *args: object) -> subprocess.CompletedProcess[str]:
    """`pilog ARGS` run to completion as `uid:gid`."""
    return subprocess.run(
        argv_as(uid, gid, *args),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=clean_env(),
        check=False,
    )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is root's alone)."""
    if os.geteuid() != 0:
        pytest.skip("running pilog as other users needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    with tempfile.TemporaryDirectory(prefix="pilog-perm-") as name:
        path = Path(name)
        path.chmod(0o755)
        os.chown(path, SERVICE_UID, PILOG_GID)
        yield path


def test_a_member_of_the_group_reads_a_running_log_and_a_stranger_cannot(
    shared_dir: Path,
) -> None:
    data = shared_dir / "data"
    config = write_config(shared_dir / "pilog.toml", data)
    config.chmod(0o644)
    if as_user(STRANGER_UID, STRANGER_GID, "--version").returncode != 0:
        pytest.skip(f"other users cannot run {PILOG[0]} here")
    service = subprocess.Popen(
        argv_as(SERVICE_UID, PILOG_GID, "run", "-c", config),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        umask=0o022,
    )
    try:
        wait_for_seq(data, 5)
        wait_until((data / "control.sock").exists, "the control socket")

        tail = as_user(OPERATOR_UID, PILOG_GID, "tail", "--json", "--from", "0", "-c", config)
        assert tail.returncode == 0, tail.stderr
        assert len(tail.stdout.splitlines()) >= 5
        status = as_user(OPERATOR_UID, PILOG_GID, "status", "--json", "-c", config)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["drivers"], "live state from the control socket"

        stranger = as_user(STRANGER_UID, STRANGER_GID, "tail", "--json", "-c", config)
        assert stranger.returncode != 0
        assert stranger.stdout == ""
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=WAIT_S)
    assert service.returncode == 0, err
