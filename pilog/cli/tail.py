"""`pilog tail`: print events of a running or stopped pilog, optionally following."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import sys
import threading
from typing import TextIO

import msgspec

from pilog.config import Config
from pilog.errors import PilogError
from pilog.events import Event, Reading, event_to_json, rfc3339
from pilog.history import History

_REL_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_REL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def check_from(text: str, option: str = "--from") -> None:
    """Refuse a --from that is none of the forms `parse_from` takes, before any data is read."""
    text = text.strip()
    if not re.fullmatch(r"-?\d+", text) and not _REL_RE.match(text):
        _parse_time(text, option)


def parse_from(text: str, history: History, now_ns: int, option: str = "--from") -> int:
    """The seq to start at: SEQ, -N (the last N events), a time (RFC 3339) or an age (10m)."""
    text = text.strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"-\d+", text):
        last = history.last_seq()
        return 0 if last is None else max(last + 1 + int(text), 0)
    m = _REL_RE.match(text)
    if m:
        ts = now_ns - int(float(m.group(1)) * _REL_UNITS[m.group(2)] * 1e9)
    else:
        ts = _ns_since_epoch(_parse_time(text, option))
    seq = history.seq_at_time(ts)
    if seq is None:
        last = history.last_seq()
        return 0 if last is None else last + 1
    return seq


def pending_from(config: Config, history: History, sink: str) -> int:
    """Where the sink's cursor is: the first event it has not delivered."""
    names = [s.name for s in config.sink]
    if sink not in names:
        raise PilogError(
            f"no sink named {sink!r} in {config.source}; configured: {', '.join(names) or 'none'}"
        )
    index = history.open_index()
    cursors = {} if index is None else index.cursors()
    if index is not None:
        index.close()
    cursor = cursors.get(f"sink:{sink}")
    if cursor is None:  # it has delivered nothing yet: everything is pending
        return history.first_seq() or 0
    return cursor


def _parse_time(text: str, option: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PilogError(
            f"{option} {text!r}: expected a seq (1200), a count (-10), an age (10m) "
            "or a time (2026-11-22T03:00:00Z)"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _ns_since_epoch(t: dt.datetime) -> int:
    """Exact integer ns: `t.timestamp() * 1e9` is a float off by up to ~120 ns today."""
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


DISPLAY_DIGITS = 6  # significant digits on a terminal; --json keeps every bit


def display_value(value: object) -> str:
    """A value as a person reads it: floats rounded to DISPLAY_DIGITS, shortest repr."""
    if isinstance(value, float):
        return repr(float(f"{value:.{DISPLAY_DIGITS}g}"))
    return str(value)


def human_line(event: Event) -> str:
    """One event on one line, values at display precision."""
    body = event.body
    head = f"{rfc3339(event.ts_ns)}  #{event.seq:<8d} {event.type:<14}"
    if isinstance(body, Reading):
        vals = "  ".join(f"{k}={display_value(v)}" for k, v in body.values.items())
        return f"{head} {body.sensor:<12} {vals}"
    fields = msgspec.structs.asdict(body)
    return head + " " + "  ".join(f"{k}={v}" for k, v in fields.items() if v is not None)


def fit(line: str, width: int) -> str:
    """The line cut to `width` columns with an ellipsis, so one event never wraps."""
    line = " ".join(line.splitlines())  # a note's own newlines would break the line too
    return line if len(line) <= width else line[: max(width - 1, 0)] + "\u2026"


def tail(
    history: History,
    from_seq: int,
    *,
    follow: bool,
    as_json: bool,
    sensors: set[str],
    types: set[str],
    out: TextIO = sys.stdout,
) -> None:
    ident: tuple[str, str] | None = None  # device id and epoch, once the log exists
    stop = threading.Event()
    encoder = msgspec.json.Encoder()
    # On a terminal a line wider than the window wraps; cut it. Elsewhere keep it whole.
    width = shutil.get_terminal_size().columns if out.isatty() else 0
    try:
        for event in history.events(from_seq, follow=follow, stop=stop):
            if types and event.type not in types:
                continue
            if sensors and getattr(event.body, "sensor", None) not in sensors:
                continue
            if as_json:
                if ident is None:
                    header = history.header()  # `tail -f` may have started before the log
                    ident = (header.device_id, header.epoch_hex) if header else ("", "")
                out.write(encoder.encode(event_to_json(event, *ident)).decode() + "\n")
            elif width:
                out.write(fit(human_line(event), width) + "\n")
            else:
                out.write(human_line(event) + "\n")
            if follow:
                out.flush()
    except KeyboardInterrupt:
        stop.set()
    finally:
        out.flush()
