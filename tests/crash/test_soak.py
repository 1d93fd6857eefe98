"""Soak: many sensors, two sinks (one flapping), two projections, kill -9 again and again,
and a log held at its cap by `on_full = "drop_oldest"`.

The cap deletes the oldest segments. Those every cursor had passed go quietly (their events
reached every consumer); those the flapping sink had not reached while it was down are drops,
each recorded as a Gap. At the end, after a drain:
(a) each receiver holds every reading still in the log;
(b) every id a receiver holds is a reading of this log: still in it, or since deleted;
(c) no seq is both in the log and in a Gap; every seq deleted without a Gap reached both
    receivers, unless it was one of the few bookkeeping events (driver starts, repairs), which
    sinks do not carry: drops are never silent;
(d) duplicates at each receiver come only from batches in flight at a kill, acknowledgements
    lost, or (for the flapping receiver) requests cut by its restarts;
(e) projections equal a rebuild from the log, where that is comparable: deleted segments hold
    events the incremental state saw but a rebuild cannot, so `latest` is compared whole (the
    newest reading of every sensor is near the end of the log, never deleted), and `rollup`
    only for windows starting after the first event left in the log (windows built entirely
    from events the rebuild also reads);
(f) `pilog verify` passes;
and the resident memory of `pilog run` did not grow from the first rounds to the last.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import time
from pathlib import Path

import pytest
from helpers import (
    ReceiverProcess,
    dump_lmdb,
    http_sink_toml,
    pilog,
    projections_toml,
    run_pilog,
    status_json,
    wait_until,
    write_config,
)

from pilog.config import load_config
from pilog.events import Gap, Reading, event_id
from pilog.history import History
from pilog.projections import projections_path, rebuild
from pilog.projections.rollup.projection import WINDOW_TAG, split_window_key

ROUNDS = 30
SENSORS = 20
BATCH_MAX = 50
FLAP_EVERY = 5  # the flapping receiver is down for the last FLAP_DOWN rounds of every FLAP_EVERY
FLAP_DOWN = 2
LONG_RUN_S = 60
LONG_RUN_WARMUP_S = 10
FLAP_PERIOD_S = 8  # in the long run, the flapping receiver is down half of each period
RSS_SLACK = 1.3  # the last rounds' median RSS within +30% of the first rounds'
LOG = {
    "segment_bytes": "32KiB",
    "max_bytes": "256KiB",
    "on_full": "drop_oldest",
    "fsync_interval_ms": 20,
}


def rss_anon_kib(pid: int) -> int:
    """Anonymous resident memory: what a leak grows. (File-backed pages of the lmdb map grow
    with rollup windows until their retention, and are page cache the kernel can take back.)"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError(f"no RssAnon for pid {pid}")


def seq_of(event_id_: str) -> int:
    return int(event_id_.rsplit(":", 1)[1])


