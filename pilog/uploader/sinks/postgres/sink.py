"""`postgres`: one row per reading in a PostgreSQL table, through psycopg 3 (the `postgres` extra).

Each batch is one transaction: COPY into a session-local TEMP staging table, then
`INSERT INTO <table> SELECT … FROM staging ON CONFLICT (<unique_key>) DO NOTHING`, then
COMMIT. `send` is `ack` only once COMMIT returned, so a re-sent batch (after a crash, a lost
answer or `pilog replay`) adds nothing, however late it comes: the event id is the key.
Table layout, indexes and the TimescaleDB/Citus variants: README.md next to this file.

Answers (SQLSTATE classes, https://www.postgresql.org/docs/current/errcodes-appendix.html):
- cannot connect, connection lost, 08 (connection), 40 (serialization failure, deadlock),
  53 (disk full, too many connections), 55, 57 (admin shutdown, starting up, statement timeout),
  58 and XX (server I/O or internal errors), and anything unknown → `retry`;
- 28 (bad password, no pg_hba.conf entry) and 42501 (no privilege on the table or to create
  it) → `unauthorized`: the sink pauses. libpq reports a failed login without a SQLSTATE, so
  it is recognised by the server's English message (`lc_messages = 'C'` or English);
- 22 and 23 (a value the server refuses: `\\u0000` in a string is not valid in jsonb, NUL is not
  valid in text) → `rejected` with status 422: the loop bisects to the reading, which becomes
  a dead letter;
- 42P01, 42703, 3F000, 3D000 (no such table, column, schema, database) → `rejected` with
  status 404, other class 42 (wrong column types, no unique index for ON CONFLICT) → `rejected`
  with status 400: every reading is refused alike, which the loop reads as the endpoint's fault
  and pauses without dead letters.
A NaN or infinite value is stored as JSON `null` (the http-json encoding), so no normal reading
is refused. The connection is made lazily on the next `send` after a failure.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from pilog.config import SinkConfig
from pilog.errors import ConfigError
from pilog.events import Event, rfc3339
from pilog.uploader.sink import ACK, Outcome, SinkContext, read_secret, readings, secret_env_name

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    IMPORT_ERROR: ImportError | None = None
except ImportError as e:  # no psycopg, or no libpq under it; constructing the sink says which
    IMPORT_ERROR = e

LIBPQ_MISSING = (
    "sink {name}: psycopg is installed but cannot load libpq ({why}); install it: "
    "sudo apt install libpq5 (or pip install psycopg-binary where it has wheels: not armhf)"
)

log = logging.getLogger("pilog.uploader")

COLUMNS = ("id", "device_id", "seq", "sensor", "sensor_type", "ts", "payload")
KEY_COLUMNS = frozenset({"id", "device_id", "ts"})  # what a unique key may be made of
STAGING = "pilog_staging"
MIN_CONNECT_TIMEOUT_S = 2  # libpq treats less as 2
WATCHDOG_GRACE_S = 1.0  # past the deadline of a send: the server's own timeouts act first
# Failed logins come without a SQLSTATE (psycopg/psycopg#1188): the server's and libpq's words.
CREDENTIAL_MESSAGES = (
    "password authentication failed",
    "no password supplied",
    "pg_hba.conf",
    "permission denied",
    "authentication failed",
)
MISSING_STATES = frozenset({"42P01", "42703", "3F000", "3D000"})
UNAUTHORIZED_STATES = frozenset({"42501"})
_encode = msgspec.json.Encoder().encode
# COPY's text format: backslash, tab, newline and carriage return are escaped; NUL cannot be
# sent at all, and the server refuses it (22021): a rejected reading, never a broken batch.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class PostgresOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The `[[sink]]` keys of a postgres sink."""

    url: str = "postgresql://pilog@127.0.0.1:5432/pilog"  # libpq URL; query: sslmode etc.
    table: str = "pilog_readings"  # or "schema.table"; used as written (quoted)
    password_file: Path | None = None  # else $PILOG_SINK_<NAME>_PASSWORD, else libpq's own
    create_table: bool = True  # create the table and its indexes when missing
    unique_key: list[str] = msgspec.field(default_factory=lambda: ["id"])  # ON CONFLICT target

    def __post_init__(self) -> None:
        if not self.url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                f"url {self.url!r} must be a libpq URL: postgresql://user@host:port/dbname"
            )
        parts = self.table.split(".")
        if len(parts) > 2 or not all(parts):
            raise ValueError(f'table {self.table!r} must be "name" or "schema.name"')
        key = set(self.unique_key)
        if "id" not in key or not key <= KEY_COLUMNS or len(key) != len(self.unique_key):
            raise ValueError(
                f"unique_key {self.unique_key!r} must hold 'id' and may add 'ts' (TimescaleDB) "
                "or 'device_id' (Citus), each once"
            )


