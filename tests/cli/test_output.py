"""What the CLI prints for people: values at display precision, one line per event on a
terminal, counts in words, incidents as a titled table, flags without a type in --help."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest
from helpers import PILOG, clean_env, pilog, write_config

from pilog.config import load_config
from pilog.datadir import EventLog
from pilog.events import Gap, Reading

NOISY = 23.000000000000007  # 23.0 + 7e-15: what float arithmetic in a driver leaves behind
LONG_FIELDS = {f"field_{i:02d}_with_a_long_name_pct": i + 0.5 for i in range(12)}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped log: a noisy reading, a reading wider than any terminal, and a gap."""
    tmp = tmp_path_factory.mktemp("output")
    config = write_config(tmp / "pilog.toml", tmp / "data")
    events = EventLog(load_config(config))
    try:
        events.append(Reading("air", "synthetic", {"temperature_c": NOISY, "count": 3}))
        events.append(Reading("wide", "synthetic", LONG_FIELDS))
        events.append_incident(Gap("disk full", count=4, sensor="air"))
    finally:
        events.close()
    return config


def on_terminal(*args: object, columns: int = 200) -> list[str]:
    """Run pilog with stdout on a pty `columns` wide; its output lines."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*PILOG, *map(str, args)],
        stdout=secondary,
        stderr=subprocess.PIPE,
        env={**clean_env(), "COLUMNS": str(columns)},
    )
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert proc.wait(60) == 0
    assert proc.stderr is not None
    proc.stderr.close()
    return b"".join(chunks).decode().splitlines()


def test_terminal_shows_values_at_display_precision_json_keeps_full(logged: Path) -> None:
    lines = on_terminal("tail", "-c", logged, "--from", "0", "--type", "reading", "--sensor", "air")
    assert len(lines) == 1
    assert "temperature_c=23.0 " in lines[0] + " "
    assert "23.000000000000007" not in lines[0]
    piped = pilog("tail", "-c", logged, "--from", "0", "--sensor", "air")
    assert json.loads(piped.stdout.splitlines()[0])["payload"]["temperature_c"] == NOISY


def test_terminal_prints_one_line_per_event_cut_to_its_width(logged: Path) -> None:
    lines = on_terminal("tail", "-c", logged, "--from", "0", columns=80)
    assert len(lines) == 3
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[1].endswith("\u2026")
    piped = pilog("tail", "-c", logged, "--from", "0", "--sensor", "wide")
    assert json.loads(piped.stdout)["payload"] == LONG_FIELDS  # nothing cut when piped


def test_counts_are_in_words(logged: Path) -> None:
    one = pilog("export", "-c", logged, "--from", "0", "--to", "0")
    assert one.returncode == 0, one.stderr
    assert "exported 1 reading from" in one.stderr
    two = pilog("export", "-c", logged, "--from", "0")
    assert "exported 2 readings from" in two.stderr
    verified = pilog("verify", "-c", logged)
    assert "1 segment, 3 events" in verified.stdout, verified.stdout


def test_status_lists_incidents_under_a_heading_with_human_fields(logged: Path) -> None:
    lines = on_terminal("status", "-c", logged)
    text = "\n".join(lines)
    assert "recent incidents" in text
    gap = next(line for line in lines if " gap " in line)
    assert "reason: disk full" in gap
    assert "count: 4" in gap
    assert "sensor: air" in gap
    assert "{" not in text
    assert "None" not in gap
    status = json.loads(pilog("status", "--json", "-c", logged).stdout)
    assert status["incidents"][0]["detail"]["reason"] == "disk full"  # --json keys unchanged


COMMANDS = [
    [],
    ["run"],
    ["tail"],
    ["status"],
    ["verify"],
    ["repair"],
    ["check"],
    ["drivers"],
    ["init"],
    ["replay"],
    ["export"],
    ["retry"],
    ["show", "latest"],
    ["show", "rollup"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pilog")
def test_help_shows_boolean_flags_as_plain_flags(command: list[str]) -> None:
    result = pilog(*command, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "<bool>" not in result.stdout, result.stdout
    assert "<list[" not in result.stdout, result.stdout  # `--sensor <str>...`: one per value
    assert "--help" in result.stdout


def test_tail_help_lists_follow_without_a_value() -> None:
    result = pilog("tail", "--help", env={"COLUMNS": "200"})
    follow = next(line for line in result.stdout.splitlines() if "--follow" in line)
    assert follow.split("--follow")[1].split()[:2] == ["-f", "Keep"], follow
    since = next(line for line in result.stdout.splitlines() if "--from" in line)
    assert "<str>" in since  # options that take a value still say what kind


def test_tail_json_and_export_ndjson_share_the_wire_schema_for_a_reading(logged: Path) -> None:
    tailed = [
        json.loads(x) for x in pilog("tail", "-c", logged, "--from", "0").stdout.split("\n")[:-1]
    ]
    exported = [json.loads(x) for x in pilog("export", "-c", logged).stdout.splitlines()]
    readings = [e for e in tailed if e["type"] == "reading"]
    assert len(exported) == len(readings) == 2
    for wire, tail in zip(exported, readings, strict=True):
        assert set(wire) == {
            "id",
            "device_id",
            "seq",
            "sensor",
            "sensor_type",
            "payload",
            "timestamp",
        }
        assert {k: tail[k] for k in wire} == wire  # tail adds ts_ns, mono_ns, boot_id, type