@pytest.mark.slow
def test_soak_with_kills_a_flapping_sink_and_drop_oldest_loses_nothing_silently(
    tmp_path: Path,
) -> None:
    healthy = ReceiverProcess(0.05, seed=3, dump=tmp_path / "healthy.ndjson")
    flappy = ReceiverProcess(0.3, seed=7, dump=tmp_path / "flappy.ndjson")
    data = tmp_path / "data"
    sinks = "".join(
        http_sink_toml(rx.url, name, BATCH_MAX, linger_ms=20)
        for name, rx in (("healthy", healthy), ("flappy", flappy))
    )
    rng = random.Random(17)
    sensors = [{"name": f"s{i:02d}", "interval_ms": rng.randint(5, 20)} for i in range(SENSORS)]
    config = write_config(
        tmp_path / "pilog.toml", data, log=LOG, sensors=sensors, extra=sinks + projections_toml()
    )
    rss: list[int] = []  # one sample per round, each from a new process
    samples: list[tuple[float, int]] = []  # (seconds since start, RSS) in the long run
    try:
        for round_ in range(ROUNDS):
            down = round_ % FLAP_EVERY >= FLAP_EVERY - FLAP_DOWN
            if down and flappy.proc is not None:
                flappy.stop()
            with run_pilog(config) as p:
                p.stderr.wait_for(lambda line: "pilog running" in line, "pilog to start")
                time.sleep(rng.uniform(0.5, 2.0))
                assert p.alive(), p.stderr.text()
                rss.append(rss_anon_kib(p.pid))
                p.kill()
            if down and round_ % FLAP_EVERY == FLAP_EVERY - 1:
                flappy.restart()

        # One long run: the flapping receiver goes down and comes back while pilog holds
        # the log at its cap; the resident memory is sampled throughout, then kill -9.
        with run_pilog(config) as p:
            p.stderr.wait_for(lambda line: "pilog running" in line, "the long run to start")
            started = time.monotonic()
            while (elapsed := time.monotonic() - started) < LONG_RUN_S:
                if int(elapsed) % FLAP_PERIOD_S == 0 and flappy.proc is not None:
                    flappy.stop()
                elif int(elapsed) % FLAP_PERIOD_S == FLAP_PERIOD_S // 2 and flappy.proc is None:
                    flappy.restart()
                assert p.alive(), p.stderr.text()
                samples.append((elapsed, rss_anon_kib(p.pid)))
                time.sleep(0.25)
            p.kill()
        if flappy.proc is None:
            flappy.restart()

        # Drain: no sensors, so the log stops growing and both sinks can catch up.
        drain = write_config(
            tmp_path / "drain.toml", data, log=LOG, sensors=[], extra=sinks + projections_toml()
        )
        with run_pilog(drain) as p:
            p.stderr.wait_for(lambda line: "pilog running" in line, "the drain to start")

            def caught_up() -> bool:
                state = status_json("-c", drain)
                sinks_ = [c for c in state["consumers"] if c["name"].startswith("sink:")]
                return len(sinks_) == 2 and all(c.get("lag_events") == 0 for c in sinks_)

            wait_until(caught_up, "both sinks' cursors at the end", 180, poll_s=0.5)
            assert p.stop() == 0, p.stderr.text()
        healthy_stats = healthy.get("/_stats")
        flappy_stats = flappy.get("/_stats")
    finally:
        for rx in (healthy, flappy):
            if rx.proc is not None:
                rx.stop()
    healthy_stored = healthy.stored()
    flappy_stored = flappy.stored()

    # -- what the log holds, and what its Gaps cover
    history = History(data)
    header = history.header()
    assert header is not None
    first = history.first_seq()
    assert first is not None
    events = list(history.events(first))
    in_log = {e.seq for e in events}
    readings = {e.seq: e for e in events if isinstance(e.body, Reading)}
    next_seq = max(in_log) + 1
    gaps: list[tuple[int, int]] = [
        (e.body.first_seq, e.body.last_seq)
        for e in events
        if isinstance(e.body, Gap) and e.body.first_seq is not None and e.body.last_seq is not None
    ]
    # A Gap event can itself be deleted later: the index keeps every incident as well.
    index = history.open_index()
    assert index is not None
    for incident in index.incidents(limit=1_000_000):
        detail = json.loads(incident.detail)
        if incident.kind == "gap" and detail.get("first_seq") is not None:
            gaps.append((detail["first_seq"], detail["last_seq"]))
    index.close()
    in_gap: set[int] = set()
    for lo, hi in gaps:
        in_gap.update(range(lo, hi + 1))
    assert first > 0, "the soak never filled the log: drop_oldest was not exercised"
    assert gaps, "segments were dropped but no Gap records it"

    # (c) a seq is never both kept and dropped, and a deletion without a Gap is one every
    # consumer had passed: its readings reached both receivers.
    assert not in_log & in_gap, sorted(in_log & in_gap)[:20]
    quiet = set(range(next_seq)) - in_log - in_gap
    at_both = {o["seq"] for o in healthy_stored} & {o["seq"] for o in flappy_stored}
    unseen = sorted(quiet - at_both)
    bookkeeping = (ROUNDS + 1) * (SENSORS + 3)  # driver starts, repairs, a few failures
    assert len(unseen) <= bookkeeping, f"{len(unseen)} seqs deleted silently: {unseen[:20]}"

    prefix = f"{header.device_id}:{header.epoch_hex}:"
    for name, stored in (("healthy", healthy_stored), ("flappy", flappy_stored)):
        ids = {o["id"] for o in stored}
        # (a) every reading still in the log arrived
        want = {event_id(header.device_id, header.epoch_hex, s) for s in readings}
        missing = want - ids
        assert not missing, f"{name}: {len(missing)} readings missing, e.g. {sorted(missing)[:5]}"
        # (b) nothing invented: each id is a reading in the log, or a seq dropped since
        for obj in stored:
            assert obj["id"].startswith(prefix), obj
            seq = seq_of(obj["id"])
            assert seq == obj["seq"] < next_seq, obj
            if seq in readings:
                assert obj["sensor"] == readings[seq].body.sensor, obj
            else:
                assert seq not in in_log, f"{name}: {obj['id']} is not a reading of the log"

    # (d) duplicates only from kills, lost acknowledgements and (flappy) its restarts
    kills = ROUNDS + 1
    assert healthy_stats["validation_errors"] == 0, healthy_stats
    assert flappy_stats["validation_errors"] == 0, flappy_stats
    healthy_dups = len(healthy_stored) - len({o["id"] for o in healthy_stored})
    assert healthy_dups <= (kills + healthy.acks_lost) * BATCH_MAX, (
        healthy_dups,
        healthy.acks_lost,
    )
    flappy_dups = len(flappy_stored) - len({o["id"] for o in flappy_stored})
    bound = (kills + flappy.acks_lost + flappy.restarts) * BATCH_MAX
    assert flappy_dups <= bound, (flappy_dups, flappy.acks_lost, flappy.restarts)

    # (e) projections against a rebuild, where comparable (see the module docstring)
    incremental = dump_lmdb(projections_path(data))
    copy = tmp_path / "rebuilt"
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns("projections"))
    rebuild(copy, load_config(drain, {"PILOG_DATA_DIR": str(copy)}))
    rebuilt = dump_lmdb(projections_path(copy))
    assert incremental[b"state:latest"]
    assert rebuilt[b"state:latest"] == incremental[b"state:latest"]
    first_ts = events[0].ts_ns

    def comparable(items: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
        # Windows, and directory entries (value: the series' newest window start), that
        # start after the first event still in the log.
        out = {}
        for key, value in items:
            if key.startswith(WINDOW_TAG):
                start = split_window_key(key)[1]
            else:
                start = int.from_bytes(value, "big") - (1 << 63)
            if start > first_ts:
                out[key] = value
        return out

    rollup_now = comparable(incremental[b"state:rollup"])
    assert rollup_now
    assert comparable(rebuilt[b"state:rollup"]) == rollup_now

    # (f) the log verifies
    verify = pilog("verify", "-c", drain)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # Memory did not grow: across restarts (state that grows with the log or the index would
    # show from round to round), and within the long run, after a warm-up.
    early, late = statistics.median(rss[:5]), statistics.median(rss[-5:])
    assert late <= early * RSS_SLACK, (early, late, rss)
    warm = [kib for t, kib in samples if LONG_RUN_WARMUP_S <= t < LONG_RUN_WARMUP_S + 10]
    end = [kib for t, kib in samples if t >= LONG_RUN_S - 10]
    assert warm, samples
    assert end, samples
    assert statistics.median(end) <= statistics.median(warm) * RSS_SLACK, samples
