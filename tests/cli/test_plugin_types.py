"""`pilog sinks`, `pilog projections`, and sink and projection types of one's own, run by
`pilog run` from a file beside the config."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import msgspec
import pytest
from helpers import dump_lmdb, run_pilog, status_json, tail_json, wait_until, write_config
from helpers import pilog as pilog_cli

import pilog.projections
import pilog.uploader.sinks
from pilog.config import parse_config
from pilog.plugins import options_of
from pilog.projections import find_projection
from pilog.uploader.sinks import find_sink

SINKS_DIR = Path(pilog.uploader.sinks.__file__).parent
PROJECTIONS_DIR = Path(pilog.projections.__file__).parent

FILE_SINK = '''
"""A sink of one's own: each reading's id, one line each, appended to a local file."""

from pathlib import Path
from typing import Any, ClassVar

import msgspec

from pilog.uploader.sink import ACK, Outcome, readings


class FileSinkOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    path: str = ""  # the file to append to

    def __post_init__(self) -> None:
        if not self.path:
            raise ValueError("path is required: the file to append readings to")


class FileSink:
    """Appends each reading's id to a local file."""

    Options: ClassVar[type[msgspec.Struct]] = FileSinkOptions
    extra: ClassVar[str | None] = None

    def __init__(self, config: Any, options: FileSinkOptions, context: Any) -> None:
        self.context = context
        self.path = Path(options.path)
        self.closed = False

    def send(self, batch: Any) -> Outcome:
        if self.closed:
            raise RuntimeError("closed")
        with self.path.open("a") as f:
            for event, _ in readings(batch):
                f.write(self.context.event_id(event.seq) + "\\n")
        return ACK

    def probe(self, deadline: float) -> Outcome:
        return Outcome("ack", f"{self.path} is writable")

    def close(self) -> None:
        self.closed = True

    def where(self) -> str:
        return str(self.path)
'''

COUNT_PROJECTION = '''
"""A projection of one's own: how many readings each sensor has, as ASCII digits."""

from typing import Any, ClassVar

import msgspec

from pilog.config import projection_name
from pilog.events import Reading
from pilog.projections import ProjectionMeta


class CountOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sensor_prefix: str = ""  # count only sensors whose name starts with this


class CountProjection:
    """Readings per sensor."""

    Options: ClassVar[type[msgspec.Struct]] = CountOptions
    extra: ClassVar[str | None] = None
    meta = ProjectionMeta("count")

    @classmethod
    def from_config(cls, config: Any, options: CountOptions, db: Any) -> "CountProjection":
        return cls(projection_name(config), options.sensor_prefix, db)

    def __init__(self, name: str, prefix: str, db: Any) -> None:
        self.name, self._prefix, self._db, self._pending = name, prefix, db, {}

    def apply(self, events: Any) -> None:
        for event in events:
            body = event.body
            if isinstance(body, Reading) and body.sensor.startswith(self._prefix):
                key = body.sensor.encode()
                if key not in self._pending:
                    self._pending[key] = int(self._db.get(key) or b"0")
                self._pending[key] += 1

    def flush(self, txn: Any) -> None:
        for key in sorted(self._pending):
            self._db.put(txn, key, str(self._pending[key]).encode())

    def committed(self) -> None:
        self._pending.clear()

    def clear(self, txn: Any) -> None:
        self._db.clear(txn)
        self._pending.clear()
