"""Every sink folder is registered, its sample parses, and plugins are found like drivers."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

import pilog.uploader.sinks
from pilog.config import parse_config, sink_from_table
from pilog.errors import ConfigError, ConfigProblemsError
from pilog.uploader.sink import SinkContext
from pilog.uploader.sinks import BUILTIN, find_sink, open_sink, sink_options

SINKS_DIR = Path(pilog.uploader.sinks.__file__).parent
FOLDERS = sorted(p.parent.name for p in SINKS_DIR.glob("*/sink.py"))


def test_every_sink_folder_is_a_builtin_named_after_it() -> None:
    assert FOLDERS == ["http_json", "influx_line", "mqtt", "nats", "postgres"]
    assert set(BUILTIN) == {f.replace("_", "-") for f in FOLDERS}
    for name in BUILTIN:
        cls = find_sink(name)
        assert cls.__module__ == f"pilog.uploader.sinks.{name.replace('-', '_')}.sink"
        assert cls.Options.__struct_config__.forbid_unknown_fields
        assert cls.Options.__struct_config__.frozen


@pytest.mark.parametrize("folder", FOLDERS)
def test_sample_config_parses_and_validates(folder: str) -> None:
    assert (SINKS_DIR / folder / "README.md").is_file()
    text = (SINKS_DIR / folder / "sample.toml").read_text()
    config = parse_config(tomllib.loads(text), f"{folder}/sample.toml", {})
    assert [s.type for s in config.sink] == [folder.replace("_", "-")]
    sink = config.sink[0]
    assert sink.options, "the sample shows the type's own keys"
    sink_options(find_sink(sink.type), sink)


def test_sink_by_module_path_and_clear_errors() -> None:
    cls = find_sink("pilog.uploader.sinks.http_json.sink:HttpJsonSink")
    assert cls is find_sink("http-json")
    with pytest.raises(ConfigError, match=r"unknown sink 'http-jsn'; did you mean http-json\?"):
        find_sink("http-jsn")
    with pytest.raises(ConfigError, match=r"pilog\.config has no NoSuchSink"):
        find_sink("pilog.config:NoSuchSink")
    with pytest.raises(ConfigError, match="is not a sink class"):
        find_sink("pilog.config:SinkConfig")


def test_an_existing_config_keeps_its_keys_and_defaults() -> None:
    text = """
        [[sink]]
        name = "keep"
        type = "http-json"
        url = "http://127.0.0.1:1/api"
        gzip = false
        linger_ms = 50
    """
    sink = parse_config(tomllib.loads(text), "pilog.toml", {}).sink[0]
    assert (sink.name, sink.type, sink.linger_ms, sink.batch_max) == ("keep", "http-json", 50, 1000)
    assert sink.options == {"url": "http://127.0.0.1:1/api", "gzip": False}


def test_an_unknown_option_is_refused_with_a_suggestion_among_all_keys() -> None:
    text = """
        [[sink]]
        name = "keep"
        type = "mqtt"
        topik = "x/{sensor}"
        lingr_ms = 5
    """
    with pytest.raises(ConfigProblemsError) as e:
        parse_config(tomllib.loads(text), "pilog.toml", {})
    assert e.value.problems == [
        "pilog.toml: sink[0]: unknown key `topik`; did you mean `topic`?",
        "pilog.toml: sink[0]: unknown key `lingr_ms`; did you mean `linger_ms`?",
    ]


PLUGIN = """
from typing import Any, ClassVar
import msgspec

class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    path: str = "out.ndjson"

class NeedsLib:
    Options: ClassVar[type[msgspec.Struct]] = Options
    extra: ClassVar[str | None] = "fancy"

    def __init__(self, config: Any, options: Options, context: Any) -> None:
        import no_such_library_here  # noqa: F401

    def send(self, batch): ...
    def probe(self, deadline): ...
    def close(self): ...
    def where(self): return "nowhere"
"""


def test_a_missing_dependency_names_the_plugins_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_lib_sink.py").write_text(PLUGIN)
    monkeypatch.setattr(sys, "path", list(sys.path))
    config = sink_from_table({"name": "x", "type": "needs_lib_sink:NeedsLib"})
    with pytest.raises(ConfigError) as e:
        open_sink(config, SinkContext("d", "e" * 32, tmp_path), [tmp_path])
    assert str(e.value) == (
        'sink x needs the "fancy" extra of its package, which is not installed: '
        "reinstall that package with [fancy]"
    )
