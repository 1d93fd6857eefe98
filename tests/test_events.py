"""Event encoding: round trips, compactness, schema evolution, the JSON shape of tail."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilog.events import (
    BODY_TYPES,
    ClockStep,
    DriverFailed,
    DriverStarted,
    DriverStopped,
    Gap,
    Note,
    Reading,
    Record,
    Repair,
    decode_event,
    decode_record,
    encode_record,
    event_id,
    event_to_json,
    record_ts,
    rfc3339,
)
from pilog.log.format import frame_size

BOOT = bytes(range(16))
TS = 1_795_318_549_107_129_957
REFERENCE = Reading(
    "lab-air", "bme280", {"temperature_c": 21.53, "humidity_pct": 40.12, "pressure_hpa": 1013.25}
)

BODIES = [
    REFERENCE,
    Reading("mixed", "t", {"n": 3, "ok": True, "state": "FAST", "x": -0.5}),
    Gap("log full", first_seq=10, last_seq=99),
    Gap("refused", count=7, sensor="lab-air"),
    ClockStep(3_600_000_000_000, TS, TS + 3_600_000_000_000),
    DriverStarted("lab-air", "bme280"),
    DriverStopped("lab-air", "pilog stopping"),
    DriverFailed("lab-air", "OSError: [Errno 121] Remote I/O error", 2.0),
    Repair("00000000000000000000.seg", 4096, 33, "frame checksum mismatch", "/q/x.torn"),
    Note("hello"),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_every_body_round_trips_with_seq_from_the_frame(body: object) -> None:
    payload = encode_record(Record(TS, 12345, BOOT, body))  # type: ignore[arg-type]
    event = decode_event(42, payload)
    assert event.seq == 42
    assert (event.ts_ns, event.mono_ns, event.boot_id, event.body) == (TS, 12345, BOOT, body)
    assert event.type == BODY_TYPES[type(body)]


def test_every_body_type_has_a_distinct_tag_and_name() -> None:
    tags = [t.__struct_config__.tag for t in BODY_TYPES]
    assert len(set(tags)) == len(tags)
    assert len(set(BODY_TYPES.values())) == len(BODY_TYPES)


def test_reference_reading_frame_is_compact() -> None:
    payload = encode_record(Record(TS, 965_863_020_705, BOOT, REFERENCE))
    # msgpack array: 9 (ts) + 9 (mono) + 18 (boot id) + tagged body with three named floats.
    assert len(payload) == 122
    assert frame_size(len(payload)) == 139


def test_older_records_decode_with_defaults_of_fields_added_later() -> None:
    # A Gap written before `count` and `sensor` existed: [tag, reason, first, last].
    old = msgspec.msgpack.encode([TS, 1, BOOT, [2, "log full", 5, 9]])
    event = decode_event(0, old)
    assert event.body == Gap("log full", first_seq=5, last_seq=9, count=0, sensor=None)


def test_unknown_body_tag_is_a_decode_error_not_a_silent_skip() -> None:
    bogus = msgspec.msgpack.encode([TS, 1, BOOT, [250, "x"]])
    with pytest.raises(msgspec.ValidationError):
        decode_record(bogus)
    assert record_ts(bogus) is None
    assert record_ts(b"\xc1garbage") is None


def test_event_id_and_rfc3339() -> None:
    assert event_id("dev", "ab" * 16, 7) == f"dev:{'ab' * 16}:7"
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(TS) == "2026-11-22T03:35:49.107129Z"


def test_tail_json_is_flat_with_id_seq_ts_type_and_body_fields() -> None:
    event = decode_event(5, encode_record(Record(TS, 1, BOOT, REFERENCE)))
    obj = event_to_json(event, "dev", "00" * 16)
    assert obj["id"] == f"dev:{'00' * 16}:5"
    assert obj["seq"] == 5
    assert obj["timestamp"] == "2026-11-22T03:35:49.107129Z"
    assert obj["type"] == "reading"
    assert obj["sensor"] == "lab-air"
    assert obj["payload"]["pressure_hpa"] == 1013.25
    assert obj["device_id"] == "dev"
    assert obj["boot_id"] == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    msgspec.json.encode(obj)  # serialisable as is


@given(st.lists(st.integers(min_value=-(10**18), max_value=4 * 10**18), max_size=20))
def test_rfc3339_agrees_with_datetime_for_any_sequence_of_times(times: list[int]) -> None:
    for ts in times:
        secs, ns = divmod(ts, 1_000_000_000)
        t = dt.datetime.fromtimestamp(secs, dt.UTC).replace(microsecond=ns // 1000)
        assert rfc3339(ts) == t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
