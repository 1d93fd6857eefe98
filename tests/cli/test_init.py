"""`pilog init` writes a config that loads, whose commented examples are valid too."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from helpers import assert_one_sentence_error, pilog

from pilog.config import load_config, parse_config


def test_init_writes_a_loadable_config_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "pilog.toml"
    out = pilog("init", path, "--device-id", "box-7", "--data-dir", tmp_path / "data")
    assert out.returncode == 0, out.stderr
    config = load_config(path, {})
    assert config.device_id == "box-7"
    assert config.data_dir == tmp_path / "data"
    assert [s.name for s in config.sensor] == ["demo", "host"]
    line = assert_one_sentence_error(pilog("init", path))
    assert "--force" in line
    assert pilog("init", path, "--force").returncode == 0


def test_the_commented_examples_parse_once_uncommented(tmp_path: Path) -> None:
    path = tmp_path / "pilog.toml"
    assert pilog("init", path).returncode == 0
    text = path.read_text()
    uncommented = re.sub(r"^# (\[|[a-z_]+ = )", r"\1", text, flags=re.MULTILINE)
    assert uncommented != text
    config = parse_config(tomllib.loads(uncommented), str(path), {})
    assert [s.name for s in config.sink] == ["keep"]
    assert config.metrics.listen == "127.0.0.1:9108"
    assert "lab-air" in [s.name for s in config.sensor]
