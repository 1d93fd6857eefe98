"""Which sealed segments to delete: by size bound, by consumer cursors and by age.

Pure functions over a list of sealed segments, so the policy is testable without files.
Invariants 6 and 7 of docs/architecture.md: the log never exceeds its cap (plus one segment),
nothing is rewritten in place, and a segment no consumer has passed is deleted only when the
cap forces it under `on_full = "drop_oldest"`, which the caller reports as a gap.
"""

from __future__ import annotations

from dataclasses import dataclass

ON_FULL_DROP_OLDEST = "drop_oldest"
ON_FULL_BLOCK = "block"


@dataclass(frozen=True, slots=True)
class SealedSegment:
    """What retention needs to know of a sealed segment."""

    base_seq: int
    last_seq: int
    size: int
    sealed_ns: int  # wall clock of the last write (file mtime)


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    delete: list[SealedSegment]
    dropped: list[SealedSegment]  # deleted although some consumer had not passed them
    full: bool  # under "block": still no room after deleting what may be deleted


def plan_for_room(
    sealed: list[SealedSegment],
    room_needed: int,
    max_bytes: int,
    active_bytes: int,
    cursor_floor: int | None,
    on_full: str,
) -> RetentionPlan:
    """Delete the oldest segments until `room_needed` more bytes fit under `max_bytes`.

    `sealed` is in seq order; `cursor_floor` is the smallest consumer cursor (None when there
    are no consumers, so every segment counts as passed).
    """
    total = sum(s.size for s in sealed) + active_bytes
    delete: list[SealedSegment] = []
    dropped: list[SealedSegment] = []
    for seg in sealed:
        if total + room_needed <= max_bytes:
            break
        passed = cursor_floor is None or seg.last_seq < cursor_floor
        if not passed and on_full == ON_FULL_BLOCK:
            break
        delete.append(seg)
        if not passed:
            dropped.append(seg)
        total -= seg.size
    return RetentionPlan(delete, dropped, full=total + room_needed > max_bytes)


def plan_for_age(
    sealed: list[SealedSegment], cursor_floor: int | None, retain_ns: int, now_ns: int
) -> list[SealedSegment]:
    """The oldest segments that every consumer has passed and that are older than `retain`."""
    delete = []
    for seg in sealed:
        passed = cursor_floor is None or seg.last_seq < cursor_floor
        if not passed or now_ns - seg.sealed_ns < retain_ns:
            break
        delete.append(seg)
    return delete
