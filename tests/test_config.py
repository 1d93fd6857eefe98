"""Config loading: sizes, durations, env overrides, and errors that name file and key path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pilog.config import (
    EMBEDDED_DEFAULT,
    find_config,
    load_config,
    log_options,
    parse_config,
    parse_duration,
    parse_size,
)
from pilog.errors import ConfigError, ConfigProblemsError
from pilog.log.writer import LogOptions


def parse(text: str, env: dict[str, str] | None = None):
    return parse_config(tomllib.loads(text), "pilog.toml", env or {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16MiB", 16 << 20),
        ("1GiB", 1 << 30),
        ("512KiB", 512 << 10),
        ("1GB", 10**9),
        (4096, 4096),
        ("100B", 100),
        ("1.5MiB", 3 << 19),
    ],
)
def test_sizes_parse_binary_and_decimal_units(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("7d", 604800.0), (3, 3.0)],
)
def test_durations_parse_to_seconds(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1MiB", "16 MiBs", True, -5])
def test_bad_size_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(bad)


def test_embedded_default_runs_synthetic_sensor_in_local_data_dir() -> None:
    config = load_config(None, environ={})
    assert config.data_dir == Path("pilog-data")
    assert [s.driver for s in config.sensor] == ["synthetic", "system"]
    assert config.source == "<embedded default>"
    LogOptions(**log_options(config))  # the defaults are a valid writer configuration
    assert "[log]" in EMBEDDED_DEFAULT


def test_full_example_parses_with_units() -> None:
    config = parse(
        """
        device_id = "beamrider-0001"
        data_dir = "/var/lib/pilog"
        [log]
        fsync = "always"
        fsync_interval_ms = 50
        segment_bytes = "1MiB"
        max_bytes = "64MiB"
        on_full = "block"
        retain = "2d"
        [[sensor]]
        name = "lab-air"
        driver = "synthetic"
        interval_ms = 250
        period_s = 10.0
        """
    )
    assert config.device_id == "beamrider-0001"
    assert config.log.segment_bytes == 1 << 20
    assert config.log.retain == 2 * 86400
    assert config.sensor[0].options == {"period_s": 10.0}
    opts = log_options(config)
    assert opts["fsync_interval_s"] == 0.05
    assert opts["on_full"] == "block"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[log]\nfsynk = 1", "pilog.toml: log: unknown key `fsynk`; did you mean `fsync`?"),
        (
            '[log]\nfsync = "sometimes"',
            "log.fsync: Invalid enum value 'sometimes'; "
            "expected one of 'always', 'interval', 'never'",
        ),
        ('[log]\nsegment_bytes = "lots"', "pilog.toml: log.segment_bytes: expected a size"),
        ('[log]\nretain = "7 weeks"', "pilog.toml: log.retain: expected a duration"),
        ('[log]\nmax_bytes = "1MiB"', "max_bytes must hold at least two segments"),
        ("colour = 1", "pilog.toml: unknown key `colour`"),
        ('[[sensor]]\ndriver = "synthetic"', "sensor[0]: Object missing required field `name`"),
        ('[[sensor]]\nname = "a"\ndriver = "x"\ninterval_ms = "x"', "sensor[0].interval_ms"),
        (
            '[[sensor]]\nname = "a"\ndriver = "x"\n[[sensor]]\nname = "a"\ndriver = "y"',
            "sensor names must be unique; repeated: a",
        ),
    ],
)
def test_errors_name_file_and_key_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text)
    assert message in str(err.value)


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pilog.toml"
    path.write_text("[log\nfsync = 1")
    with pytest.raises(ConfigError, match=r"pilog.toml: not valid TOML"):
        load_config(path, environ={})


def test_env_overrides_top_level_and_section_keys() -> None:
    config = parse(
        '[log]\nfsync = "interval"',
        {
            "PILOG_DEVICE_ID": "env-device",
            "PILOG_DATA_DIR": "/tmp/x",
            "PILOG_LOG__FSYNC": "always",
            "PILOG_LOG__FSYNC_INTERVAL_MS": "25",
            "PILOG_LOG__SEGMENT_BYTES": "2MiB",
            "UNRELATED": "1",
        },
    )
    assert config.device_id == "env-device"
    assert config.data_dir == Path("/tmp/x")
    assert config.log.fsync == "always"
    assert config.log.fsync_interval_ms == 25
    assert config.log.segment_bytes == 2 << 20


def test_bad_env_override_is_reported_with_key_path() -> None:
    with pytest.raises(ConfigError, match=r"log.fsync_interval_ms"):
        parse("", {"PILOG_LOG__FSYNC_INTERVAL_MS": "soon"})


def test_config_search_prefers_explicit_then_env_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PILOG_CONFIG", raising=False)
    assert find_config(None) is None or find_config(None) == Path("/etc/pilog/pilog.toml")
    (tmp_path / "pilog.toml").write_text("")
    assert find_config(None) == Path("pilog.toml")
    other = tmp_path / "other.toml"
    other.write_text("")
    monkeypatch.setenv("PILOG_CONFIG", str(other))
    assert find_config(None) == other
    assert find_config(tmp_path / "pilog.toml") == tmp_path / "pilog.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(tmp_path / "missing.toml")


def test_an_override_of_an_unknown_section_is_an_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"PILOG_LGO__FSYNC: no section \[lgo\]"):
        load_config(None, {"PILOG_LGO__FSYNC": "always"})


def test_every_problem_of_a_config_is_reported_at_once_with_suggestions() -> None:
    with pytest.raises(ConfigProblemsError) as err:
        parse(
            """
            devise_id = "x"
            [log]
            fsyncc = "always"
            on_full = "sometimes"
            segment_byte = "1MiB"
            [[sensor]]
            name = "lab"
            driver = "synthetic"
            interval_ms = "fast"
            [[sink]]
            type = "http-json"
            name = "keep"
            url = "http://127.0.0.1:1/"
            bach_max = 5
            [[sink]]
            type = "carrier-pigeon"
            name = "coo"
            [[projection]]
            type = "rollup"
            window = ["1m"]
            """
        )
    assert err.value.problems == [
        "pilog.toml: unknown key `devise_id`; did you mean `device_id`?",
        "pilog.toml: log: unknown key `fsyncc`; did you mean `fsync`?",
        "pilog.toml: log: unknown key `segment_byte`; did you mean `segment_bytes`?",
        "pilog.toml: log.on_full: Invalid enum value 'sometimes'; "
        "expected one of 'drop_oldest', 'block'",
        "pilog.toml: sensor[0].interval_ms: Expected `int`, got `str`",
        "pilog.toml: sink[0]: unknown key `bach_max`; did you mean `batch_max`?",
        "pilog.toml: sink[1].type: unknown sink 'carrier-pigeon'; `pilog sinks` lists them "
        "(or name a class as 'package.module:Class')",
        "pilog.toml: projection[0]: unknown key `window`; did you mean `windows`?",
    ]
    assert str(err.value).splitlines()[0] == "8 problems in the config:"


def test_a_misspelt_sink_or_projection_type_gets_a_suggestion() -> None:
    with pytest.raises(ConfigProblemsError) as err:
        parse(
            """
            [[sink]]
            name = "keep"
            type = "http-jsno"
            url = "http://127.0.0.1:1/"
            [[projection]]
            type = "rolup"
            """
        )
    assert err.value.problems == [
        "pilog.toml: sink[0].type: unknown sink 'http-jsno'; did you mean http-json? "
        "`pilog sinks` lists them (or name a class as 'package.module:Class')",
        "pilog.toml: projection[0].type: unknown projection 'rolup'; did you mean rollup? "
        "`pilog projections` lists them (or name a class as 'package.module:Class')",
    ]


def test_a_sink_options_bad_values_name_the_key_path() -> None:
    with pytest.raises(ConfigProblemsError) as err:
        parse(
            """
            [[sink]]
            name = "vm"
            type = "influx-line"
            url = "ftp://127.0.0.1:1/"
            api = "v3"
            batch_max = 0
            """
        )
    assert err.value.problems == [
        "pilog.toml: sink[0]: batch_max must be at least 1",
        "pilog.toml: sink[0].api: Invalid enum value 'v3'; expected one of 'v1', 'v2'",
    ]


def test_a_lone_problem_is_one_line() -> None:
    with pytest.raises(ConfigProblemsError) as err:
        parse("[metrics]\nlisten = 9108")
    assert str(err.value) == "pilog.toml: metrics.listen: Expected `str | null`, got `int`"


def test_an_unknown_key_far_from_every_known_one_gets_no_suggestion() -> None:
    with pytest.raises(ConfigError) as err:
        parse("[log]\nzzz = 1")
    assert str(err.value) == "pilog.toml: log: unknown key `zzz`"
