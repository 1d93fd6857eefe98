"""Commands that read a data dir say loudly when it is the wrong place, and show paths whole.

A data dir that does not exist, or holds none of `LOCK`, `log/` and `index.sqlite` (what
`pilog run` makes), is one sentence and exit 2 naming its absolute path and where it came
from; an existing data dir of a stopped pilog still reads as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import (
    Running,
    assert_one_sentence_error,
    pilog,
    projections_toml,
    wait_for_seq,
    write_config,
)

READ_ONLY = {
    "status": ["status"],
    "status-json": ["status", "--json"],
    "verify": ["verify"],
    "tail": ["tail", "--json", "--from", "0"],
    "export": ["export"],
    "show-latest": ["show", "latest"],
    "show-rollup": ["show", "rollup", "--sensor", "air", "--field", "temperature_c"],
    "replay-dry-run": ["replay", "--from", "0", "--all", "--dry-run"],
    "repair-dry-run": ["repair", "--dry-run"],
}
PROJECTIONS = projections_toml(windows='["1m"]')


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding pilog.toml with the relative `data_dir = "data"`, written by a real
    `pilog run` started there and stopped."""
    home = tmp_path_factory.mktemp("stopped")
    config = write_config(home / "pilog.toml", Path("data"), extra=PROJECTIONS)
    with Running("run", "-c", config, cwd=home) as run:
        wait_for_seq(home / "data", 5)
        assert run.stop() == 0, run.stderr.text()
    return home


def not_a_data_dir(tmp_path: Path) -> Path:
    """A directory with files, but not those `pilog run` makes."""
    path = tmp_path / "photos"
    (path / "logs").mkdir(parents=True)
    (path / "index.sqlite3").write_text("")
    return path


CASES = {
    "missing": (lambda tmp: tmp / "no" / "such" / "dir", "does not exist"),
    "empty": (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "is not a pilog data dir"),
    "not-pilog": (not_a_data_dir, "is not a pilog data dir"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", READ_ONLY)
def test_a_read_only_command_refuses_a_place_that_is_not_a_data_dir(
    tmp_path: Path, command: str, case: str
) -> None:
    make, says = CASES[case]
    place = make(tmp_path)
    result = pilog(*READ_ONLY[command], "--data-dir", place)
    line = assert_one_sentence_error(result)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"data dir {place} (given by --data-dir) {says}" in line


def test_a_relative_data_dir_of_a_config_file_is_named_absolute_with_the_file(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "pilog.toml", Path("elsewhere"))
    result = pilog("tail", "-c", "pilog.toml", cwd=tmp_path)
    line = assert_one_sentence_error(result)
    assert result.returncode == 2
    assert f"data dir {tmp_path / 'elsewhere'} (data_dir in the config file {config})" in line


def test_a_data_dir_from_the_environment_says_so(tmp_path: Path) -> None:
    result = pilog("verify", env={"PILOG_DATA_DIR": str(tmp_path / "gone")})
    line = assert_one_sentence_error(result)
    assert f"data dir {tmp_path / 'gone'} (given by $PILOG_DATA_DIR) does not exist" in line


def test_a_file_where_the_data_dir_should_be_is_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    line = assert_one_sentence_error(pilog("status", "--data-dir", tmp_path / "data"))
    assert f"data dir {tmp_path / 'data'} (given by --data-dir) is not a directory" in line


@pytest.mark.skipif(
    Path("/etc/pilog/pilog.toml").exists(), reason="/etc/pilog/pilog.toml is this box's config"
)
def test_without_a_config_file_the_embedded_default_is_named_with_its_absolute_data_dir(
    tmp_path: Path,
) -> None:
    result = pilog("status", cwd=tmp_path)
    line = assert_one_sentence_error(result)
    assert result.returncode == 2
    assert f"data dir {tmp_path / 'pilog-data'} (the embedded default" in line
    assert f"no config file was found: looked for $PILOG_CONFIG, {tmp_path / 'pilog.toml'}" in line


@pytest.mark.skipif(
    Path("/etc/pilog/pilog.toml").exists(), reason="/etc/pilog/pilog.toml is this box's config"
)
def test_the_embedded_default_reading_its_own_data_dir_says_which_one_on_stderr(
    stopped: Path, tmp_path: Path
) -> None:
    os.symlink(stopped / "data", tmp_path / "pilog-data")  # the embedded default's data_dir
    result = pilog("status", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data_dir"] == str(tmp_path / "pilog-data")
    assert result.stderr.splitlines() == [
        f"pilog: no config file found (looked for $PILOG_CONFIG, {tmp_path / 'pilog.toml'}, "
        f"/etc/pilog/pilog.toml): using the embedded default, data dir {tmp_path / 'pilog-data'}"
    ]


@pytest.mark.parametrize("command", READ_ONLY)
def test_a_stopped_pilogs_data_dir_still_reads(stopped: Path, command: str) -> None:
    result = pilog(*READ_ONLY[command], "-c", "pilog.toml", cwd=stopped)
    assert result.returncode == 0, result.stderr
    assert "pilog: error" not in result.stderr


def test_status_shows_a_relative_data_dir_absolute(stopped: Path) -> None:
    result = pilog("status", "--json", "-c", "pilog.toml", cwd=stopped)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data_dir"] == str(stopped / "data")
    human = pilog("status", "-c", "pilog.toml", cwd=stopped)
    assert str(stopped / "data") in human.stdout.replace("\n", "")


def test_tail_follow_on_a_data_dir_yet_to_be_made_says_it_waits_for_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "pilog.toml", Path("data"))
    with Running("tail", "-f", "--json", "-c", "pilog.toml", cwd=tmp_path) as tail:
        line = tail.stderr.wait_for(lambda ln: "waiting" in ln, "tail -f to say it waits")
        assert line == (
            f"pilog: data dir {tmp_path / 'data'} (data_dir in the config file {config}) "
            "does not exist; waiting for `pilog run` to write it"
        )
        assert tail.alive()  # following: it waits rather than exits; leaving kills it


def test_export_names_the_absolute_data_dir_it_read(stopped: Path) -> None:
    result = pilog("export", "-c", "pilog.toml", cwd=stopped)
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith(f"readings from {stopped / 'data'}\n")


def test_verify_names_the_absolute_log_it_checked(stopped: Path) -> None:
    result = pilog("verify", "-c", "pilog.toml", cwd=stopped)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")
    assert result.stdout.endswith(f" in {stopped / 'data' / 'log'}\n")
