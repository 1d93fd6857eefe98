"""docs/config.md is what the config types say, and every key has a description."""

from __future__ import annotations

import re
from pathlib import Path

from pilog.config_reference import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_the_reference_page_is_up_to_date() -> None:
    assert DOC.read_text() == render(), (
        "docs/config.md is stale: run .venv/bin/python tools/gen_config_reference.py"
    )


def test_every_key_has_a_description() -> None:
    rows = [line for line in render().splitlines() if re.match(r"^\| `[a-z_]+` \|", line)]
    assert len(rows) > 40
    undescribed = [
        r.split("|")[1].strip() for r in rows if not r.rstrip("|").split("|")[-1].strip()
    ]
    assert undescribed == [], "add a trailing comment to these fields in pilog/config.py"
