"""Generic line-oriented serial sensors: a JSON object, CSV columns or a regex per line.

A JSON line's keys come from the device, so they are made field names by the one rule
(`field_names.field_name`, as the network drivers do: `PM2.5` → `pm2_5`); CSV column names and
regex group names are written in the config, so they are checked against the rule instead.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from typing import ClassVar, Literal

import msgspec

from pilog.drivers.base import DriverContext, Payload
from pilog.drivers.field_names import check_field_name, device_field_name
from pilog.drivers.serialport import BadLineError, SerialLineDriver, SerialOptions
from pilog.events import Value

# Readings are stored as msgpack, whose integers are 64-bit.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class SerialLinesOptions(SerialOptions, forbid_unknown_fields=True, frozen=True):
    """Port, baud, and how a line becomes a reading."""

    format: Literal["json", "csv", "regex"] = "json"
    columns: list[str] = msgspec.field(default_factory=list)  # csv: a name per column
    delimiter: str = ","  # csv
    pattern: str = ""  # regex: named groups become fields
    max_line_bytes: int = 4096

    def __post_init__(self) -> None:
        if self.format == "csv" and not self.columns:
            raise ValueError("format 'csv' needs `columns = [...]`")
        for i, column in enumerate(self.columns):
            check_field_name(column, f"columns[{i}]")
        if self.format == "csv" and len(self.delimiter) != 1:
            raise ValueError("`delimiter` must be one character")
        if self.format == "regex":
            try:
                groups = re.compile(self.pattern).groupindex
            except re.error as e:
                raise ValueError(f"`pattern` is not a valid regex: {e}") from None
            if not groups:
                raise ValueError("`pattern` needs named groups, e.g. (?P<temp_c>[-\\d.]+)")
            for group in groups:
                check_field_name(group, "pattern")
        if self.max_line_bytes < 1:
            raise ValueError("`max_line_bytes` must be 1 or more")


def scalar(text: str) -> Value:
    """`text` as an int or a finite float when it is one, else the stripped string."""
    text = text.strip()
    try:
        integer = int(text)
    except ValueError:
        pass
    else:
        if INT64_MIN <= integer <= INT64_MAX:
            return integer
    try:
        number = float(text)
    except ValueError:
        return text
    # "nan" and "inf" parse as floats but are not measurements; keep them as text.
    return number if math.isfinite(number) else text


def decode_json(line: str, drop: Callable[[str], None]) -> Payload:
    """A flat JSON object: numbers, strings and booleans kept, nulls dropped.

    Keys become field names by the one rule; a key that makes no name, or the name of an
    earlier key, is left out and its reason passed to `drop`.
    """
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError:
        raise BadLineError("not valid JSON") from None
    if not isinstance(obj, dict):
        raise BadLineError("JSON line is not an object")
    out: Payload = {}
    for key, value in obj.items():
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise BadLineError(f"field {key!r} is not a finite number")
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise BadLineError(f"field {key!r} is out of range of a 64-bit integer")
        if not isinstance(value, int | float | str | bool):
            raise BadLineError(f"field {key!r} is nested (objects and arrays are not values)")
        name = device_field_name(key, out, drop)
        if name is not None:
            out[name] = value
    if not out:
        raise BadLineError("JSON object has no values")
    return out


def decode_csv(line: str, columns: list[str], delimiter: str = ",") -> Payload:
    """Columns named in order; empty cells dropped, numbers converted."""
    try:
        cells = next(csv.reader([line], delimiter=delimiter, strict=True))
    except csv.Error as e:
        raise BadLineError(f"bad CSV: {e}") from None
    if len(cells) != len(columns):
        raise BadLineError(f"{len(cells)} CSV columns, expected {len(columns)}")
    return {name: scalar(cell) for name, cell in zip(columns, cells, strict=True) if cell.strip()}


def decode_regex(line: str, pattern: re.Pattern[str]) -> Payload:
    """The named groups of the first match; unmatched lines are bad."""
    m = pattern.search(line)
    if m is None:
        raise BadLineError("line does not match the pattern")
    out = {k: scalar(v) for k, v in m.groupdict().items() if v is not None and v.strip()}
    if not out:
        raise BadLineError("pattern matched no values")
    return out


class SerialLinesDriver(SerialLineDriver):
    """A sensor printing one record per line: a JSON object, CSV or text matched by a regex."""

    name: ClassVar[str] = "serial_lines"
    description: ClassVar[str] = "generic serial lines: JSON objects, CSV columns or a regex"
    sensor_type: ClassVar[str] = "serial"
    Options = SerialLinesOptions

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self._opts: SerialLinesOptions = ctx.options
        self._pattern = re.compile(self._opts.pattern)

    def _line_limit(self) -> int:
        opts: SerialLinesOptions = self.ctx.options
        return opts.max_line_bytes

    def decode_line(self, line: bytes) -> Payload | None:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise BadLineError("not UTF-8 text") from None
        if any(ch < " " and ch != "\t" for ch in text):
            raise BadLineError("control characters in line")
        if self._opts.format == "json":
            return decode_json(text, self.reject)
        if self._opts.format == "csv":
            return decode_csv(text, self._opts.columns, self._opts.delimiter)
        return decode_regex(text, self._pattern)


DRIVER = SerialLinesDriver
