"""The postgres sink against a real PostgreSQL (Debian's `postgresql`) on 127.0.0.1.

Each test gets its own cluster, copied from one made by initdb per session, with a login role
`pilog` (password auth over TCP) owning the database `pilog`. Crashes are real: the server is
killed with -9 (postmaster and backends) while a batch is in the middle of its transaction.
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import PILOG, clean_env, run_pilog, toml_value, wait_until, write_config

from pilog.config import Config, Duration, parse_config
from pilog.datadir import EventLog
from pilog.events import DeadLetter, Event, Reading, Value
from pilog.history import History
from pilog.testing import postgres as pg_server
from pilog.testing.postgres import PostgresServer
from pilog.uploader import sinks as sinks_registry
from pilog.uploader.loop import Uploader
from pilog.uploader.sink import Outcome, SinkContext
from pilog.uploader.sinks.postgres.sink import PostgresOptions, PostgresSink

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pilog[postgres])")

DEVICE_ID = "pg-device"
EPOCH_HEX = "00112233445566778899aabbccddeeff"
BOOT_ID = bytes(range(16))
SINK = "warehouse"
USER, PASSWORD = "pilog", "s3cret-Pa55word"
WRITER = "writer"  # a role that may log in and insert, but not create tables
TABLE = "pilog_readings"
WAIT_S = 60.0
KILLS = 8

OpenSink = Callable[..., PostgresSink]


def reading_events(n: int, *, first_seq: int = 0) -> list[Event]:
    out = []
    for i in range(n):
        seq = first_seq + i
        values: dict[str, Value] = {"temperature_c": 20.0 + seq / 4, "count": seq, "ok": True}
        body = Reading(("air", "soil")[seq % 2], "bme280", values)
        out.append(Event(seq, 1_790_000_000_000_000_000 + seq * 1000, seq * 1000, BOOT_ID, body))
    return out


def sink_config(**keys: Any) -> Any:
    """A `[[sink]]` of the generic keys (name, timeout, retries) that every sink reads."""
    text = f'[[sink]]\nname = "{keys.pop("name", SINK)}"\ntype = "http-json"\nurl = "http://x"\n'
    for key, value in keys.items():
        text += f"{key} = {value!r}\n"
    config = parse_config(
        {"device_id": DEVICE_ID, "data_dir": "/nonexistent", **tomllib.loads(text)}, "t.toml", {}
    )
    return config.sink[0]


@pytest.fixture(scope="session")
def pg_template() -> Iterator[PostgresServer]:
    """One initdb per session, with the roles and database; each test copies it."""
    if reason := pg_server.missing():
        pytest.skip(reason)
    server = PostgresServer.create()
    server.start()
    server.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
    server.sql(f"CREATE ROLE {WRITER} LOGIN PASSWORD '{PASSWORD}'")
    server.sql(f"CREATE DATABASE pilog OWNER {USER}")
    server.stop()
    yield server
    server.close()


@pytest.fixture
def pg(pg_template: PostgresServer) -> Iterator[PostgresServer]:
    server = PostgresServer.create(template=pg_template)
    server.start()
    yield server
    server.close()


@pytest.fixture
def context(tmp_path: Path) -> SinkContext:
    return SinkContext(DEVICE_ID, EPOCH_HEX, tmp_path)


@pytest.fixture
def open_sink(
    pg: PostgresServer, context: SinkContext, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OpenSink]:
    """Makes PostgresSinks on `pg` as `pilog` (password from the env) and closes them all."""
    sinks: list[PostgresSink] = []
    monkeypatch.setenv(f"PILOG_SINK_{SINK.upper()}_PASSWORD", PASSWORD)

    def make(
        *,
        user: str = USER,
        timeout: float = 10,
        config: Any = None,
        in_context: SinkContext = context,
        **options: Any,
    ) -> PostgresSink:
        options.setdefault("url", pg.url(user, "pilog"))
        config = config or sink_config(timeout=timeout)
        sink = PostgresSink(config, PostgresOptions(**options), in_context)
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def stored(pg: PostgresServer, table: str = TABLE) -> list[tuple[Any, ...]]:
    return pg.sql(
        f"SELECT id, device_id, seq, sensor, sensor_type, ts, payload FROM {table} ORDER BY seq",
        dbname="pilog",
    )


def stored_seqs(pg: PostgresServer, table: str = TABLE) -> list[int]:
    return [r[0] for r in pg.sql(f"SELECT seq FROM {table} ORDER BY seq", dbname="pilog")]


def event_id(seq: int) -> str:
    return f"{DEVICE_ID}:{EPOCH_HEX}:{seq}"


def assert_no_secret(outcome: Outcome, caplog: pytest.LogCaptureFixture) -> None:
    assert PASSWORD not in outcome.detail
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


# -- delivery ---------------------------------------------------------------------------------


def test_batch_is_stored_one_row_per_reading_with_values_as_jsonb(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    sink = open_sink()
    batch = reading_events(5)
    assert sink.send(batch).kind == "ack"
    rows = stored(pg)
    assert [r[0] for r in rows] == [event_id(e.seq) for e in batch]
    first = rows[0]
    assert first[1:5] == (DEVICE_ID, 0, "air", "bme280")
    assert first[5].timestamp() == pytest.approx(1_790_000_000.0)
    assert first[6] == {"temperature_c": 20.0, "count": 0, "ok": True}


def test_same_batch_sent_again_adds_no_row(pg: PostgresServer, open_sink: OpenSink) -> None:
    sink = open_sink()
    batch = reading_events(20)
    assert sink.send(batch).kind == "ack"
    received = pg.sql(f"SELECT id, received_at FROM {TABLE} ORDER BY seq", dbname="pilog")
    assert sink.send(batch).kind == "ack"
    assert open_sink().send(batch[5:]).kind == "ack"  # another connection, overlapping
    assert sink.send(reading_events(10, first_seq=15)).kind == "ack"
    assert stored_seqs(pg) == list(range(25))
    # The first copy of each row is untouched: a re-send changes nothing, however late.
    assert (
        pg.sql(f"SELECT id, received_at FROM {TABLE} WHERE seq < 20 ORDER BY seq", dbname="pilog")
        == received
    )


def test_missing_table_is_created_with_its_indexes(pg: PostgresServer, open_sink: OpenSink) -> None:
    pg.sql("CREATE SCHEMA fleet AUTHORIZATION pilog", dbname="pilog")
    sink = open_sink(table="fleet.Readings")  # used as written: a capital stays
    assert sink.send(reading_events(3)).kind == "ack"
    indexes = pg.sql(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = 'fleet' ORDER BY indexname",
        dbname="pilog",
    )
    defs = [r[0] for r in indexes]
    assert any("PRIMARY KEY" in d or "_pkey" in d for d in defs), defs
    assert any("(device_id, sensor, ts)" in d for d in defs), defs
    assert any("USING brin (ts)" in d for d in defs), defs
    assert stored_seqs(pg, 'fleet."Readings"') == [0, 1, 2]


def test_values_that_need_escaping_round_trip_and_nan_is_null(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    values: dict[str, Value] = {
        "text": 'tab\there\nnew "quoted" back\\slash \r é ☃',
        "nan": math.nan,
        "inf": -math.inf,
        "big": 2**70,
        "flag": False,
    }
    event = Event(0, 1_790_000_000_000_000_000, 0, BOOT_ID, Reading("a\tb\\c", "t\n", values))
    assert open_sink().send([event]).kind == "ack"
    row = stored(pg)[0]
    assert row[3:5] == ("a\tb\\c", "t\n")
    assert row[6] == {**values, "nan": None, "inf": None}


def test_unique_key_with_ts_for_timescaledb_style_tables(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    sink = open_sink(unique_key=["id", "ts"])
    batch = reading_events(4)
    assert sink.send(batch).kind == "ack"
    assert sink.send(batch).kind == "ack"
    assert stored_seqs(pg) == [0, 1, 2, 3]
    assert sink.probe(deadline_in(10)).kind == "ack"


# -- failures ---------------------------------------------------------------------------------


def deadline_in(seconds: float) -> float:
    return time.monotonic() + seconds


@pytest.mark.parametrize("kill", [True, False], ids=["kill-9", "fast-shutdown"])
def test_server_going_down_mid_batch_is_retried_then_stored_once(
    pg: PostgresServer, open_sink: OpenSink, kill: bool
) -> None:
    sink = open_sink()
    assert sink.send(reading_events(10)).kind == "ack"  # the table exists, connected
    # Hold the table locked so the next batch stops inside its transaction, after its COPY.
    blocker = pg.admin("pilog")
    blocker.execute("BEGIN")
    blocker.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    outcome: list[Outcome] = []
    batch = reading_events(50, first_seq=5)
    sender = threading.Thread(target=lambda: outcome.append(sink.send(batch)))
    sender.start()
    wait_until(
        lambda: pg.sql(
            "SELECT 1 FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'",
            USER,
        ),
        "the batch to wait on the lock",
    )
    pg.restart(kill=kill)
    sender.join(WAIT_S)
    blocker.close()
    assert outcome[0].kind == "retry", outcome
    assert stored_seqs(pg) == list(range(10))  # nothing of the cut batch
    assert sink.send(batch).kind == "ack"  # reconnects by itself
    assert stored_seqs(pg) == list(range(55))


def test_server_down_is_retry_and_the_next_send_reconnects(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    sink = open_sink()
    assert sink.send(reading_events(2)).kind == "ack"
    pg.stop()
    outcome = sink.send(reading_events(2, first_seq=2))
    assert outcome.kind == "retry"
    assert "127.0.0.1" in outcome.detail
    pg.start()
    assert sink.send(reading_events(2, first_seq=2)).kind == "ack"
    assert stored_seqs(pg) == [0, 1, 2, 3]


def test_wrong_password_is_unauthorized_and_never_shown(
    pg: PostgresServer,
    open_sink: OpenSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(f"PILOG_SINK_{SINK.upper()}_PASSWORD", PASSWORD + "x")
    sink = open_sink()
    with caplog.at_level(logging.DEBUG):
        outcome = sink.send(reading_events(3))
        probe = sink.probe(deadline_in(10))
    assert outcome.kind == "unauthorized", outcome
    assert "password authentication failed" in outcome.detail
    assert probe.kind == "unauthorized"
    assert PASSWORD + "x" not in outcome.detail + probe.detail + sink.where()
    assert_no_secret(outcome, caplog)


def test_password_in_the_url_is_refused_at_startup(pg: PostgresServer, open_sink: OpenSink) -> None:
    from pilog.errors import ConfigError

    with pytest.raises(ConfigError, match="password_file") as info:
        open_sink(url=f"postgresql://pilog:{PASSWORD}@127.0.0.1:{pg.port}/pilog")
    assert PASSWORD not in str(info.value)


def test_no_insert_privilege_is_unauthorized(pg: PostgresServer, open_sink: OpenSink) -> None:
    assert open_sink().send(reading_events(1)).kind == "ack"  # made by its owner, pilog
    writer = open_sink(user=WRITER)
    outcome = writer.send(reading_events(2, first_seq=1))
    assert outcome.kind == "unauthorized", outcome
    assert "42501" in outcome.detail
    probe = writer.probe(deadline_in(10))
    assert probe.kind == "unauthorized"
    assert writer.grant_sql(WRITER) in probe.detail
    pg.sql(f"GRANT INSERT ON {TABLE} TO {WRITER}", dbname="pilog")
    assert writer.probe(deadline_in(10)).kind == "unauthorized"  # ON CONFLICT reads the key
    pg.sql(writer.grant_sql(WRITER), dbname="pilog")
    assert writer.probe(deadline_in(10)).kind == "ack"
    assert writer.send(reading_events(2, first_seq=1)).kind == "ack"
    assert stored_seqs(pg) == [0, 1, 2]


def test_role_that_may_not_create_the_table_gets_the_sql_to_run(
    pg: PostgresServer, open_sink: OpenSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = open_sink(user=WRITER)
    with caplog.at_level(logging.ERROR, "pilog.uploader"):
        outcome = sink.send(reading_events(2))
        assert sink.send(reading_events(2)) == outcome  # as the pause tries again: logged once
    assert outcome.kind == "unauthorized", outcome
    assert f"role {WRITER} may not create table {TABLE}" in outcome.detail
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "CREATE TABLE IF NOT EXISTS" in errors[0]
    assert sink.grant_sql(WRITER) in errors[0]
    probe = sink.probe(deadline_in(10))
    assert probe.kind == "unauthorized"
    assert sink.create_sql() in probe.detail
    # The owner runs the SQL it was given: then the same sink delivers.
    pg.sql(sink.create_sql(), dbname="pilog")
    pg.sql(sink.grant_sql(WRITER), dbname="pilog")
    assert sink.send(reading_events(2)).kind == "ack"
    assert stored_seqs(pg) == [0, 1]


def test_reading_the_server_refuses_is_rejected_alone(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    sink = open_sink()
    batch = reading_events(6)
    bad = Event(3, batch[3].ts_ns, 0, BOOT_ID, Reading("air", "x", {"text": "nul\x00here"}))
    batch[3] = bad
    outcome = sink.send(batch)
    assert outcome.kind == "rejected", outcome
    assert outcome.status == 422
    assert "22P05" in outcome.detail  # \u0000 cannot be converted to text in jsonb
    assert sink.send(batch[:3]).kind == "ack"  # the same connection goes on
    assert sink.send([bad]).kind == "rejected"
    name_with_nul = Event(7, bad.ts_ns, 0, BOOT_ID, Reading("a\x00b", "x", {"v": 1}))
    assert sink.send([name_with_nul]).status == 422
    not_unicode = Event(8, bad.ts_ns, 0, BOOT_ID, Reading("air", "x", {"s": "\ud800"}))
    assert sink.send([not_unicode]).status == 422  # refused by the server, never raised
    assert sink.send(batch[4:]).kind == "ack"
    assert stored_seqs(pg) == [0, 1, 2, 4, 5]


def test_missing_table_with_create_table_off_is_an_endpoint_refusal(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    sink = open_sink(create_table=False)
    outcome = sink.send(reading_events(2))
    assert (outcome.kind, outcome.status) == ("rejected", 404)
    assert "does not exist" in outcome.detail
    probe = sink.probe(deadline_in(10))
    assert probe.kind == "rejected"
    assert "CREATE TABLE" in probe.detail


def test_table_of_the_wrong_shape_is_refused_whole_and_the_probe_says_why(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    pg.sql(
        f"CREATE TABLE {TABLE} (id text, device_id text, seq bigint, sensor text, "
        "sensor_type text, ts bigint, payload jsonb)",
        dbname="pilog",
    )
    sink = open_sink()
    outcome = sink.send(reading_events(2))
    assert (outcome.kind, outcome.status) == ("rejected", 400), outcome
    probe = sink.probe(deadline_in(10))
    assert probe.kind == "rejected"
    assert "no unique index on (id)" in probe.detail


# -- probe ------------------------------------------------------------------------------------


def test_probe_checks_without_writing(pg: PostgresServer, open_sink: OpenSink) -> None:
    sink = open_sink()
    first = sink.probe(deadline_in(10))
    assert first.kind == "ack"
    assert "the first send creates it" in first.detail
    assert pg.sql(f"SELECT to_regclass('{TABLE}')", dbname="pilog") == [(None,)]
    assert sink.send(reading_events(1)).kind == "ack"
    ready = sink.probe(deadline_in(10))
    assert ready.kind == "ack"
    assert "ready" in ready.detail
    assert stored_seqs(pg) == [0]
    assert PASSWORD not in sink.where()
    assert sink.where() == f"postgresql://pilog@127.0.0.1:{pg.port}/pilog table {TABLE}"


def test_probe_of_a_stopped_server_is_retry(pg: PostgresServer, open_sink: OpenSink) -> None:
    sink = open_sink()
    pg.stop()
    assert sink.probe(deadline_in(10)).kind == "retry"


# -- through the uploader loop ----------------------------------------------------------------

PAUSE_S = 3600  # retry_max: nothing is tried again in a test without a wake


class Box:
    """A log and one uploader on it with a postgres sink, as `pilog run` has them."""

    def __init__(self, data_dir: Path, open_sink: OpenSink, **options: Any) -> None:
        text = f'device_id = "{DEVICE_ID}"\ndata_dir = "{data_dir}"\n[log]\nfsync_interval_ms = 5\n'
        box_config: Config = parse_config(tomllib.loads(text), "test.toml", {})
        self.events = EventLog(box_config)
        self.stop = threading.Event()
        config = sink_config(batch_max=50, linger_ms=20, retry_initial_ms=5, retry_max=PAUSE_S)
        context = SinkContext(DEVICE_ID, self.events.epoch_hex, data_dir)
        sink = open_sink(config=config, in_context=context, **options)
        self.uploader = Uploader(config, sink, self.events, self.stop)
        self.uploader.start()

    def append(self, readings: list[Reading]) -> list[int]:
        return [self.events.append(r) for r in readings]

    def dead_letters(self) -> list[DeadLetter]:
        self.events.writer.sync()
        history = History(self.events.paths.root)
        return [e.body for e in history.events() if isinstance(e.body, DeadLetter)]

    def close(self) -> None:
        self.stop.set()
        assert self.uploader.join(30)
        self.events.close()


@pytest.fixture
def box_for(tmp_path: Path, open_sink: OpenSink) -> Iterator[Callable[..., Box]]:
    boxes: list[Box] = []

    def make(**options: Any) -> Box:
        box = Box(tmp_path / f"data{len(boxes)}", open_sink, **options)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.close()


def test_loop_dead_letters_only_the_refused_reading(pg: PostgresServer, box_for: Any) -> None:
    box = box_for()
    readings = [Reading("air", "t", {"i": i}) for i in range(30)]
    readings[17] = Reading("air", "t", {"i": "\x00"})
    seqs = box.append(readings)
    wait_until(lambda: len(stored_seqs_or_none(pg) or []) == 29, "the good readings")
    assert stored_seqs(pg) == [s for s in seqs if s != seqs[17]]
    letters = wait_until(lambda: box.dead_letters() or None, "the dead letter")
    assert [(d.seq, d.status) for d in letters] == [(seqs[17], 422)]


def test_loop_pauses_on_a_missing_table_and_delivers_after_the_fix(
    pg: PostgresServer, box_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    box = box_for(create_table=False)
    with caplog.at_level(logging.ERROR, "pilog.uploader"):
        seqs = box.append([Reading("air", "t", {"i": i}) for i in range(40)])
        wait_until(lambda: box.uploader.state.paused_reason == "endpoint", "the pause")
    assert box.uploader.state.dead_letters == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert f"table {TABLE} does not exist" in errors[0]
    sink = box.uploader.sink
    assert isinstance(sink, PostgresSink)
    pg.sql(sink.create_sql(), dbname="pilog")  # by an administrator, as the error says
    pg.sql(sink.grant_sql(USER), dbname="pilog")
    box.uploader.wake()  # what `pilog retry` does
    wait_until(lambda: stored_seqs_or_none(pg) == seqs, "delivery after the fix")
    assert box.dead_letters() == []


def test_loop_pauses_on_a_wrong_password(
    pg: PostgresServer, box_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(f"PILOG_SINK_{SINK.upper()}_PASSWORD", "wrong")
    box = box_for()
    box.append([Reading("air", "t", {"i": 1})])
    wait_until(lambda: box.uploader.state.paused_reason == "credentials", "the pause")
    assert box.uploader.state.dead_letters == 0
    assert stored_seqs_or_none(pg) is None


def stored_seqs_or_none(pg: PostgresServer) -> list[int] | None:
    try:
        return stored_seqs(pg)
    except psycopg.errors.UndefinedTable:
        return None


def test_duration_timeout_sets_the_statement_timeout(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    sink = open_sink(timeout=Duration(2))
    assert sink.send(reading_events(1)).kind == "ack"
    blocker = pg.admin("pilog")
    blocker.execute("BEGIN")
    blocker.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    try:
        outcome = sink.send(reading_events(1, first_seq=1))
    finally:
        blocker.close()
    assert outcome.kind == "retry", outcome
    assert "57014" in outcome.detail  # canceling statement due to statement timeout
    assert sink.send(reading_events(1, first_seq=1)).kind == "ack"


# -- pilog as a subprocess ------------------------------------------------------------------------

# `type = "postgres"` in a config needs the sink registry (pilog.uploader.sinks.find_sink).
needs_registry = pytest.mark.skipif(
    not hasattr(sinks_registry, "find_sink"),
    reason='the sink plugin registry (find_sink) is not in this tree: `type = "postgres"` '
    "cannot be configured yet",
)


def postgres_sink_toml(pg: PostgresServer, password_file: object, **keys: object) -> str:
    keys = {
        "name": SINK,
        "type": "postgres",
        "url": pg.url(USER, "pilog"),
        "password_file": password_file,
        "batch_max": 40,
        "linger_ms": 20,
        "retry_initial_ms": 20,
        "retry_max": 1,
        "timeout": 10,
        **keys,
    }
    return "\n[[sink]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in keys.items())


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "pg-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o600)
    return path


def log_reading_ids(data: Path) -> set[str]:
    history = History(data)
    header = history.header()
    assert header is not None
    return {
        f"{header.device_id}:{header.epoch_hex}:{e.seq}"
        for e in history.events()
        if isinstance(e.body, Reading)
    }


def row_count(pg: PostgresServer) -> int:
    try:
        return int(pg.sql(f"SELECT count(*) FROM {TABLE}", dbname="pilog")[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


@needs_registry
@pytest.mark.slow
def test_pilog_killed_9_again_and_again_and_the_server_killed_stores_every_reading_once(
    tmp_path: Path, pg: PostgresServer, password_file: Path
) -> None:
    data = tmp_path / "data"
    sink = postgres_sink_toml(pg, password_file)
    sensors = [{"name": f"s{i}", "interval_ms": 5} for i in range(3)]
    config = write_config(
        tmp_path / "pilog.toml", data, log={"fsync_interval_ms": 20}, sensors=sensors, extra=sink
    )
    rng = random.Random(14)
    for kill in range(KILLS):
        before = row_count(pg)
        with run_pilog(config) as p:
            wait_until(lambda b=before: row_count(pg) > b, "rows", WAIT_S)
            if kill == KILLS // 2:
                pg.restart(kill=True)  # the server dies under a running pilog, mid-batch or not
                after = row_count(pg)
                wait_until(lambda a=after: row_count(pg) > a, "rows after the restart", WAIT_S)
            time.sleep(rng.uniform(0, 0.3))
            p.kill()
    # Drain with no sensors: the log stops growing and the sink catches up.
    drain = write_config(tmp_path / "drain.toml", data, sensors=[], extra=sink)
    with run_pilog(drain) as p:
        p.stderr.wait_for(lambda line: "pilog running" in line, "the drain to start")
        want = log_reading_ids(data)
        wait_until(lambda: row_count(pg) >= len(want), "the drain", 120)
        assert p.stop() == 0
    rows = pg.sql(f"SELECT id, device_id, seq FROM {TABLE}", dbname="pilog")
    assert len(rows) == len(want)  # the primary key makes a duplicate impossible
    assert {r[0] for r in rows} == want
    assert all(r[0] == f"{r[1]}:{r[0].split(':')[1]}:{r[2]}" for r in rows)


def pilog_check(config: Path) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [*PILOG, "check", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=clean_env(),
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    [row] = [r for r in json.loads(result.stdout) if r["what"] == f"sink:{SINK}"]
    return result.returncode, row


@needs_registry
def test_pilog_check_rows_for_postgres_sinks(
    tmp_path: Path, pg: PostgresServer, password_file: Path
) -> None:
    def check(**keys: object) -> tuple[int, dict[str, Any]]:
        sink = postgres_sink_toml(pg, keys.pop("password_file", password_file), **keys)
        config = write_config(tmp_path / "pilog.toml", tmp_path / "data", extra=sink)
        return pilog_check(config)

    code, row = check()
    assert (code, row["ok"]) == (0, True), row
    assert "the first send creates it" in row["detail"]
    code, row = check(create_table=False)
    assert (code, row["ok"]) == (1, False), row
    assert "CREATE TABLE IF NOT EXISTS" in row["detail"]
    bad = tmp_path / "bad-password"
    bad.write_text("nope\n")
    bad.chmod(0o600)
    code, row = check(password_file=bad)
    assert (code, row["ok"]) == (1, False), row
    assert "password authentication failed" in row["detail"]
    assert PASSWORD not in row["detail"]
    pg.stop()
    code, row = check()
    assert (code, row["ok"]) == (1, False), row
    assert row_count_after_start(pg) == 0  # the probes wrote nothing


def row_count_after_start(pg: PostgresServer) -> int:
    pg.start()
    return row_count(pg)


def test_close_cuts_short_a_send_waiting_on_the_server(
    pg: PostgresServer, open_sink: OpenSink
) -> None:
    sink = open_sink(timeout=WAIT_S * 10)  # only close can end the wait in time
    assert sink.send(reading_events(1)).kind == "ack"
    blocker = pg.admin("pilog")
    blocker.execute("BEGIN")
    blocker.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    outcome: list[Outcome] = []
    sender = threading.Thread(
        target=lambda: outcome.append(sink.send(reading_events(1, first_seq=1)))
    )
    sender.start()
    wait_until(
        lambda: pg.sql(
            "SELECT 1 FROM pg_stat_activity WHERE usename = %s AND wait_event_type = 'Lock'",
            USER,
        ),
        "the batch to wait on the lock",
    )
    sink.close()
    sender.join(WAIT_S)
    blocker.close()
    assert outcome[0].kind == "retry", outcome
    assert stored_seqs(pg) == [0]  # the cut transaction never committed
    with pytest.raises(RuntimeError, match="closed"):
        sink.send(reading_events(1))


def test_missing_psycopg_or_libpq_is_said_at_construction(
    open_sink: OpenSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pilog.errors import ConfigError
    from pilog.uploader.sinks.postgres import sink as module

    no_libpq = ImportError("no pq wrapper available.\n- couldn't import: libpq library not found")
    monkeypatch.setattr(module, "IMPORT_ERROR", no_libpq)
    with pytest.raises(ConfigError, match="sudo apt install libpq5") as info:
        open_sink()
    assert "libpq library not found" in str(info.value)
    no_psycopg = ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
    monkeypatch.setattr(module, "IMPORT_ERROR", no_psycopg)
    with pytest.raises(ModuleNotFoundError):  # open_sink names the extra
        open_sink()
