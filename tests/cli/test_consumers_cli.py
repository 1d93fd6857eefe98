"""The operator's view of consumers, as subprocesses: status, replay, tail --pending, export,
against `pilog run` uploading to a real receiver on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    assert_one_sentence_error,
    pilog,
    run_pilog,
    status_json,
    wait_until,
    write_config,
)

from pilog.events import Reading
from pilog.history import History
from pilog.testing.receiver import Receiver

TOKEN = "s3cr3t-t0ken-value"


def sink_toml(url: str, **extra: object) -> str:
    keys = {"linger_ms": 20, "retry_initial_ms": 10, "retry_max": 0.3, "batch_max": 50, **extra}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in keys.items())
    return f'[[sink]]\nname = "keep"\ntype = "http-json"\nurl = "{url}"\n{lines}\n'


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(token=TOKEN) as r:
        yield r


def config_for(tmp_path: Path, url: str, sensors: bool = True, **extra: object) -> Path:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log={"fsync_interval_ms": 10},
        sensors=[{"name": "air", "interval_ms": 10}] if sensors else [],
        extra=sink_toml(url, token_file=str(token_file), **extra),
    )


def readings_in(data: Path) -> list[int]:
    return [e.seq for e in History(data).events() if isinstance(e.body, Reading)]


def test_status_while_running_shows_drivers_consumers_and_lag(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = config_for(tmp_path, receiver.url)
    with run_pilog(config) as p:
        receiver.wait_for(20)
        state = wait_until(
            lambda: (s := status_json("-c", config))["consumers"][0].get("next_seq") and s,
            "a committed cursor",
        )
        p.stop()
    (keep,) = state["consumers"]
    assert keep["name"] == "sink:keep"
    assert keep["live"]["state"] in ("idle", "sending")
    assert keep["live"]["delivered"] >= 1
    assert keep["lag_events"] >= 0
    (air,) = state["drivers"]
    assert air["sensor"] == "air"
    assert air["readings"] > 0
    assert state["writer"]["durable_seq"] >= 0
    human = pilog("status", "-c", config)
    assert "sink:keep" in human.stdout
    assert TOKEN not in human.stdout + json.dumps(state) + p.stderr.text()
    # No line per request (httpx logs each at INFO): that is journal writes on the SD card.
    assert "HTTP Request" not in p.stderr.text()
    assert len(receiver.requests) >= 1


def test_status_of_a_stopped_pilog_shows_cursors_and_no_live_state(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = config_for(tmp_path, receiver.url)
    with run_pilog(config) as p:
        receiver.wait_for(10)
        assert p.stop() == 0
    state = status_json("-c", config)
    (keep,) = state["consumers"]
    assert keep["next_seq"] is not None
    assert "live" not in keep
    assert state["drivers"] is None
    assert "not running" in pilog("status", "-c", config).stdout


def test_a_wrong_token_pauses_the_sink_loudly_without_printing_the_token(
    tmp_path: Path,
) -> None:
    with Receiver(token="another-token") as rx:
        config = config_for(tmp_path, rx.url, retry_max=30)
        with run_pilog(config) as p:
            wait_until(lambda: len(rx.requests) >= 1, "a refused request")
            wait_until(lambda: "refuses our credentials" in p.stderr.text(), "the warning")
            state = status_json("-c", config)
            p.stop()
    (keep,) = state["consumers"]
    assert keep["live"]["state"] == "paused"
    assert "401" in keep["live"]["last_error"]
    assert TOKEN not in p.stderr.text() + json.dumps(state)
    assert rx.ids() == set()


def test_replay_while_running_redelivers_the_range_and_resumes(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = config_for(tmp_path, receiver.url)
    with run_pilog(config) as p:
        receiver.wait_for(40)
        before = receiver.raw_count
        seqs = sorted(int(i.rsplit(":", 1)[1]) for i in receiver.ids())
        lo, hi = seqs[5], seqs[14]
        out = pilog("replay", "-c", config, "--from", lo, "--to", hi, "--sink", "keep")
        assert out.returncode == 0, out.stderr
        assert f"re-deliver seq {lo}..{hi}" in out.stdout
        assert f"picked up by pilog run (pid {p.pid})" in out.stdout
        wait_until(lambda: receiver.duplicates >= 10, "the replayed readings")
        p.stop()
    assert receiver.raw_count > before
    assert receiver.duplicates == 10
    assert receiver.validation_errors == []


def test_replay_of_a_stopped_pilog_sets_the_cursor_for_the_next_run(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = config_for(tmp_path, receiver.url)
    with run_pilog(config) as p:
        receiver.wait_for(30)
        assert p.stop() == 0
    dry = pilog("replay", "-c", config, "--from", "0", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout
    cursor = status_json("-c", config)["consumers"][0]["next_seq"]
    out = pilog("replay", "-c", config, "--from", "0", "--sink", "keep")
    assert out.returncode == 0, out.stderr
    assert "cursor set to 0" in out.stdout
    assert status_json("-c", config)["consumers"][0]["next_seq"] == 0
    delivered = len(receiver.ids())
    nocfg = config_for(tmp_path, receiver.url, sensors=False)
    with run_pilog(nocfg) as p:
        wait_until(lambda: receiver.duplicates >= delivered, "the re-delivery")
        p.stop()
    assert cursor > 0


def test_replay_names_unknown_sinks_and_bad_ranges_in_one_sentence(
    tmp_path: Path, receiver: Receiver
) -> None:
    config = config_for(tmp_path, receiver.url)
    with run_pilog(config) as p:
        receiver.wait_for(5)
        p.stop()
    line = assert_one_sentence_error(pilog("replay", "-c", config, "--from", "0", "--sink", "nope"))
    assert "no sink named 'nope'" in line
    assert "keep" in line
    line = assert_one_sentence_error(
        pilog("replay", "-c", config, "--from", "9", "--to", "3", "--sink", "keep")
    )
    assert "before --from" in line
    assert "--sink" in assert_one_sentence_error(pilog("replay", "-c", config, "--from", "0"))


def test_tail_pending_shows_the_readings_a_sink_has_not_delivered(tmp_path: Path) -> None:
    with Receiver() as rx:
        url = rx.url
    config = config_for(tmp_path, url)  # nothing listens there: every reading stays pending
    with run_pilog(config) as p:
        wait_until(lambda: len(readings_in(tmp_path / "data")) >= 10, "readings")
        p.stop()
    out = pilog("tail", "-c", config, "--pending", "keep", "--json")
    assert out.returncode == 0, out.stderr
    shown = [json.loads(line)["seq"] for line in out.stdout.splitlines()]
    assert shown == readings_in(tmp_path / "data")
    line = assert_one_sentence_error(pilog("tail", "-c", config, "--pending", "nope"))
    assert "no sink named 'nope'" in line


def test_export_writes_ndjson_and_wide_csv_of_a_range(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        sensors=[{"name": "air", "interval_ms": 10}, {"name": "host", "driver": "system"}],
    )
    with run_pilog(config) as p:
        wait_until(lambda: len(readings_in(tmp_path / "data")) >= 20, "readings")
        p.stop()
    seqs = readings_in(tmp_path / "data")
    out = pilog("export", "-c", config, "--format", "ndjson")
    assert out.returncode == 0, out.stderr
    objs = [json.loads(line) for line in out.stdout.splitlines()]
    assert [o["seq"] for o in objs] == seqs
    assert set(objs[0]) == {
        "id",
        "device_id",
        "seq",
        "sensor",
        "sensor_type",
        "payload",
        "timestamp",
    }
    lo, hi = seqs[3], seqs[12]
    out = pilog(
        "export", "-c", config, "--format", "csv", "--from", lo, "--to", hi, "--sensor", "air"
    )
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows
    assert all(lo <= int(r["seq"]) <= hi for r in rows)
    assert {r["sensor"] for r in rows} == {"air"}
    assert list(rows[0])[:5] == ["timestamp", "seq", "id", "sensor", "sensor_type"]
    assert "exported" in out.stderr
    line = assert_one_sentence_error(pilog("export", "-c", config, "--format", "xml"))
    assert "ndjson or csv" in line


def test_replay_of_a_projection_while_running_rebuilds_it(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log={"fsync_interval_ms": 10},
        sensors=[{"name": "air", "interval_ms": 10}],
        extra='[[projection]]\ntype = "latest"\ncommit_interval = "50ms"\n',
    )
    with run_pilog(config) as p:
        wait_until(lambda: len(readings_in(tmp_path / "data")) >= 10, "readings")
        out = pilog("replay", "-c", config, "--from", "0", "--projection", "latest")
        assert out.returncode == 0, out.stderr
        assert f"projection:latest: picked up by pilog run (pid {p.pid})" in out.stdout
        p.stderr.wait_for(lambda line: "rewound by pilog replay" in line, "the rebuild")
        assert p.stop() == 0
    shown = pilog("show", "latest", "-c", config, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert rows
    line = assert_one_sentence_error(
        pilog("replay", "-c", config, "--from", "0", "--to", "5", "--projection", "latest")
    )
    assert "sinks only" in line
