"""`pilog show latest|rollup`: tables, JSON, clear errors, and reading while pilog writes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from pilog.cli.show import show_latest, show_rollup, sparkline
from pilog.events import Event, Reading, Value
from pilog.projections.base import ProjectionError
from pilog.projections.latest.projection import LatestProjection, read_latest
from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore, projections_path
from pilog.projections.rollup.projection import RollupProjection

SECOND = 1_000_000_000
HOUR0 = 1_795_000_000 // 3600 * 3600 * SECOND
NOW = HOUR0 + 3 * 60 * SECOND + 30 * SECOND  # 03:30 past the hour


def at(seq: int, t_s: float, sensor: str, **values: Value) -> Event:
    return Event(seq, HOUR0 + int(t_s * SECOND), seq, b"", Reading(sensor, "test", dict(values)))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Projections of a few readings: temperature each 20 s for 3 minutes, one soil reading."""
    events = [at(i, 20 * i, "air", temperature_c=20.0 + i, ok=i % 2 == 0) for i in range(9)]
    events.append(at(9, 200, "soil", moisture_pct=41, note="dry"))
    with ProjectionStore(projections_path(tmp_path)) as store:
        for p in (
            LatestProjection("latest", store.db("latest")),
            RollupProjection("rollup", store.db("rollup"), [60, 3600]),
        ):
            runner = ProjectionRunner(p, store, commit_interval_s=5.0)
            runner.handle(events)
            runner.commit()
    return tmp_path


def console() -> Console:
    return Console(record=True, width=120, color_system=None, file=io.StringIO())


def test_show_latest_prints_value_age_and_seq_per_field(data_dir: Path) -> None:
    out = console()
    assert show_latest(data_dir, as_json=False, console=out, now_ns=NOW) == 0
    lines = [line.split() for line in out.export_text().splitlines()]
    rows = [[c for c in line if c != "│"] for line in lines if "│" in "".join(line)]
    assert rows == [
        ["air", "ok", "true", "50s", "8"],
        ["air", "temperature_c", "28", "50s", "8"],
        ["soil", "moisture_pct", "41", "10s", "9"],
        ["soil", "note", "dry", "10s", "9"],
    ]


def test_show_latest_json_keeps_types_and_times(data_dir: Path) -> None:
    out = console()
    show_latest(data_dir, as_json=True, console=out, now_ns=NOW)
    doc = json.loads(out.export_text())
    assert doc["projection"] == "latest"
    assert doc["next_seq"] == 10
    first = doc["values"][0]
    assert first == {
        "sensor": "air",
        "field": "ok",
        "value": True,
        "sensor_type": "test",
        "ts": "2026-11-18T11:02:40.000000Z",
        "ts_ns": HOUR0 + 160 * SECOND,
        "age_s": 50.0,
        "seq": 8,
    }
    assert [v["value"] for v in doc["values"][1:]] == [28.0, 41, "dry"]


def test_show_rollup_prints_windows_and_a_sparkline_of_means(data_dir: Path) -> None:
    out = console()
    code = show_rollup(
        data_dir,
        sensor="air",
        field="temperature_c",
        window_s=None,
        since_s=None,
        as_json=False,
        console=out,
        now_ns=NOW,
    )
    assert code == 0
    text = out.export_text()
    assert "air.temperature_c per 1m (rollup)" in text
    rows = [line.split("│")[1:-1] for line in text.splitlines() if line.count("│") == 7]
    cells = [[c.strip() for c in row] for row in rows]
    assert cells == [
        ["2026-11-18 11:00:00", "3", "20", "21", "22", "22"],
        ["2026-11-18 11:01:00", "3", "23", "24", "25", "25"],
        ["2026-11-18 11:02:00", "3", "26", "27", "28", "28"],
    ]
    assert text.splitlines()[-1] == "mean  ▁▅█"