@dataclass(frozen=True, slots=True)
class _Statements:
    """The SQL of one sink, composed once with its table name quoted."""

    setup: Any
    copy: Any
    insert: Any
    create: Any

    @classmethod
    def for_table(cls, schema_table: tuple[str, ...], unique_key: Sequence[str]) -> _Statements:
        table = sql.Identifier(*schema_table)
        columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        staging = sql.Identifier("pg_temp", STAGING)
        key = sql.SQL(", ").join(map(sql.Identifier, unique_key))
        base = schema_table[-1]
        return cls(
            setup=sql.SQL(
                "SET LOCAL client_min_messages = warning; "
                "CREATE TEMP TABLE IF NOT EXISTS {staging} (id text, device_id text, seq bigint, "
                "sensor text, sensor_type text, ts timestamptz, payload jsonb) "
                "ON COMMIT DELETE ROWS"
            ).format(staging=staging),
            copy=sql.SQL("COPY {staging} ({columns}) FROM STDIN").format(
                staging=staging, columns=columns
            ),
            insert=sql.SQL(
                "INSERT INTO {table} ({columns}) SELECT {columns} FROM {staging} "
                "ON CONFLICT ({key}) DO NOTHING"
            ).format(table=table, columns=columns, staging=staging, key=key),
            create=sql.SQL(
                "CREATE TABLE IF NOT EXISTS {table} (\n"
                "    id text NOT NULL,\n"
                "    device_id text NOT NULL,\n"
                "    seq bigint NOT NULL,\n"
                "    sensor text NOT NULL,\n"
                "    sensor_type text NOT NULL,\n"
                "    ts timestamptz NOT NULL,\n"
                "    payload jsonb NOT NULL,\n"
                "    received_at timestamptz NOT NULL DEFAULT now(),\n"
                "    PRIMARY KEY ({key})\n"
                ");\n"
                "CREATE INDEX IF NOT EXISTS {by_sensor} ON {table} (device_id, sensor, ts);\n"
                "CREATE INDEX IF NOT EXISTS {by_time} ON {table} USING brin (ts);"
            ).format(
                table=table,
                key=key,
                by_sensor=sql.Identifier(f"{base}_device_sensor_ts"),
                by_time=sql.Identifier(f"{base}_ts_brin"),
            ),
        )


