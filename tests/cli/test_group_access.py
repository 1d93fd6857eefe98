"""An operator in the data dir's group reads everything `pilog run` writes; others cannot.

Real accounts (useradd): the service user runs `pilog run`; the operator's primary group is
its own and the data dir's group is a supplementary one (as `usermod -aG pilog` leaves it);
the stranger is in neither. Each reading command runs as a subprocess under `setpriv`,
against a live pilog and against the same data dir once pilog stopped.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    PILOG,
    WAIT_S,
    assert_one_sentence_error,
    clean_env,
    pilog,
    projections_toml,
    wait_for_seq,
    wait_until,
    write_config,
)

from pilog.projections.lmdb_store import ProjectionStore

PROJECTIONS = projections_toml(windows='["1m"]')
READING = {
    "show-latest": ["show", "latest", "--json"],
    "show-rollup": ["show", "rollup", "--sensor", "air", "--field", "temperature_c", "--json"],
    "tail": ["tail", "--json", "--from", "0"],
    "verify": ["verify"],
    "export": ["export"],
    "status": ["status", "--json"],
    "repair-dry-run": ["repair", "--dry-run"],
    "replay-dry-run": ["replay", "--from", "0", "--all", "--dry-run"],
}


@dataclass(frozen=True)
class Accounts:
    group: str  # owns the data dir, like `pilog` after docs/install.md
    service: str  # runs pilog run; primary group `group`
    operator: str  # own primary group, `group` as a supplementary one
    stranger: str  # in neither


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=WAIT_S)


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    """Throw-away accounts made with groupadd/useradd, deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating accounts and running pilog as them needs root")
    missing = [t for t in ("useradd", "groupadd", "userdel", "setpriv") if not shutil.which(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (passwd and util-linux)")
    tag = secrets.token_hex(3)
    acc = Accounts(f"plg{tag}", f"plg{tag}svc", f"plg{tag}op", f"plg{tag}x")
    made: list[str] = []
    try:
        _sh("groupadd", acc.group)
        _sh("useradd", "-M", "-N", "-g", acc.group, "-s", "/bin/false", acc.service)
        made.append(acc.service)
        _sh("useradd", "-M", "-U", "-G", acc.group, "-s", "/bin/false", acc.operator)
        made.append(acc.operator)
        _sh("useradd", "-M", "-U", "-s", "/bin/false", acc.stranger)
        made.append(acc.stranger)
        yield acc
    finally:
        for user in made:
            subprocess.run(["userdel", user], check=False, capture_output=True)
        subprocess.run(["groupdel", acc.group], check=False, capture_output=True)


def argv_as(user: str, *args: object) -> list[str]:
    """`pilog ARGS` as `user`, with the primary and supplementary groups of its account."""
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={_primary_group(user)}",
        "--init-groups",
        *PILOG,
        *map(str, args),
    ]


def _primary_group(user: str) -> int:
    return pwd.getpwnam(user).pw_gid


def as_user(user: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv_as(user, *args),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=clean_env(),
        check=False,
    )


@dataclass
class Site:
    data: Path
    config: Path
    service: subprocess.Popen[str]


@pytest.fixture(scope="module")
def site(accounts: Accounts) -> Iterator[Site]:
    """`pilog run` as the service user, with latest and rollup projections, until stopped."""
    with tempfile.TemporaryDirectory(prefix="pilog-group-") as name:
        home = Path(name)
        home.chmod(0o755)  # every user may enter; the data dir inside is pilog's to close
        shutil.chown(home, accounts.service, accounts.group)
        data = home / "data"
        config = write_config(home / "pilog.toml", data, extra=PROJECTIONS)
        config.chmod(0o644)
        if as_user(accounts.stranger, "--version").returncode != 0:
            pytest.skip(f"other users cannot run {PILOG[0]} here")
        service = subprocess.Popen(
            argv_as(accounts.service, "run", "-c", config),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
            umask=0o022,  # pilog tightens it itself
        )
        try:
            wait_for_seq(data, 5)
            wait_until(lambda: _shows_readings(config), "the projections' first commit")
            wait_until((data / "control.sock").exists, "the control socket")
            yield Site(data, config, service)
        finally:
            if service.poll() is None:
                service.send_signal(signal.SIGTERM)
            service.communicate(timeout=WAIT_S)


def _shows_readings(config: Path) -> bool:
    result = pilog("show", "latest", "--json", "-c", config)
    return result.returncode == 0 and bool(json.loads(result.stdout)["values"])


@pytest.fixture(scope="module")
def stopped_site(site: Site) -> Site:
    """The same data dir once `pilog run` stopped (after the tests of the running one)."""
    if site.service.poll() is None:
        site.service.send_signal(signal.SIGTERM)
        _, err = site.service.communicate(timeout=WAIT_S)
        assert site.service.returncode == 0, err
    return site


def check_works(result: subprocess.CompletedProcess[str], command: str) -> None:
    assert result.returncode == 0, f"{command}: {result.stderr}"
    assert "error" not in result.stderr, result.stderr
    if command.startswith("show"):
        doc = json.loads(result.stdout)
        assert doc["values" if command == "show-latest" else "windows"]
    elif command == "tail":
        assert len(result.stdout.splitlines()) >= 5
    elif command == "verify":
        assert result.stdout.startswith("ok: ")
    elif command == "replay-dry-run":
        assert "projection:latest: rebuilt from seq 0" in result.stdout
    elif command == "status":
        state = json.loads(result.stdout)
        assert state["index"] == "ok", "the index, read through SQLite's WAL files"
        assert state["cursors"], state


@pytest.mark.parametrize("command", READING)
def test_a_group_member_reads_a_running_pilog(accounts: Accounts, site: Site, command: str) -> None:
    result = as_user(accounts.operator, *READING[command], "-c", site.config)
    check_works(result, command)
    if command == "status":
        assert json.loads(result.stdout)["drivers"], "live state from the control socket"
    if command == "repair-dry-run":
        assert f"pilog is running (pid {site.service.pid}" in result.stdout
        assert "stop pilog first" in result.stdout


def test_a_real_repair_while_pilog_runs_is_refused_pointing_to_the_dry_run(site: Site) -> None:
    line = assert_one_sentence_error(pilog("repair", "-c", site.config))
    assert f"in use by pid {site.service.pid}" in line
    assert "stop pilog first" in line
    assert "--dry-run" in line


def test_the_lmdb_lock_file_is_group_writable_and_the_data_file_is_not(site: Site) -> None:
    projections = site.data / "projections"
    assert (projections / "lock.mdb").stat().st_mode & 0o777 == 0o660
    assert (projections / "data.mdb").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("command", READING)
def test_a_group_member_reads_a_stopped_pilog(
    accounts: Accounts, stopped_site: Site, command: str
) -> None:
    result = as_user(accounts.operator, *READING[command], "-c", stopped_site.config)
    check_works(result, command)
    if command == "repair-dry-run":
        assert "pilog is running" not in result.stdout


@pytest.mark.parametrize("command", READING)
def test_a_user_outside_the_group_is_refused_naming_the_group(
    accounts: Accounts, stopped_site: Site, command: str
) -> None:
    result = as_user(accounts.stranger, *READING[command], "-c", stopped_site.config)
    line = assert_one_sentence_error(result)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"data dir {stopped_site.data} (data_dir in the config file" in line
    assert f"is not readable by user {accounts.stranger}" in line
    assert f"usermod -aG {accounts.group} {accounts.stranger}" in line


def test_a_store_made_before_the_lock_file_was_shared_gets_its_mode_when_the_writer_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "projections"
    ProjectionStore(path).close()
    (path / "lock.mdb").chmod(0o640)  # as an older pilog left it
    with ProjectionStore(path):
        assert (path / "lock.mdb").stat().st_mode & 0o777 == 0o660


def test_a_real_repair_by_a_group_member_is_refused_naming_the_owner_to_run_it_as(
    accounts: Accounts, stopped_site: Site
) -> None:
    result = as_user(accounts.operator, "repair", "-c", stopped_site.config)
    line = assert_one_sentence_error(result)
    assert f"data dir {stopped_site.data} is not writable by this user" in line
    assert f"run this as its owner (sudo -u {accounts.service} pilog ...)" in line
