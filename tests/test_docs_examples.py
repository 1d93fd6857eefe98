"""Every pilog.toml example in the README and docs/ is a config pilog accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pilog.config import parse_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        blocks = re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
        for i, block in enumerate(blocks):
            if re.search(r"^\s*\[project[].]", block, re.M):
                continue  # a package's pyproject.toml, not a pilog config
            found.append((f"{page.relative_to(ROOT)}#{i}", block))
    return found


@pytest.mark.parametrize(("where", "block"), examples(), ids=[w for w, _ in examples()])
def test_the_example_is_a_valid_config(where: str, block: str) -> None:
    parse_config(tomllib.loads(block), where, {})


def test_the_docs_have_examples() -> None:
    assert len(examples()) >= 5