def test_show_rollup_json_of_a_window_length_since_a_time(data_dir: Path) -> None:
    out = console()
    show_rollup(
        data_dir,
        sensor="air",
        field="temperature_c",
        window_s=3600,
        since_s=600,
        as_json=True,
        console=out,
        now_ns=NOW,
    )
    doc = json.loads(out.export_text())
    assert doc["window_s"] == 3600
    (window,) = doc["windows"]
    assert window["start"] == "2026-11-18T11:00:00.000000Z"
    assert (window["count"], window["min"], window["max"], window["mean"]) == (9, 20, 28, 24)
    assert window["last_seq"] == 8


@pytest.mark.parametrize(
    ("sensor", "field", "window_s", "message"),
    [
        ("sea", "t", None, r"no sensor 'sea' \(sensors: air, soil\)"),
        (
            "air",
            "ok",
            None,
            r"no numeric field 'ok' in projection rollup \(fields: temperature_c\)",
        ),
        ("air", "temperature_c", 10, r"no 10s windows \(it keeps 1m, 1h\)"),
    ],
)
def test_show_rollup_of_something_unknown_says_what_exists(
    data_dir: Path, sensor: str, field: str, window_s: float | None, message: str
) -> None:
    with pytest.raises(ProjectionError, match=message):
        show_rollup(
            data_dir,
            sensor=sensor,
            field=field,
            window_s=window_s,
            since_s=None,
            as_json=False,
            console=console(),
        )


def test_show_without_projections_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ProjectionError, match=r"no projections yet .*\[\[projection\]\] .*run\?"):
        show_latest(tmp_path, as_json=False, console=console())
    ProjectionStore(projections_path(tmp_path)).close()  # the env exists, nothing committed
    with pytest.raises(ProjectionError, match=r'no latest projection .*type = "latest"'):
        show_latest(tmp_path, as_json=False, console=console())


def test_sparkline_spans_the_blocks_from_least_to_greatest() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([5.0, 5.0]) == "▄▄"
    assert sparkline([]) == ""


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pilog.events import Event, Reading
    from pilog.projections.latest.projection import LatestProjection
    from pilog.projections.lmdb_store import ProjectionRunner, ProjectionStore

    store = ProjectionStore(Path(sys.argv[1]))
    runner = ProjectionRunner(
        LatestProjection("latest", store.db("latest")), store, commit_interval_s=0
    )
    for n in range(int(sys.argv[2])):
        batch = [
            Event(s, 10**18 + s, s, b"", Reading("ctr", "test", {"seq": s, "half": s // 2}))
            for s in range(n * 10, n * 10 + 10)
        ]
        runner.handle(batch)
        runner.commit()
        if n == 0:
            print("ready", flush=True)
            sys.stdin.readline()  # the test reads this first commit, then lets the rest go
    print("done", flush=True)
    sys.stdin.read()  # hold the environment open until the test has read it
    store.close()
    """
)


def test_a_reader_process_sees_whole_commits_while_pilog_writes(tmp_path: Path) -> None:
    commits = 200
    path = projections_path(tmp_path)
    argv = [sys.executable, "-c", WRITER, str(path), str(commits)]
    seen = set()
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as w:
        assert w.stdin is not None
        assert w.stdout is not None
        assert w.stdout.readline() == "ready\n"
        with ProjectionStore(path, readonly=True) as reader:
            assert reader.cursor("latest") == 10
            seen.add(10)  # before "go": after it the writer may be past 10 by the first look
            w.stdin.write("go\n")
            w.stdin.flush()
            cursor = 0
            while cursor < commits * 10:
                with reader.snapshot() as snap:
                    cursor = snap.cursor("latest") or 0
                    values = {r.field: (r.value, r.seq) for r in read_latest(snap, "latest")}
                # State and cursor come from the same commit, never from two.
                assert values == {"half": ((cursor - 1) // 2, cursor - 1), "seq": (cursor - 1,) * 2}
                seen.add(cursor)
        assert w.stdout.readline() == "done\n"
        out = console()
        show_latest(tmp_path, as_json=True, console=out)  # the writer still holds the env
        assert json.loads(out.export_text())["next_seq"] == commits * 10
        w.stdin.close()
        assert w.wait(timeout=60) == 0
    assert seen >= {10, commits * 10}
