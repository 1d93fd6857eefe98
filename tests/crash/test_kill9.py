"""Real crashes: `pilog run` killed with SIGKILL at random moments, again and again.

Without a power cut, everything a killed writer handed to the kernel survives it, so every
event a reader saw on disk before (or right after) a kill must be in the final log, unchanged,
with the same seq and id; seqs stay dense and unique across all restarts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    pilog,
    run_pilog,
    status_json,
    tail_json,
    wait_for_seq,
    wait_until,
    write_config,
)

from pilog.events import event_to_json
from pilog.history import History

KILLS = 24
MAX_DELAY_S = 0.3  # the random moment of the kill, after the log has grown


def snapshot(data: Path, seen: dict[int, dict[str, Any]]) -> int:
    """Add the events on disk beyond those already seen; recheck the last one seen."""
    history = History(data)
    header = history.header()
    if header is None:
        return 0
    start = max(max(seen, default=0), 0)
    added = 0
    for event in history.events(start):
        obj = json.loads(json.dumps(event_to_json(event, header.device_id, header.epoch_hex)))
        if event.seq in seen:
            assert seen[event.seq] == obj, f"seq {event.seq} changed on disk"
        else:
            seen[event.seq] = obj
            added += 1
    return added


def grown_past(data: Path, seq: int) -> bool:
    last = History(data).last_seq()
    return last is not None and last > seq


@pytest.mark.slow
def test_kill9_at_random_moments_loses_nothing_that_was_on_disk(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    data = tmp_path / "data"
    config = write_config(
        tmp_path / "pilog.toml",
        data,
        # Small segments: kills land in rotation (seal, create, preallocate) as well.
        log={"fsync_interval_ms": 20, "segment_bytes": "32KiB", "max_bytes": "1GiB"},
        sensors=[
            {"name": "fast", "interval_ms": 1, "batch": 10},
            {"name": "slow", "interval_ms": 7},
        ],
    )
    seen: dict[int, dict[str, Any]] = {}
    high = -1
    for i in range(KILLS):
        run = run_pilog(config)
        try:
            if i % 4 == 3:
                # Some kills land early: while the log is opened and its tail repaired.
                wait_until(lambda r=run: r.stderr.lines or None, "pilog to start logging")
            else:
                wait_until(lambda h=high: grown_past(data, h), f"the log to grow past {high}")
            time.sleep(rng.uniform(0, MAX_DELAY_S))  # the random moment: the point of the test
            snapshot(data, seen)
            run.proc.send_signal(signal.SIGKILL)
            assert run.proc.wait(60) == -signal.SIGKILL, f"kill {i} (seed {seed})"
        finally:
            run.kill()
        assert "Traceback" not in run.stderr.text(), f"kill {i} (seed {seed})"
        snapshot(data, seen)  # what a dead writer left must survive the next open too
        high = max(seen, default=-1)

    # One last clean run: the log opens, grows and stops as usual.
    with run_pilog(config) as run:
        wait_for_seq(data, high + 10)
        assert run.stop() == 0, run.stderr.text()
    verify = pilog("verify", "-c", config)
    assert verify.returncode == 0, f"{verify.stderr} (seed {seed})"

    final = tail_json("-c", config, "--from", "0")
    assert [e["seq"] for e in final] == list(range(len(final))), f"seed {seed}"
    assert len({e["id"] for e in final}) == len(final)
    by_seq = {e["seq"]: e for e in final}
    lost = sorted(seq for seq in seen if seq not in by_seq)
    assert not lost, f"{len(lost)} events lost, first {lost[:5]} (seed {seed})"
    changed = [seq for seq, e in seen.items() if by_seq[seq] != e]
    assert not changed, f"events changed: {changed[:5]} (seed {seed})"
    state = status_json("-c", config)
    assert state["gaps"] == 0
    assert state["repairs"] == sum(e["type"] == "repair" for e in final)
