"""Counts in words: `1 event`, `2 events`, for every command's output."""

from __future__ import annotations

_IRREGULAR = {"entry": "entries", "body": "bodies"}


def counted(n: int, noun: str) -> str:
    """`n` and the noun, plural unless n is one: counted(1, "event") == "1 event"."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {_IRREGULAR.get(noun, noun + 's')}"
