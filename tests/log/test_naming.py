"""On-disk names: segment files sort in seq order and parse back; other files are ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilog.log import naming


def test_segment_name_is_base_seq_zero_padded_to_twenty_digits() -> None:
    assert naming.segment_name(0) == "00000000000000000000.seg"
    assert naming.segment_name(1234) == "00000000000000001234.seg"


@given(st.integers(min_value=0, max_value=10**20 - 1))
def test_segment_name_parses_back_to_its_base_seq(base: int) -> None:
    assert naming.parse_segment_name(naming.segment_name(base)) == base


@given(st.lists(st.integers(min_value=0, max_value=10**20 - 1), min_size=2, unique=True))
def test_segment_name_order_is_seq_order(bases: list[int]) -> None:
    assert sorted(bases, key=naming.segment_name) == sorted(bases)


def test_negative_base_seq_has_no_name() -> None:
    with pytest.raises(ValueError, match="negative"):
        naming.segment_name(-1)


@pytest.mark.parametrize(
    "name",
    [
        "0000000000000000001.seg",  # 19 digits
        "000000000000000000001.seg",  # 21 digits
        "00000000000000000001.seg.torn",
        "00000000000000000001.tmp",
        "x0000000000000000001.seg",
        "LOCK",
        "",
    ],
)
def test_other_names_are_not_segments(name: str) -> None:
    assert naming.parse_segment_name(name) is None


def test_list_segments_returns_segments_in_seq_order_and_ignores_other_files(
    tmp_path: Path,
) -> None:
    for base in (100, 7, 2**40):
        (tmp_path / naming.segment_name(base)).write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    (tmp_path / naming.quarantine_name(naming.segment_name(7), 80, 1)).write_bytes(b"")

    found = naming.list_segments(tmp_path)

    assert found == [(b, tmp_path / naming.segment_name(b)) for b in (7, 100, 2**40)]


def test_list_segments_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert naming.list_segments(tmp_path / "nope") == []


def test_quarantine_name_names_segment_offset_and_time() -> None:
    name = naming.quarantine_name("00000000000000000005.seg", 123, 456)
    assert name == "00000000000000000005.seg.123.456.torn"
    assert naming.parse_segment_name(name) is None
