"""Every projection folder is registered, and its sample parses."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import pilog.projections
from pilog.config import parse_config, projection_name
from pilog.errors import ConfigError
from pilog.plugins import convert_options
from pilog.projections import BUILTIN, find_projection

PROJECTIONS_DIR = Path(pilog.projections.__file__).parent
FOLDERS = sorted(p.parent.name for p in PROJECTIONS_DIR.glob("*/projection.py"))


def test_every_projection_folder_is_a_builtin_named_after_it() -> None:
    assert FOLDERS == ["latest", "rollup"]
    assert set(BUILTIN) == set(FOLDERS)
    for name in FOLDERS:
        cls = find_projection(name)
        assert cls.__module__ == f"pilog.projections.{name}.projection"


@pytest.mark.parametrize("folder", FOLDERS)
def test_sample_config_parses_and_validates(folder: str) -> None:
    assert (PROJECTIONS_DIR / folder / "README.md").is_file()
    text = (PROJECTIONS_DIR / folder / "sample.toml").read_text()
    config = parse_config(tomllib.loads(text), f"{folder}/sample.toml", {})
    assert [(p.type, projection_name(p)) for p in config.projection] == [(folder, folder)]
    convert_options(find_projection(folder), config.projection[0].options)


def test_rollup_windows_are_its_own_option() -> None:
    text = '[[projection]]\ntype = "rollup"\nname = "fast"\nwindows = ["10s"]\n'
    p = parse_config(tomllib.loads(text), "pilog.toml", {}).projection[0]
    assert (projection_name(p), p.options) == ("fast", {"windows": ["10s"]})
    assert convert_options(find_projection("rollup"), p.options).windows == [10.0]


def test_unknown_projection_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown projection 'lates'; did you mean latest\?"):
        find_projection("lates")
