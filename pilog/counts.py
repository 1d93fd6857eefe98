"""Counts in words: `1 event`, `2 events`, for every message pilog writes."""

from __future__ import annotations

_IRREGULAR = {"entry": "entries", "body": "bodies"}


def plural(n: int, noun: str) -> str:
    """The noun as it reads after `n`: plural("event", 1) is "event", otherwise "events"."""
    if n == 1:
        return noun
    # Only the last word inflects: "sealed segment" -> "sealed segments".
    head, _, last = noun.rpartition(" ")
    word = _IRREGULAR.get(last, last + "s")
    return f"{head} {word}" if head else word


def counted(n: int, noun: str, *, thousands: bool = False) -> str:
    """`n` and the noun, plural unless n is one: counted(1, "event") == "1 event".

    `thousands` groups digits with commas, for counts shown while they grow (progress bars).
    """
    number = f"{n:,}" if thousands else str(n)
    return f"{number} {plural(n, noun)}"
