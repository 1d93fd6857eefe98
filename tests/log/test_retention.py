"""Retention's pure planning: which sealed segments go, by room, by cursor floor and by age."""

from __future__ import annotations

import pytest

from pilog.log.retention import (
    ON_FULL_BLOCK,
    ON_FULL_DROP_OLDEST,
    SealedSegment,
    plan_for_age,
    plan_for_room,
)

DAY_NS = 86_400 * 10**9


def segments(*sizes: int, per_segment: int = 10, sealed_ns: int = 0) -> list[SealedSegment]:
    """Consecutive sealed segments of `per_segment` records each, with the given sizes."""
    return [
        SealedSegment(i * per_segment, i * per_segment + per_segment - 1, size, sealed_ns)
        for i, size in enumerate(sizes)
    ]


# -- plan_for_room ----------------------------------------------------------------------------


def test_room_plan_deletes_nothing_when_the_new_segment_fits() -> None:
    plan = plan_for_room(segments(100, 100), 100, 400, 50, None, ON_FULL_DROP_OLDEST)
    assert plan.delete == []
    assert plan.dropped == []
    assert not plan.full


def test_room_plan_counts_the_active_segment() -> None:
    plan = plan_for_room(segments(100, 100), 100, 400, 101, None, ON_FULL_DROP_OLDEST)
    assert [s.base_seq for s in plan.delete] == [0]


def test_room_plan_deletes_oldest_first_until_the_new_segment_fits() -> None:
    sealed = segments(100, 100, 100, 100)
    plan = plan_for_room(sealed, 100, 300, 0, None, ON_FULL_DROP_OLDEST)
    assert plan.delete == sealed[:2]
    assert not plan.full


def test_room_plan_without_consumers_deletes_without_reporting_drops() -> None:
    plan = plan_for_room(segments(100, 100, 100), 100, 200, 0, None, ON_FULL_DROP_OLDEST)
    assert len(plan.delete) == 2
    assert plan.dropped == []


def test_room_plan_reports_segments_a_consumer_had_not_passed_as_dropped() -> None:
    sealed = segments(100, 100, 100)
    # The slowest consumer's next seq is 10: it has all of segment 0 and none of segment 1.
    plan = plan_for_room(sealed, 100, 200, 0, 10, ON_FULL_DROP_OLDEST)
    assert plan.delete == sealed[:2]
    assert plan.dropped == [sealed[1]]
    assert not plan.full


def test_room_plan_cursor_on_a_segments_last_seq_has_not_passed_it() -> None:
    sealed = segments(100, 100)
    plan = plan_for_room(sealed, 100, 200, 0, 9, ON_FULL_DROP_OLDEST)
    assert plan.dropped == [sealed[0]]


def test_room_plan_under_block_stops_at_the_first_segment_not_passed() -> None:
    sealed = segments(100, 100, 100)
    plan = plan_for_room(sealed, 100, 200, 0, 10, ON_FULL_BLOCK)
    assert plan.delete == [sealed[0]]
    assert plan.dropped == []
    assert plan.full


def test_room_plan_under_block_is_not_full_once_consumers_passed() -> None:
    sealed = segments(100, 100, 100)
    plan = plan_for_room(sealed, 100, 200, 0, 30, ON_FULL_BLOCK)
    assert plan.delete == sealed[:2]
    assert not plan.full


def test_room_plan_is_full_when_even_deleting_everything_does_not_fit() -> None:
    plan = plan_for_room(segments(100), 500, 400, 0, None, ON_FULL_DROP_OLDEST)
    assert len(plan.delete) == 1
    assert plan.full


@pytest.mark.parametrize("on_full", [ON_FULL_DROP_OLDEST, ON_FULL_BLOCK])
def test_room_plan_of_an_empty_log_deletes_nothing(on_full: str) -> None:
    plan = plan_for_room([], 100, 400, 0, 0, on_full)
    assert plan.delete == []
    assert not plan.full


# -- plan_for_age -----------------------------------------------------------------------------


def test_age_plan_deletes_passed_segments_older_than_retain() -> None:
    sealed = [
        SealedSegment(0, 9, 100, sealed_ns=0),
        SealedSegment(10, 19, 100, sealed_ns=1 * DAY_NS),
        SealedSegment(20, 29, 100, sealed_ns=5 * DAY_NS),
    ]
    assert plan_for_age(sealed, None, retain_ns=3 * DAY_NS, now_ns=6 * DAY_NS) == sealed[:2]


def test_age_plan_keeps_a_segment_exactly_retain_old() -> None:
    sealed = [SealedSegment(0, 9, 100, sealed_ns=DAY_NS)]
    assert plan_for_age(sealed, None, retain_ns=DAY_NS, now_ns=2 * DAY_NS - 1) == []
    assert plan_for_age(sealed, None, retain_ns=DAY_NS, now_ns=2 * DAY_NS) == sealed


def test_age_plan_keeps_old_segments_a_consumer_has_not_passed() -> None:
    sealed = segments(100, 100, 100, sealed_ns=0)
    # Next seq 15: segment 0 is handled, segment 1 is not, so it and everything after stay.
    assert plan_for_age(sealed, 15, retain_ns=DAY_NS, now_ns=10 * DAY_NS) == sealed[:1]


def test_age_plan_stops_at_the_first_young_segment() -> None:
    # Deleting is by whole segments from the oldest: never leave a hole in the seq range.
    sealed = [
        SealedSegment(0, 9, 100, sealed_ns=0),
        SealedSegment(10, 19, 100, sealed_ns=9 * DAY_NS + 1),
        SealedSegment(20, 29, 100, sealed_ns=0),
    ]
    assert plan_for_age(sealed, None, retain_ns=DAY_NS, now_ns=10 * DAY_NS) == sealed[:1]


def test_age_plan_with_a_cursor_at_zero_deletes_nothing() -> None:
    assert plan_for_age(segments(100, sealed_ns=0), 0, DAY_NS, 10 * DAY_NS) == []
