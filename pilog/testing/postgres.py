"""A real PostgreSQL server on 127.0.0.1 for tests and benchmarks (Debian's `postgresql`).

`PostgresServer.create(home)` runs `initdb` into `home/data` (or copies a cluster made earlier
with `template=`, which is much faster than another initdb), then `start()` runs `postgres` on
a free TCP port of 127.0.0.1 with its Unix socket in `home/socket`. `stop()` is a fast
shutdown; `kill()` is `kill -9` of the postmaster and every backend (its process group), as in
a power cut of the server process; `restart()` stops or kills it, then starts it on the same
port. The superuser `postgres` logs in without a password over the socket (`admin()`); TCP
logins need a password (scram-sha-256), so a wrong one is refused as on a real server.

initdb and postgres refuse to run as root: as root, the cluster belongs to (and the server
runs as) the `postgres` user Debian's package makes, else `nobody`. The cluster lives in a
directory of its own under the system temp dir, since pytest's own is private to root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

PG_BIN_DIRS = tuple(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
WAIT_S = 60.0  # a bound for the server to start or stop, never a measured result
POLL_S = 0.02
START_ATTEMPTS = 3  # another process may take the free port between our probe and its bind
SUPERUSER = "postgres"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",  # kill -9 of the server keeps the page cache: fsync only matters to power
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "40",
    "log_min_messages": "warning",
    "logging_collector": "off",
    "lc_messages": "C",  # the sink reads some connection failures by their English message
}


def pg_binary(name: str) -> Path | None:
    """`name` (initdb, pg_ctl, postgres) from the newest installed PostgreSQL, else PATH."""
    for bin_dir in PG_BIN_DIRS:
        if (bin_dir / name).is_file():
            return bin_dir / name
    found = shutil.which(name)
    return Path(found) if found else None


def missing() -> str | None:
    """Why a server cannot be started here, or None."""
    if pg_binary("initdb") is None or pg_binary("postgres") is None:
        return (
            "PostgreSQL is not installed (Debian package `postgresql`; scripts/servers installs it)"
        )
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """One cluster in `home`, and the process serving it (when started)."""

    home: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _owner: pwd.struct_passwd | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "socket"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @classmethod
    def create(cls, home: Path | None = None, *, template: PostgresServer | None = None) -> Self:
        """A stopped server with a fresh cluster (a copy of `template`'s, when given)."""
        if home is None:
            home = Path(tempfile.mkdtemp(prefix="pilog-pg-"))
        home.mkdir(parents=True, exist_ok=True)
        server = cls(home, _owner=_cluster_owner())
        server.socket_dir.mkdir(exist_ok=True)
        server._chown(home, server.socket_dir)
        if template is not None:
            assert template.process is None, "copy a stopped cluster only"
            # cp -a keeps owners and modes (postgres wants its data dir 0700), and is quick.
            subprocess.run(["cp", "-a", str(template.data_dir), str(server.data_dir)], check=True)
        else:
            server._initdb()
        return server

    def configure(self, **settings: str) -> None:
        """Set server settings (`max_connections="200"`) from the next start on; they override
        SERVER_SETTINGS, which suit tests (no fsync, few connections)."""
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            for key, value in settings.items():
                conf.write(f"{key} = '{value}'\n")

    def url(self, user: str = SUPERUSER, dbname: str = "postgres") -> str:
        """The libpq URL of this server over TCP, with no password in it."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """The superuser's conninfo over the Unix socket (trusted: no password)."""
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def admin(self, dbname: str = "postgres") -> Any:
        """An autocommit psycopg connection as the superuser; the caller closes it."""
        import psycopg  # noqa: PLC0415 - only the postgres extra has it

        return psycopg.connect(self.admin_conninfo(dbname), autocommit=True, connect_timeout=10)

    def sql(self, statement: str, *params: Any, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; its rows (none for a command)."""
        with self.admin(dbname) as conn, conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall() if cur.description is not None else []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (on the port it had, if it ran before) and wait until it serves."""
        assert self.process is None, "already started"
        ports = [self.port] if self.port else [free_port() for _ in range(START_ATTEMPTS)]
        for port in ports:
            self.port = port
            if self._spawn():
                return
        raise RuntimeError(f"postgres did not start; see {self.log_path}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT): roll back open transactions, disconnect, checkpoint."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """`kill -9` the postmaster and all its backends at once; the next start recovers."""
        process = self.process
        if process is None:
            return
        # Every backend calls setsid(): they are the postmaster's children, not its process
        # group. Stopped first, the postmaster forks no new one while they are listed.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGSTOP)
        for pid in [*_children(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(WAIT_S)
        self.process = None
        # The postmaster's pid file stays behind; the next postmaster checks that the pid and
        # its shared memory are gone before it starts, as after a crash.

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill -9) and start again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def close(self) -> None:
        """Kill the server if running and delete its cluster."""
        self.kill()
        shutil.rmtree(self.home, ignore_errors=True)

    # -- internals -----------------------------------------------------------------------

    def _initdb(self) -> None:
        initdb = pg_binary("initdb")
        assert initdb is not None, missing()
        self._run(
            [
                str(initdb),
                f"--pgdata={self.data_dir}",
                f"--username={SUPERUSER}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--wal-segsize=1",  # MB: a smaller cluster to copy per test
            ]
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# pilog.testing.postgres\n")
            for key, value in SERVER_SETTINGS.items():
                conf.write(f"{key} = '{value}'\n")

    def _spawn(self) -> bool:
        """Start on `self.port`; True once it accepts connections, False if it exited."""
        postgres = pg_binary("postgres")
        assert postgres is not None, missing()
        args = [
            str(postgres),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-k",
            str(self.socket_dir),
        ]
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                args,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run does not reach the server
                **self._as_owner(),
            )
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            if self._accepts():
                return True
            time.sleep(POLL_S)
        self.kill()
        raise TimeoutError(f"postgres did not accept connections in {WAIT_S}s; see {self.log_path}")

    def _accepts(self) -> bool:
        try:
            with self.admin():
                return True
        except Exception:  # starting up, recovering, not listening yet
            return False

    def _signal(self, signum: int) -> None:
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
        try:
            process.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.process = None

    def _as_owner(self) -> dict[str, Any]:
        owner = self._owner
        if owner is None:
            return {}
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def _chown(self, *paths: Path) -> None:
        owner = self._owner
        if owner is None:
            return
        for path in paths:
            os.chown(path, owner.pw_uid, owner.pw_gid)

    def _run(self, args: list[str]) -> None:
        result = subprocess.run(
            args, capture_output=True, text=True, check=False, cwd=self.home, **self._as_owner()
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cluster_owner() -> pwd.struct_passwd | None:
    """Who owns and runs the cluster: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and neither user `postgres` nor `nobody` exists")
