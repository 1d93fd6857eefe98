"""Reference encoders: the plain per-reading code the uploader's fast encoders must equal.

Tests compare the fast paths with these byte for byte; `tools/bench_upload.py` runs them as
the previous path (one dict per reading for http-json, every field checked and escaped one
by one for influx-line) to measure against in the same run.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from pilog.events import Event
from pilog.uploader.sink import SinkContext, readings
from pilog.uploader.sinks.influx_line.sink import (
    LineBatch,
    escape_field_key,
    escape_key,
    escape_measurement,
    field_value,
)

_encode = msgspec.json.Encoder().encode


def http_json_body(context: SinkContext, batch: Sequence[Event]) -> bytes:
    """The http-json body (before gzip), one `reading_object` dict per reading."""
    return _encode([context.reading_object(e, r) for e, r in readings(batch)])


def line_batch(batch: Sequence[Event], device_id: str) -> LineBatch:
    """The influx-line batch, each field checked and each name escaped one by one."""
    out = LineBatch()
    device_tag = f",device={escape_key(device_id)}"
    lines = []
    for event, reading in readings(batch):
        parts = []
        for key, value in reading.values.items():
            text = field_value(value)
            if text is None or not key:
                continue
            parts.append(f"{escape_field_key(key)}={text}")
        out.skipped_fields += len(reading.values) - len(parts)
        fields = ",".join(parts)
        if not fields or not reading.sensor_type:
            out.skipped_seqs.append(event.seq)
            continue
        tags = f"{device_tag},sensor={escape_key(reading.sensor)}"
        lines.append(f"{escape_measurement(reading.sensor_type)}{tags} {fields} {event.ts_ns}\n")
    out.lines = len(lines)
    out.body = "".join(lines).encode()
    return out