'''


def test_a_sink_and_a_projection_of_ones_own_run_from_beside_the_config(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "file_sink.py").write_text(FILE_SINK)
    (tmp_path / "count_projection.py").write_text(COUNT_PROJECTION)
    delivered = tmp_path / "delivered.txt"
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        extra=(
            'driver_paths = ["plugins"]\n'  # file_sink.py is there; count_projection.py beside
            f'[[sink]]\nname = "file"\ntype = "file_sink:FileSink"\npath = "{delivered}"\n'
            "linger_ms = 10\n"
            '[[projection]]\nname = "counts"\ntype = "count_projection:CountProjection"\n'
            'sensor_prefix = "ai"\ncommit_interval = "100ms"\n'
        ),
    )
    # driver_paths is a top-level key: it must come before the tables.
    text = config.read_text().replace('driver_paths = ["plugins"]\n', "")
    config.write_text('driver_paths = ["plugins"]\n' + text)
    with run_pilog(config) as p:
        wait_until(lambda: delivered.is_file() and len(delivered.read_text().split()) >= 5, "ids")
        assert p.stop() == 0, p.stderr.text()
    ids = delivered.read_text().split()
    seqs = [r["seq"] for r in tail_json("-c", config, "--from", "0") if r["type"] == "reading"]
    cursor = {c["name"]: c["next_seq"] for c in status_json("-c", config)["consumers"]}
    # Each reading below the sink's cursor delivered once, in order, and nothing else.
    epoch_ids = [i.rsplit(":", 1) for i in ids]
    assert [int(seq) for _, seq in epoch_ids] == [s for s in seqs if s < cursor["sink:file"]]
    counts = dict(dump_lmdb(tmp_path / "data" / "projections")[b"state:counts"])
    assert int(counts[b"air"]) == len([s for s in seqs if s < cursor["projection:counts"]])
    check = pilog_cli("check", "-c", config, "--json")
    rows = {r["what"]: r for r in json.loads(check.stdout)}
    assert rows["sink:file"]["ok"], check.stdout


def test_an_unknown_option_of_ones_own_sink_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "file_sink.py").write_text(FILE_SINK)
    config = write_config(
        tmp_path / "pilog.toml",
        tmp_path / "data",
        extra='[[sink]]\nname = "file"\ntype = "file_sink:FileSink"\npaht = "x"\n',
    )
    result = pilog_cli("check", "-c", config)
    assert result.returncode == 2, result.stderr
    assert "sink[0]: unknown key `paht`; did you mean `path`?" in result.stderr
    assert "sink[0]: path is required" in result.stderr


@pytest.mark.parametrize(
    ("command", "folder", "find"),
    [("sinks", SINKS_DIR, find_sink), ("projections", PROJECTIONS_DIR, find_projection)],
)
def test_listing_names_every_builtin_type(command: str, folder: Path, find: object) -> None:
    result = pilog_cli(command, "--json")
    assert result.returncode == 0, result.stderr
    listed = {d["name"]: d for d in json.loads(result.stdout)}
    builtin = {
        p.parent.name.replace("_", "-") for p in folder.glob("*/*.py") if p.stem != "__init__"
    }
    assert builtin <= set(listed)
    assert all(listed[n]["error"] is None and listed[n]["does"] for n in builtin)
    if command == "sinks":
        assert listed["mqtt"]["extra"] == "mqtt"


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("sinks", "http-json"),
        ("sinks", "influx-line"),
        ("sinks", "mqtt"),
        ("projections", "latest"),
        ("projections", "rollup"),
    ],
)
def test_one_type_has_every_option_and_the_sample_ready_to_paste(command: str, name: str) -> None:
    cls = find_sink(name) if command == "sinks" else find_projection(name)
    folder = Path(str(cls.__module__).replace(".", "/")).parent
    sample_file = Path(pilog.__file__).parent.parent / folder / "sample.toml"
    described = json.loads(pilog_cli(command, name, "--json").stdout)
    fields = msgspec.structs.fields(options_of(cls))
    assert [o["name"] for o in described["options"]] == [f.encode_name for f in fields]
    assert all(o["doc"] for o in described["options"])
    assert described["sample"] == sample_file.read_text()
    human = pilog_cli(command, name, env={"COLUMNS": "200"}).stdout
    sample = human[human.index("sample config (sample.toml):\n") + 29 :]
    assert sample == sample_file.read_text()
    parse_config(tomllib.loads(sample), "pasted", {})


@pytest.mark.parametrize(
    ("command", "typo", "hint"), [("sinks", "mqt", "mqtt"), ("projections", "rolup", "rollup")]
)
def test_an_unknown_type_exits_2_with_a_suggestion(command: str, typo: str, hint: str) -> None:
    result = pilog_cli(command, typo)
    assert result.returncode == 2
    assert f"did you mean {hint}?" in result.stderr
    assert f"pilog {command}" in result.stderr