class _Refused(Exception):
    """A send or probe step failed in a way the outcome already describes."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


class PostgresSink:
    """Inserts each batch in one transaction over one lazily made connection; see the module doc."""

    Options: ClassVar[type[PostgresOptions]] = PostgresOptions
    extra: ClassVar[str | None] = "postgres"

    def __init__(self, config: SinkConfig, options: PostgresOptions, context: SinkContext) -> None:
        if IMPORT_ERROR is not None:
            if isinstance(IMPORT_ERROR, ModuleNotFoundError) and IMPORT_ERROR.name == "psycopg":
                raise IMPORT_ERROR  # the extra is missing: the caller names it
            why = str(IMPORT_ERROR).strip().splitlines()[-1].strip(" -")
            raise ConfigError(LIBPQ_MISSING.format(name=config.name, why=why))
        self.config = config
        self.options = options
        self.context = context
        try:
            params = conninfo_to_dict(options.url)
        except psycopg.ProgrammingError as e:
            raise ConfigError(f"sink {config.name}: bad url {options.url!r}: {e}") from e
        if "password" in params:
            # Kept out of the url so that the url can be logged: password_file or the env.
            raise ConfigError(
                f"sink {config.name}: take the password out of the url; put it in "
                f"password_file or ${secret_env_name(config.name, 'password')}"
            )
        self._password = read_secret(
            options.password_file, secret_env_name(config.name, "password"), what="password"
        )
        self._table = tuple(options.table.split("."))
        self._sql = _Statements.for_table(self._table, options.unique_key)
        self._where = _where(params, options.table)
        self._params = self._connect_params(params)
        self._lock = threading.Lock()
        self._conn: Any = None  # psycopg.Connection once connected
        self._table_ready = False  # checked (or made) on this connection
        self._told_create = False  # the CREATE TABLE to run was logged
        self._closed = False

    def where(self) -> str:
        """The server, database, user and table; never the password."""
        return self._where

    def create_sql(self) -> str:
        """The CREATE TABLE and CREATE INDEX statements for this sink's table."""
        return str(self._sql.create.as_string(None))

    def grant_sql(self, role: str) -> str:
        """The GRANT that lets `role` insert: INSERT, and SELECT on the key ON CONFLICT reads."""
        key = sql.SQL(", ").join(map(sql.Identifier, self.options.unique_key))
        grant = sql.SQL("GRANT SELECT ({key}), INSERT ON {table} TO {role};").format(
            key=key, table=sql.Identifier(*self._table), role=sql.Identifier(role)
        )
        return str(grant.as_string(None))

    def copy_rows(self, batch: Sequence[Event]) -> bytes:
        """The batch in COPY's text format, one line per reading in COLUMNS order."""
        device = self.context.device_id.translate(_COPY_ESCAPES)
        prefix = f"{device}:{self.context.epoch_hex}:"
        lines = []
        for e, r in readings(batch):
            payload = _encode(r.values).decode().translate(_COPY_ESCAPES)
            lines.append(
                f"{prefix}{e.seq}\t{device}\t{e.seq}\t{r.sensor.translate(_COPY_ESCAPES)}\t"
                f"{r.sensor_type.translate(_COPY_ESCAPES)}\t{rfc3339(e.ts_ns)}\t{payload}\n"
            )
        return "".join(lines).encode()

    def send(self, batch: Sequence[Event]) -> Outcome:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"postgres sink {self.config.name} is closed")
            return self._send(batch)

    def probe(self, deadline: float) -> Outcome:
        """Log in, check the table, its columns, key and privileges; writes nothing."""
        with self._lock:
            try:
                conn = self._connect(deadline)
                try:
                    left = max(deadline - time.monotonic(), 0.001)
                    conn.execute(_statement_timeout(left, local=False))
                    return self._check_table(conn)
                finally:
                    conn.close()
            except psycopg.Error as e:
                return self._outcome(e)

    def close(self) -> None:
        """Close the connection; a send waiting on the server has its socket cut first, so
        this returns at once rather than after the send's `timeout`. (A cancel request would
        wait on a hung server too: libpq before 17 has no timeout for it.) The cut send never
        sent COMMIT, so the server rolls its transaction back: the batch is sent again later."""
        if not self._lock.acquire(blocking=False):
            conn = self._conn
            if conn is not None:
                _abort(conn)
            self._lock.acquire()
        try:
            self._closed = True
            self._drop()
        finally:
            self._lock.release()

    # -- sending -------------------------------------------------------------------------

    def _send(self, batch: Sequence[Event]) -> Outcome:
        try:
            rows = self.copy_rows(batch)
        except (UnicodeEncodeError, msgspec.EncodeError) as e:
            # Text that is not Unicode (a lone surrogate) has no UTF-8: refused like the server
            # refuses NUL, so the loop bisects to the reading and keeps it as a dead letter.
            return Outcome("rejected", f"a reading cannot be encoded as UTF-8 JSON: {e}", 422)
        deadline = time.monotonic() + self.config.timeout
        try:
            if self._conn is None:
                self._conn = self._connect(deadline)
                self._table_ready = False
                log.info("postgres sink %s: connected to %s", self.config.name, self._where)
            conn = self._conn
            # A server that stops answering while TCP still acks (a hung proxy or balancer)
            # holds statement_timeout and keepalives off: past the deadline, cut the socket.
            watchdog = threading.Timer(
                max(deadline - time.monotonic(), 0.0) + WATCHDOG_GRACE_S, _abort, (conn,)
            )
            watchdog.daemon = True
            watchdog.start()
            try:
                return self._in_transaction(conn, rows)
            finally:
                watchdog.cancel()
        except _Refused as e:
            outcome = e.outcome
        except psycopg.Error as e:
            outcome = self._outcome(e)
        if outcome.kind != "rejected":
            # Lost, refused or unsure: start again from a fresh connection and table check. A
            # refusal leaves the connection as it was (the transaction rolled back).
            self._drop()
        return outcome

    def _in_transaction(self, conn: Any, rows: bytes) -> Outcome:
        """Table check (once per connection), then COPY, INSERT and COMMIT; ACK once done."""
        if not self._table_ready:
            self._prepare_table(conn)
            self._table_ready = True
            self._told_create = False
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(self._setup_sql())
            with cur.copy(self._sql.copy) as copy:
                copy.write(rows)
            cur.execute(self._sql.insert)
        # Leaving the block without an error means COMMIT returned: the rows are stored.
        return ACK

    def _setup_sql(self) -> Any:
        return _statement_timeout(self.config.timeout) + self._sql.setup

    def _prepare_table(self, conn: Any) -> None:
        """Create the table when missing and allowed; else raise _Refused saying what to run."""
        with conn.transaction():
            conn.execute(_statement_timeout(self.config.timeout))
            if self._exists(conn):
                return
        name = self.options.table
        if not self.options.create_table:
            raise _Refused(
                Outcome(
                    "rejected",
                    f"table {name} does not exist in {self._where}; create it with "
                    "`pilog check`'s SQL (docs/sinks.md) or set create_table = true",
                    404,
                )
            )
        try:
            with conn.transaction():
                conn.execute(_statement_timeout(self.config.timeout))
                conn.execute(self._sql.create)
        except psycopg.errors.InsufficientPrivilege as e:
            self._log_create_refused(conn.info.user, e)
            raise _Refused(
                Outcome(
                    "unauthorized",
                    f"role {conn.info.user} may not create table {name} in {self._where}; "
                    "run the CREATE TABLE logged above (or shown by `pilog check`) as its owner",
                )
            ) from e
        log.warning("postgres sink %s: created %s, with its indexes", self.config.name, self._where)

    def _log_create_refused(self, user: str, e: Exception) -> None:
        """The SQL to run, once until the table is there: the pause repeats the attempt."""
        if self._told_create:
            return
        self._told_create = True
        log.error(
            "postgres sink %s: role %s may not create table %s (%s); run as its owner:\n%s\n%s",
            self.config.name,
            user,
            self.options.table,
            _first_line(e),
            self.create_sql(),
            self.grant_sql(user),
        )

    def _exists(self, conn: Any) -> bool:
        qualified = sql.Identifier(*self._table).as_string(conn)
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()
        return bool(row and row[0])

    # -- connection ----------------------------------------------------------------------

    def _connect_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Connection keywords pilog adds unless the url sets them: timeouts from `timeout`."""
        timeout_s = float(self.config.timeout)
        defaults: dict[str, Any] = {
            "application_name": f"pilog {self.context.device_id}"[:63],
            # Bounds waiting on a server that vanished without a word (power cut, network).
            "tcp_user_timeout": max(1000, round(timeout_s * 1000)),
            "keepalives": 1,
            "keepalives_idle": max(1, math.ceil(timeout_s / 3)),
            "keepalives_interval": max(1, math.ceil(timeout_s / 9)),
            "keepalives_count": 3,
        }
        return {k: v for k, v in defaults.items() if k not in params}

    def _connect(self, deadline: float) -> Any:
        left = deadline - time.monotonic()
        conn = psycopg.connect(
            self.options.url,
            autocommit=True,
            password=self._password,
            connect_timeout=max(MIN_CONNECT_TIMEOUT_S, math.ceil(left)),
            **self._params,
        )
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._table_ready = False
        if conn is not None:
            conn.close()

    def _outcome(self, e: Exception) -> Outcome:
        """The Outcome for a psycopg error (module doc)."""
        state: str | None = getattr(e, "sqlstate", None)
        where = self._where
        if state is None:  # from libpq: connecting, or the connection went away
            message = _first_line(e)
            if any(m in message for m in CREDENTIAL_MESSAGES):
                return Outcome("unauthorized", f"{where} refused the login: {message}")
            if "database" in message and "does not exist" in message:
                return Outcome("rejected", f"{where}: {message}", 404)
            return Outcome("retry", f"{where}: {message}")
        detail = f"{where}: {state} {_first_line(e)}"
        if state[:2] == "28" or state in UNAUTHORIZED_STATES:
            return Outcome("unauthorized", detail)
        if state in MISSING_STATES:
            return Outcome("rejected", detail, 404)
        if state[:2] in ("22", "23"):
            return Outcome("rejected", detail, 422)
        if state[:2] == "42":
            return Outcome("rejected", detail, 400)
        return Outcome("retry", detail)

    # -- probing -------------------------------------------------------------------------

    def _check_table(self, conn: Any) -> Outcome:
        """What `pilog check` says about the table: ready, or what to change."""
        name = self.options.table
        qualified = sql.Identifier(*self._table).as_string(conn)
        user = conn.info.user
        if not self._exists(conn):
            if not self.options.create_table:
                return Outcome(
                    "rejected",
                    f"table {name} does not exist; create it as its owner:\n{self.create_sql()}",
                    404,
                )
            schema = self._table[0] if len(self._table) == 2 else None
            row = conn.execute(
                "SELECT has_schema_privilege(coalesce(%s, current_schema()), 'CREATE')", (schema,)
            ).fetchone()
            if not (row and row[0]):
                return Outcome(
                    "unauthorized",
                    f"table {name} does not exist and role {user} may not create it; "
                    f"create it as its owner:\n{self.create_sql()}",
                )
            return Outcome("ack", f"{self._where}: no table yet; the first send creates it")
        problems = self._table_problems(conn, qualified)
        if problems:
            return Outcome("rejected", f"{self._where}: {'; '.join(problems)}", 400)
        key = self.options.unique_key
        row = conn.execute(
            "SELECT has_table_privilege(%s, 'INSERT') "
            "AND bool_and(has_column_privilege(%s, k, 'SELECT')), "
            "has_database_privilege(current_database(), 'TEMP') FROM unnest(%s::text[]) AS k",
            (qualified, qualified, key),
        ).fetchone()
        if not (row and row[0]):
            # ON CONFLICT (key) reads the key: INSERT alone is not enough.
            return Outcome(
                "unauthorized",
                f"role {user} may not insert into {name}; run: {self.grant_sql(user)}",
            )
        if not row[1]:
            return Outcome(
                "unauthorized",
                f"role {user} may not create the TEMP staging table; run: GRANT TEMP ON "
                f"DATABASE {sql.Identifier(conn.info.dbname).as_string(conn)} TO "
                f"{sql.Identifier(user).as_string(conn)};",
            )
        return Outcome("ack", f"{self._where}: ready (role {user} may insert)")

    def _table_problems(self, conn: Any, qualified: str) -> list[str]:
        """Missing columns, and a missing unique index on `unique_key`."""
        rows = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped",
            (qualified,),
        ).fetchall()
        have = {r[0] for r in rows}
        problems = []
        missing = [c for c in COLUMNS if c not in have]
        if missing:
            problems.append(f"the table has no column {', '.join(missing)}")
        key = sorted(self.options.unique_key)
        indexes = conn.execute(
            "SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indpred IS NULL "
            "GROUP BY i.indexrelid",
            (qualified,),
        ).fetchall()
        if not any(list(r[0]) == key for r in indexes):
            problems.append(
                f"no unique index on ({', '.join(self.options.unique_key)}), which "
                "ON CONFLICT needs: add it, or set unique_key to the table's key"
            )
        return problems


def _abort(conn: Any) -> None:
    """Shut the connection's socket down: a send blocked on it fails at once (a retry)."""
    with contextlib.suppress(OSError, psycopg.Error):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        with sock:
            sock.shutdown(socket.SHUT_RDWR)


def _statement_timeout(seconds: float, *, local: bool = True) -> Any:
    """`SET LOCAL statement_timeout`, for this transaction; `local=False` for the session."""
    ms = max(1, round(seconds * 1000))
    scope = sql.SQL("LOCAL ") if local else sql.SQL("")
    return sql.SQL("SET {}statement_timeout = {}; ").format(scope, sql.Literal(ms))


def _where(params: dict[str, Any], table: str) -> str:
    """`postgresql://user@host:port/dbname table T`, from the url's parts: no password."""
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    host, dbname = params.get("host") or "", params.get("dbname") or ""
    return f"postgresql://{user}{host}{port}/{dbname} table {table}"


def _first_line(e: Exception) -> str:
    """The error's first line, without libpq's trailing newline and hints."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


SINK = PostgresSink
