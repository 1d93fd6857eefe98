"""Events: what the log's payloads mean.

A payload is a msgspec MessagePack array `[ts_ns, mono_ns, boot_id, body]`; the body is a
tagged array whose first element is an integer tag. The seq is not in the payload: the frame
carries it, and `decode_event` joins the two.

Schema evolution: a body or the envelope gains fields only at its end, each with a default,
so older records decode with the default and older readers ignore nothing they need. A tag is
never reused. Field names in `Reading.values` carry their unit (`temperature_c`).

Event structs are `gc=False`: they hold only plain data, so they cannot form reference cycles,
and replaying millions of them must not wake the cycle collector.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

Value = float | int | str | bool


class Reading(msgspec.Struct, array_like=True, gc=False, tag=1, frozen=True):
    """One sample of one sensor."""

    sensor: str
    sensor_type: str
    values: dict[str, Value]


class Gap(msgspec.Struct, array_like=True, gc=False, tag=2, frozen=True):
    """Events that were lost: deleted seqs `first_seq..last_seq`, or `count` never logged."""

    reason: str
    first_seq: int | None = None
    last_seq: int | None = None
    count: int = 0
    sensor: str | None = None


class ClockStep(msgspec.Struct, array_like=True, gc=False, tag=3, frozen=True):
    """The wall clock jumped by `step_ns` relative to the monotonic clock (NTP sync, RTC)."""

    step_ns: int
    wall_before_ns: int
    wall_after_ns: int


class DriverStarted(msgspec.Struct, array_like=True, gc=False, tag=4, frozen=True):
    sensor: str
    driver: str


class DriverStopped(msgspec.Struct, array_like=True, gc=False, tag=5, frozen=True):
    sensor: str
    reason: str


class DriverFailed(msgspec.Struct, array_like=True, gc=False, tag=6, frozen=True):
    sensor: str
    error: str
    restart_in_s: float


class Repair(msgspec.Struct, array_like=True, gc=False, tag=7, frozen=True):
    """The log's torn tail was cut when it was opened (`quarantined` keeps the bytes)."""

    segment: str
    offset: int
    bytes_cut: int
    reason: str
    quarantined: str | None = None


class Note(msgspec.Struct, array_like=True, gc=False, tag=8, frozen=True):
    text: str


class DeadLetter(msgspec.Struct, array_like=True, gc=False, tag=9, frozen=True):
    """A sink refused the reading `seq` for good (a 4xx other than 401/403/408/413/425/429).

    The reading stays in the log; the refusal is also kept in `deadletter/<sink>.ndjson`.
    """

    sink: str
    seq: int
    status: int  # the HTTP status, 0 when the sink is not HTTP
    reason: str


Body = (
    Reading
    | Gap
    | ClockStep
    | DriverStarted
    | DriverStopped
    | DriverFailed
    | Repair
    | Note
    | DeadLetter
)

BODY_TYPES: dict[type[Any], str] = {
    Reading: "reading",
    Gap: "gap",
    ClockStep: "clock_step",
    DriverStarted: "driver_started",
    DriverStopped: "driver_stopped",
    DriverFailed: "driver_failed",
    Repair: "repair",
    Note: "note",
    DeadLetter: "dead_letter",
}
TYPE_NAMES = frozenset(BODY_TYPES.values())


class Record(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """The stored envelope: everything of an event but its seq."""

    ts_ns: int
    mono_ns: int
    boot_id: bytes
    body: Body


class Event(msgspec.Struct, gc=False, frozen=True):
    """An event as read back: its seq and its record."""

    seq: int
    ts_ns: int
    mono_ns: int
    boot_id: bytes
    body: Body

    @property
    def type(self) -> str:
        return BODY_TYPES[type(self.body)]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


encode_record: Callable[[Record], bytes] = _encoder.encode  # bound: on every append


def decode_record(payload: bytes | memoryview) -> Record:
    """Decode a payload; raises msgspec.DecodeError (or ValidationError) when it is not one."""
    return _decoder.decode(payload)


def decode_event(seq: int, payload: bytes | memoryview) -> Event:
    r = _decoder.decode(payload)
    return Event(seq, r.ts_ns, r.mono_ns, r.boot_id, r.body)


def record_ts(payload: bytes | memoryview) -> int | None:
    """Wall time of a payload, for the segment catalogue; None if it does not decode."""
    try:
        return _decoder.decode(payload).ts_ns
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def event_id(device_id: str, epoch_hex: str, seq: int) -> str:
    """The event's id, stable forever (invariant 2)."""
    return f"{device_id}:{epoch_hex}:{seq}"


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")  # the last second formatted


def rfc3339(ts_ns: int) -> str:
    """UTC wall time with microseconds, e.g. 2026-11-22T03:20:35.123456Z."""
    global _second  # noqa: PLW0603 - a one-entry cache: uploads format runs of one second
    secs, ns = divmod(ts_ns, 1_000_000_000)
    cached_secs, prefix = _second
    if secs != cached_secs:
        prefix = dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (secs, prefix)  # one tuple, swapped whole: safe between threads
    return f"{prefix}.{ns // 1000:06d}Z"


def event_to_json(event: Event, device_id: str, epoch_hex: str) -> dict[str, Any]:
    """The flat JSON object of an event (`pilog tail --json`, dead letters).

    A reading has the `http-json` wire contract's keys (`id`, `device_id`, `seq`,
    `timestamp`, `sensor`, `sensor_type`, `payload`), as `pilog export` writes it; every event
    adds `ts_ns`, `mono_ns`, `boot_id` and `type`; other events carry their body's fields."""
    obj: dict[str, Any] = {
        "id": event_id(device_id, epoch_hex, event.seq),
        "device_id": device_id,
        "seq": event.seq,
        "timestamp": rfc3339(event.ts_ns),
        "ts_ns": event.ts_ns,
        "mono_ns": event.mono_ns,
        "boot_id": str(uuid.UUID(bytes=event.boot_id)) if len(event.boot_id) == 16 else "",
        "type": event.type,
    }
    body = event.body
    if isinstance(body, Reading):
        obj.update(sensor=body.sensor, sensor_type=body.sensor_type, payload=body.values)
    else:
        obj.update(msgspec.structs.asdict(body))
    return obj
