"""Exactly-once in effect: `pilog run` uploading to a flaky receiver, killed with SIGKILL again
and again, then drained. The receiver (a separate process, so it survives every kill) must end
up holding every reading of the log exactly once by id, and nothing else; the duplicates it saw
must come only from batches in flight at a kill or whose acknowledgement it dropped. The lmdb
projections, built incrementally through the same kills, must equal a rebuild from the log,
byte for byte.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
from helpers import (
    ReceiverProcess,
    dump_lmdb,
    http_sink_toml,
    projections_toml,
    run_pilog,
    status_json,
    wait_until,
    write_config,
)

from pilog.config import load_config
from pilog.events import Reading, event_id
from pilog.history import History
from pilog.projections import projections_path, rebuild

KILLS = 12
BATCH_MAX = 40


def reading_ids(data: Path) -> set[str]:
    history = History(data)
    header = history.header()
    assert header is not None
    return {
        event_id(header.device_id, header.epoch_hex, e.seq)
        for e in history.events()
        if isinstance(e.body, Reading)
    }


@pytest.mark.slow
def test_kill9_with_a_flaky_receiver_delivers_every_reading_exactly_once(tmp_path: Path) -> None:
    rx = ReceiverProcess(fail_rate=0.25, seed=11)
    extra = http_sink_toml(rx.url, batch_max=BATCH_MAX, linger_ms=20) + projections_toml("50ms")
    try:
        data = tmp_path / "data"
        sensors = [{"name": f"s{i}", "interval_ms": 5} for i in range(3)]
        config = write_config(
            tmp_path / "pilog.toml",
            data,
            log={"fsync_interval_ms": 20},
            sensors=sensors,
            extra=extra,
        )
        rng = random.Random(5)
        for _ in range(KILLS):
            before = rx.get("/_stats")["unique"]
            with run_pilog(config) as p:
                wait_until(lambda b=before: rx.get("/_stats")["unique"] > b, "uploads", 60)
                time.sleep(rng.uniform(0, 0.3))
                p.kill()
        # Drain: no sensors, so the log stops growing and the sink can catch up.
        drain = write_config(
            tmp_path / "drain.toml",
            data,
            sensors=[],
            extra=extra,
        )
        with run_pilog(drain) as p:
            p.stderr.wait_for(lambda line: "pilog running" in line, "the drain to start")
            want = reading_ids(data)
            wait_until(lambda: rx.get("/_stats")["unique"] >= len(want), "the drain", 120)

            def caught_up() -> bool:
                # The receiver may hold a batch whose answer it failed: pilog re-sends it
                # until acknowledged, and only then is the sink's cursor at the end.
                state = status_json("-c", drain)
                (keep,) = [c for c in state["consumers"] if c["name"] == "sink:keep"]
                return keep.get("lag_events") == 0

            wait_until(caught_up, "the sink's cursor at the end", 120, poll_s=0.5)
            assert p.stop() == 0, p.stderr.text()
        got = set(rx.get("/_ids"))
        stats = rx.get("/_stats")
    finally:
        rx.stop()
    assert got == want, (len(got - want), len(want - got))
    assert stats["validation_errors"] == 0
    # Each kill leaves at most the batch in flight unacknowledged, and each dropped ack one.
    assert stats["duplicates"] <= (KILLS + stats["acks_lost"]) * BATCH_MAX, stats
    incremental = dump_lmdb(projections_path(data))
    assert incremental[b"state:latest"]
    assert incremental[b"state:rollup"]
    copy = tmp_path / "rebuilt"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("projections"))
    config_copy = load_config(drain, {"PILOG_DATA_DIR": str(copy)})
    rebuild(copy, config_copy)
    assert dump_lmdb(projections_path(copy)) == incremental
    final = status_json("-c", drain)
    (keep,) = [c for c in final["consumers"] if c["name"] == "sink:keep"]
    assert keep["lag_events"] == 0, json.dumps(keep)  # and it stayed there through the stop
