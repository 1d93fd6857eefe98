"""A config with several mistakes is refused once, naming every one, before any data dir."""

from __future__ import annotations

from pathlib import Path

from helpers import pilog


def refused(tmp_path: Path, text: str) -> list[str]:
    """Run `pilog run` on a bad config from another cwd; the lines of its one refusal."""
    config = tmp_path / "etc" / "pilog.toml"
    config.parent.mkdir()
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n' + text)
    (tmp_path / "elsewhere").mkdir()
    result = pilog("run", "-c", Path("..") / "etc" / "pilog.toml", cwd=tmp_path / "elsewhere")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()
    head, *problems = result.stderr.strip().splitlines()
    assert head == f"pilog: error: {len(problems)} problems in the config:"
    assert all(p.startswith(f"{config}: ") for p in problems), problems
    return [p.removeprefix(f"{config}: ") for p in problems]


def test_every_typo_of_the_tables_is_named_in_one_run(tmp_path: Path) -> None:
    problems = refused(
        tmp_path,
        '[log]\nfsyncc = "always"\nretain = "forever"\n'
        '[[sensor]]\nname = "lab"\ndriver = "synthetic"\ninterval_ms = -1\n'
        '[[projection]]\ntype = "latst"\n',
    )
    assert problems[0] == "log: unknown key `fsyncc`; did you mean `fsync`?"
    assert problems[1].startswith("log.retain: expected a duration")
    assert problems[2].startswith("sensor[0]: interval_ms must be 0")
    assert problems[3].startswith(
        "projection[0].type: unknown projection 'latst'; did you mean latest?"
    )
    assert len(problems) == 4


def test_every_bad_sensor_is_named_in_one_run(tmp_path: Path) -> None:
    problems = refused(
        tmp_path,
        '[[sensor]]\nname = "lab"\ndriver = "bme208"\n'
        '[[sensor]]\nname = "demo"\ndriver = "synthetic"\nperiod = 3\n',
    )
    assert problems == [
        "sensor[0] (name \"lab\"): unknown driver 'bme208'; did you mean bme280? "
        "`pilog drivers` lists them (or name a class as 'package.module:Class')",
        'sensor[1] (name "demo"): unknown key `period`; did you mean `period_s`?',
    ]


def test_a_typo_in_a_table_and_a_misspelt_driver_are_named_in_one_run(tmp_path: Path) -> None:
    problems = refused(
        tmp_path,
        '[log]\nfsyncc = "always"\n'
        '[[sensor]]\nname = "lab"\ndriver = "bme208"\n'
        '[[sensor]]\nname = "bad"\ndriver = "synthetic"\ninterval_ms = "fast"\n'
        '[[sensor]]\nname = "demo"\ndriver = "synthetic"\nperiod = 3\n',
    )
    assert problems == [
        "log: unknown key `fsyncc`; did you mean `fsync`?",
        "sensor[1].interval_ms: Expected `int`, got `str`",
        "sensor[0] (name \"lab\"): unknown driver 'bme208'; did you mean bme280? "
        "`pilog drivers` lists them (or name a class as 'package.module:Class')",
        'sensor[2] (name "demo"): unknown key `period`; did you mean `period_s`?',
    ]
