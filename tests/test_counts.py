"""Counts read as English in every message: `1 event`, `2 events`; never `event(s)`."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

from pilog.counts import counted, plural

PILOG = Path(__file__).resolve().parents[1] / "pilog"

# Nouns that follow a count in pilog's messages; a number printed straight before one of these
# reads "1 events" when the number is one. Sizes in bytes are left out: most are limits,
# which are never one.
COUNTED_NOUNS = (
    "attempts devices entries events fields files frames incidents keys lines messages "
    "readings records repairs segments sensors steps values"
)
_NOUNS = COUNTED_NOUNS.replace(" ", "|")
# An optional adjective ("3 failed attempts"), but not "of" ("the last 5 s of readings"), and
# not a rate ("events/s").
PERCENT_COUNT = re.compile(rf"%d (?:(?!of )\w+ )?(?:{_NOUNS})\b(?!/)")
NOUN_AFTER = re.compile(rf"^ (?:(?!of )\w+ )?(?:{_NOUNS})\b(?!/)")


def _constant_number(node: ast.expr) -> bool:
    """A count that cannot be one: a module constant such as MAX_DEVICE_ID_BYTES."""
    return isinstance(node, ast.Name) and node.id.isupper()


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if "(s)" in node.value or PERCENT_COUNT.search(node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.JoinedStr):
            parts = node.values
            for value, after in itertools.pairwise(parts):
                if (
                    isinstance(value, ast.FormattedValue)
                    and not _constant_number(value.value)
                    and isinstance(after, ast.Constant)
                    and NOUN_AFTER.match(str(after.value))
                ):
                    found.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_message_in_pilog_prints_a_bare_count_before_a_plural_noun() -> None:
    # The test fakes mimic third-party libraries' own messages, so they are left as they are.
    files = [p for p in PILOG.rglob("*.py") if "testing" not in p.parts]
    found = [f for p in sorted(files) for f in _findings(p)]
    assert not found, "use pilog.counts.counted() for:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("n", "noun", "text"),
    [
        (0, "event", "0 events"),
        (1, "event", "1 event"),
        (2, "reading", "2 readings"),
        (1, "sealed segment", "1 sealed segment"),
        (3, "sealed segment", "3 sealed segments"),
        (2, "entry", "2 entries"),
        (2, "failed attempt", "2 failed attempts"),
    ],
)
def test_counted_inflects_only_the_last_word(n: int, noun: str, text: str) -> None:
    assert counted(n, noun) == text


def test_counted_groups_thousands_when_asked() -> None:
    assert counted(12345, "event", thousands=True) == "12,345 events"
    assert counted(1, "event", thousands=True) == "1 event"
    assert plural(1, "byte") == "byte"
