"""`pilog run` and `pilog check` with a nats sink, against a real 3-node JetStream cluster.

`pilog run` is killed with SIGKILL again and again while it publishes, sometimes staying down
longer than the stream's duplicate window; then it drains. The stream must hold every reading
of the log exactly once, read back from the stream itself.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PILOG, clean_env, run_pilog, toml_value, wait_until, write_config

from pilog.events import Reading, event_id
from pilog.history import History
from pilog.testing.nats import NatsCluster, missing

USER, PASSWORD = "pilog", "s3cret-Pa55word"
WINDOW_S = 1.0
KILLS = 6
WAIT_S = 60.0

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    c = NatsCluster.start(
        tmp_path_factory.mktemp("nats"),
        authorization=f'  user: {USER}\n  password: "{PASSWORD}"',
        connect_options={"user": USER, "password": PASSWORD},
    )
    yield c
    c.close()


def sink_table(cluster: NatsCluster, tmp_path: Path, prefix: str, **keys: object) -> str:
    password = tmp_path / "nats-password"
    if not password.exists():
        password.write_text(PASSWORD + "\n")
        password.chmod(0o600)
    table = {
        "name": "fleet",
        "type": "nats",
        "subject": f"{prefix}.{{device_id}}",
        "username": USER,
        "password_file": password,
        **keys,
    }
    lines = ["", "[[sink]]", f"url = {toml_value(','.join(cluster.urls))}"]
    lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def reading_ids(data: Path) -> list[str]:
    history = History(data)
    header = history.header()
    assert header is not None
    return [
        event_id(header.device_id, header.epoch_hex, e.seq)
        for e in history.events()
        if isinstance(e.body, Reading)
    ]


@pytest.mark.slow
def test_pilog_killed_again_and_again_stores_every_reading_once(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    cluster.add_stream("KILLS", ["kills.>"], duplicate_window=WINDOW_S)
    extra = sink_table(cluster, tmp_path, "kills", batch_max=200, linger_ms=20, timeout="5s")
    data = tmp_path / "data"
    sensors = [{"name": f"s{i}", "interval_ms": 5} for i in range(3)]
    config = write_config(
        tmp_path / "pilog.toml", data, log={"fsync_interval_ms": 20}, sensors=sensors, extra=extra
    )
    rng = random.Random(7)
    for kill in range(KILLS):
        before = cluster.message_count("KILLS")
        with run_pilog(config) as p:
            wait_until(lambda b=before: cluster.message_count("KILLS") > b, "uploads", WAIT_S)
            time.sleep(rng.uniform(0, 0.3))
            p.kill()
        if kill % 2:
            time.sleep(WINDOW_S * 1.5)  # down longer than the window: only the resume guards
    drain = write_config(tmp_path / "drain.toml", data, sensors=[], extra=extra)
    with run_pilog(drain) as p:
        p.stderr.wait_for(lambda line: "pilog running" in line, "the drain to start")
        want = reading_ids(data)
        wait_until(lambda: cluster.message_count("KILLS") >= len(want), "the drain", WAIT_S)
        assert p.stop(signal.SIGTERM) == 0
    stored = cluster.stored_ids("KILLS")
    duplicates = {i: n for i, n in Counter(stored).items() if n > 1}
    assert not duplicates
    assert sorted(stored) == sorted(want)


def check(tmp_path: Path, extra: str) -> tuple[int, dict[str, object]]:
    config = write_config(tmp_path / "check.toml", tmp_path / "data", extra=extra)
    result = subprocess.run(
        [*PILOG, "check", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
        env=clean_env(),
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    [row] = [r for r in json.loads(result.stdout) if r["what"] == "sink:fleet"]
    return result.returncode, row


def test_pilog_check_reads_the_stream_settings_and_writes_nothing(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    cluster.add_stream("CHECK", ["check.>"])
    code, row = check(tmp_path, sink_table(cluster, tmp_path, "check"))
    assert code == 0, row
    assert "stream CHECK" in str(row["detail"])
    assert "3 replicas" in str(row["detail"])
    assert cluster.message_count("CHECK") == 0


def test_pilog_check_without_a_stream_names_the_fix(cluster: NatsCluster, tmp_path: Path) -> None:
    code, row = check(tmp_path, sink_table(cluster, tmp_path, "nostream"))
    assert code == 1
    assert "no stream" in str(row["detail"])
    assert "nats stream add" in str(row["detail"])


def test_pilog_check_with_a_wrong_password_names_the_fix(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    (tmp_path / "nats-password").write_text("Not-The-Pa55\n")
    (tmp_path / "nats-password").chmod(0o600)
    code, row = check(tmp_path, sink_table(cluster, tmp_path, "check"))
    assert code == 1
    detail = str(row["detail"])
    assert "refused our credentials" in detail
    assert "the password in" in detail
    assert "nats-password" in detail
    assert "Not-The-Pa55" not in detail


def test_refused_credentials_pause_pilog_run_with_no_dead_letters(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    cluster.add_stream("AUTH", ["auth.>"])
    (tmp_path / "nats-password").write_text("wrong\n")
    (tmp_path / "nats-password").chmod(0o600)
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml", data, extra=sink_table(cluster, tmp_path, "auth", linger_ms=10)
    )
    with run_pilog(config) as p:
        p.stderr.wait_for(lambda line: "refuses our credentials" in line, "the pause")
        assert p.stop(signal.SIGTERM) == 0
    assert not (data / "deadletter").exists()
    assert cluster.message_count("AUTH") == 0
