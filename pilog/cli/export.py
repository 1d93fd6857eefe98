"""`pilog export`: readings of a seq or time range as NDJSON or CSV, for spreadsheets and
backfills.

NDJSON objects are those of the `http-json` wire contract (`id`, `device_id`, `seq`, `sensor`,
`sensor_type`, `payload`, `timestamp`). CSV is wide: one row per reading, one column per field
name found in the range (read twice: once for the columns, once for the rows), empty where a
reading lacks the field.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import TextIO

import msgspec

from pilog.cli.progress import progress
from pilog.events import Event, Reading, decode_event, event_id, rfc3339
from pilog.history import History
from pilog.log.reader import Progress
from pilog.uploader.sink import SinkContext

CSV_FIXED = ["timestamp", "seq", "id", "sensor", "sensor_type"]


def readings(
    history: History,
    from_seq: int,
    to_seq: int | None,
    sensors: set[str],
    tell: Progress | None = None,
) -> Iterator[tuple[Event, Reading]]:
    """Readings with `from_seq <= seq <= to_seq` of the sensors asked for (all if empty)."""
    for batch in history.reader.read_batches(from_seq, progress=tell):
        for seq, payload in batch:
            if to_seq is not None and seq > to_seq:
                return
            e = decode_event(seq, payload)
            body = e.body
            if isinstance(body, Reading) and (not sensors or body.sensor in sensors):
                yield e, body


def _progress(what: str, out: TextIO) -> AbstractContextManager[Progress | None]:
    # Written to the terminal, the rows are the progress; a bar would tear through them.
    return nullcontext() if out.isatty() else progress(what)


def export(
    history: History,
    from_seq: int,
    to_seq: int | None,
    *,
    fmt: str,
    sensors: set[str],
    out: TextIO = sys.stdout,
) -> int:
    """Write the readings; return how many."""
    header = history.header()
    if header is None:
        return 0
    device, epoch = header.device_id, header.epoch_hex
    n = 0
    if fmt == "ndjson":
        encode = msgspec.json.Encoder().encode
        context = SinkContext(device, epoch, history.paths.root)
        with _progress("exporting", out) as tell:
            for e, r in readings(history, from_seq, to_seq, sensors, tell):
                out.write(encode(context.reading_object(e, r)).decode() + "\n")
                n += 1
        return n
    with _progress("finding columns", out) as tell:
        found = readings(history, from_seq, to_seq, sensors, tell)
        fields = sorted({k for _, r in found for k in r.values})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIXED + fields)
    with _progress("exporting", out) as tell:
        for e, r in readings(history, from_seq, to_seq, sensors, tell):
            row = [rfc3339(e.ts_ns), e.seq, event_id(device, epoch, e.seq), r.sensor, r.sensor_type]
            writer.writerow(row + [_cell(r.values.get(f)) for f in fields])
            n += 1
    return n


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
