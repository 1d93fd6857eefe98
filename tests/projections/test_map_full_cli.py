"""`pilog run` with a projections map that fills up or does not fit: the projections pause
and say what to do, the log and the drivers go on, and pilog never exits over it."""

from __future__ import annotations

import json
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
from helpers import (
    assert_one_sentence_error,
    last_seq,
    pilog,
    run_pilog,
    status_json,
    wait_for_seq,
    wait_until,
    write_config,
)

from pilog.config import load_config
from pilog.datadir import EventLog
from pilog.events import Reading
from pilog.testing.clock import FakeClock

SECOND = 1_000_000_000
BACKLOG = 2000  # readings already in the log: 10,000 one-second windows, well past 128KiB
# A map no process can map: more than the address space (47 bits on x86-64, 3 GiB on armhf).
UNMAPPABLE = "3900MiB" if sys.maxsize < 2**32 else "100000TiB"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configure(tmp_path: Path, projections: str, port: int = 0) -> Path:
    metrics = f'[metrics]\nlisten = "127.0.0.1:{port}"\n' if port else ""
    return write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        log={"fsync_interval_ms": 10},
        sensors=[{"name": "air", "interval_ms": 20}],
        extra=f"""
{metrics}
[projections]
{projections}

[[projection]]
type = "latest"
commit_interval = "50ms"

[[projection]]
type = "rollup"
windows = ["1s"]
commit_interval = "50ms"
""",
    )


def write_backlog(config: Path) -> None:
    """BACKLOG readings of five fields, one second apart, as an earlier run left them."""
    clock = FakeClock()
    log = EventLog(load_config(config), clock=clock)
    for i in range(BACKLOG):
        clock.advance(SECOND)
        log.append(Reading("backlog", "test", {f"f{k}": i + k for k in range(5)}))
    log.close()


def projection_states(config: Path) -> dict[str, dict[str, Any]]:
    consumers = status_json("-c", config)["consumers"]
    return {c["name"]: c.get("live") or {} for c in consumers}


def all_paused(config: Path) -> dict[str, dict[str, Any]] | None:
    states = projection_states(config)
    paused = all(s.get("state") == "paused" for s in states.values())
    return states if paused and len(states) == 2 else None


def test_a_full_map_pauses_projections_while_pilog_goes_on_logging(tmp_path: Path) -> None:
    port = free_port()
    config = configure(tmp_path, 'map_size = "64KiB"\nmap_size_max = "128KiB"', port)
    write_backlog(config)
    data = tmp_path / "data"
    with run_pilog(config) as p:
        states = wait_until(lambda: all_paused(config), "both projections paused")
        for name in ("projection:latest", "projection:rollup"):
            why = states[name]["last_error"]
            assert f"the projections in {data / 'projections'} are full" in why
            assert "ceiling of 128KiB ([projections] map_size_max" in why
            assert "pilog replay --projection NAME" in why
            assert states[name]["retries"] >= 1
        # The drivers and the log do not notice.
        seq = last_seq(data)
        assert seq is not None
        wait_for_seq(data, seq + 20)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        retries = re.search(
            r'pilog_consumer_retries_total\{consumer="projection:rollup"\} (\d+)', metrics
        )
        assert retries is not None
        assert int(retries.group(1)) >= 1
        assert p.stop(signal.SIGTERM) == 0
        stderr = p.stderr.text()
    assert "Traceback" not in stderr
    assert stderr.count("projection rollup paused: the projections in") == 1
    assert stderr.count("projection latest paused: the projections in") == 1

    # The fix the message names: a larger map_size_max, and a restart. Nothing was lost: the
    # projections catch up from the cursor they committed with their state.
    configure(tmp_path, 'map_size = "64KiB"\nmap_size_max = "64MiB"')
    with run_pilog(config) as p:

        def caught_up() -> bool:
            states = projection_states(config)
            return all(s.get("state") == "idle" for s in states.values()) and all(
                (c["next_seq"] or 0) > BACKLOG for c in status_json("-c", config)["consumers"]
            )

        wait_until(caught_up, "projections caught up with the backlog")
        assert p.stop() == 0
        assert "grew it to" in p.stderr.text()
    shown = pilog("show", "latest", "--json", "-c", config)
    assert shown.returncode == 0, shown.stderr
    fields = {(r["sensor"], r["field"]) for r in json.loads(shown.stdout)["values"]}
    assert {("backlog", f"f{k}") for k in range(5)} <= fields


def test_a_map_larger_than_the_address_space_pauses_projections_with_the_fix(
    tmp_path: Path,
) -> None:
    config = configure(tmp_path, f'map_size = "{UNMAPPABLE}"')
    data = tmp_path / "data"
    with run_pilog(config) as p:
        wait_until((data / "log").is_dir, "the log")  # status refuses a data dir yet to be made
        states = wait_until(lambda: all_paused(config), "both projections paused")
        why = states["projection:latest"]["last_error"]
        assert f"cannot map the projections in {data / 'projections'}" in why
        assert 'set a smaller map in pilog.toml, e.g. [projections] map_size = "256MiB"' in why
        wait_for_seq(data, 20)  # logging goes on
        assert p.stop() == 0
        assert "Traceback" not in p.stderr.text()
    # Where pilog does not run, the same is one sentence and a non-zero exit.
    line = assert_one_sentence_error(pilog("replay", "-c", config, "--from", "0", "--all"))
    assert "cannot map the projections in" in line
    assert "[projections] map_size" in line
