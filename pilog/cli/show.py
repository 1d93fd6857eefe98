"""`pilog show latest|rollup`: read the projections of a running or stopped pilog.

Opens the lmdb environment read-only from another process than `pilog run`, which may be
committing meanwhile: each command reads one snapshot, as one commit left it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pilog.events import Value, rfc3339
from pilog.projections.base import ProjectionError
from pilog.projections.latest.projection import LatestRow, read_latest
from pilog.projections.lmdb_store import ProjectionStore, projections_path
from pilog.projections.rollup.projection import WindowRow, list_series, read_windows

SPARK = "▁▂▃▄▅▆▇█"
DEFAULT_WINDOWS = 60  # windows shown when no --since is given: the newest ones


def show_latest(
    data_dir: Path,
    *,
    as_json: bool,
    console: Console,
    name: str | None = None,
    now_ns: int | None = None,
) -> int:
    """Print the last value of every sensor field; return the exit status."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    with ProjectionStore(projections_path(data_dir), readonly=True) as store:
        name = _find(store, "latest", name)
        with store.snapshot() as snap:
            rows = read_latest(snap, name)
            next_seq = snap.cursor(name)
    if as_json:
        values = [_latest_json(r, now_ns) for r in rows]
        doc = {"projection": name, "next_seq": next_seq, "values": values}
        console.out(json.dumps(doc, indent=2), highlight=False)
        return 0
    if not rows:
        console.print(f"projection {name}: no readings yet", highlight=False)
        return 0
    table = Table("sensor", "field", "value", "age", "seq", title=f"latest ({name})")
    for r in rows:
        table.add_row(
            r.sensor, r.field, _value(r.value), _age((now_ns - r.ts_ns) / 1e9), str(r.seq)
        )
    console.print(table)
    return 0


def show_rollup(
    data_dir: Path,
    *,
    sensor: str,
    field: str,
    window_s: float | None,
    since_s: float | None,
    as_json: bool,
    console: Console,
    name: str | None = None,
    now_ns: int | None = None,
) -> int:
    """Print the windows of one sensor field, with a sparkline of their means."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    since_ns = None if since_s is None else now_ns - int(since_s * 1e9)
    with ProjectionStore(projections_path(data_dir), readonly=True) as store:
        name = _find(store, "rollup", name)
        windows = store.metas()[name].windows_s
        width = _pick_window(name, windows, window_s)
        with store.snapshot() as snap:
            _check_series(name, list_series(snap, name), sensor, field)
            rows = read_windows(snap, name, sensor, field, width, since_ns)
    if since_s is None:
        rows = rows[-DEFAULT_WINDOWS:]
    if as_json:
        doc = {
            "projection": name,
            "sensor": sensor,
            "field": field,
            "window_s": width,
            "windows": [_window_json(r) for r in rows],
        }
        console.out(json.dumps(doc, indent=2), highlight=False)
        return 0
    if not rows:
        console.print(
            f"{sensor}.{field}: no {_duration(width)} windows in that time", highlight=False
        )
        return 0
    console.print(_window_table(rows, f"{sensor}.{field} per {_duration(width)} ({name})"))
    console.print(f"mean  {sparkline([r.mean for r in rows])}", highlight=False)
    return 0


def _find(store: ProjectionStore, kind: str, name: str | None) -> str:
    """The name of the stored projection of type `kind` to show (`name`, else the first)."""
    metas = store.metas()
    names = sorted(n for n, m in metas.items() if m.type == kind)
    if name is not None:
        if name not in names:
            known = ", ".join(names) or "none"
            raise ProjectionError(f"no {kind} projection named {name} (stored: {known})")
        return name
    if not names:
        raise ProjectionError(
            f"no {kind} projection in {store.path}: is a [[projection]] with type = "
            f'"{kind}" configured and has pilog run?'
        )
    return kind if kind in names else names[0]


def _pick_window(name: str, windows: tuple[int, ...], window_s: float | None) -> int:
    if window_s is None:
        return windows[0]  # the finest: the usual question is "what happened lately"
    if window_s not in windows:
        known = ", ".join(_duration(w) for w in windows)
        raise ProjectionError(
            f"projection {name} has no {_duration(window_s)} windows (it keeps {known})"
        )
    return int(window_s)


def _check_series(name: str, series: list[tuple[str, str, int]], sensor: str, field: str) -> None:
    sensors = sorted({s for s, _, _ in series})
    if sensor not in sensors:
        known = ", ".join(sensors) or "none yet"
        raise ProjectionError(f"projection {name} has no sensor {sensor!r} (sensors: {known})")
    fields = sorted({f for s, f, _ in series if s == sensor})
    if field not in fields:
        raise ProjectionError(
            f"sensor {sensor!r} has no numeric field {field!r} in projection {name} "
            f"(fields: {', '.join(fields)})"
        )


def _window_table(rows: list[WindowRow], title: str) -> Table:
    table = Table("start (UTC)", "count", "min", "mean", "max", "last", title=title)
    for c in table.columns[1:]:
        c.justify = "right"
    for r in rows:
        table.add_row(
            _utc(r.start_ns),
            str(r.count),
            _value(r.min),
            _value(r.mean),
            _value(r.max),
            _value(r.last),
        )
    return table


def sparkline(values: list[float]) -> str:
    """One block character per value, from ▁ (the least) to █ (the greatest)."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi == lo:
        return SPARK[3] * len(values)
    top = len(SPARK) - 1
    return "".join(SPARK[round((v - lo) / (hi - lo) * top)] for v in values)


def _latest_json(r: LatestRow, now_ns: int) -> dict[str, Any]:
    return {
        "sensor": r.sensor,
        "field": r.field,
        "value": _json_value(r.value),
        "sensor_type": r.sensor_type,
        "ts": rfc3339(r.ts_ns),
        "ts_ns": r.ts_ns,
        "age_s": round((now_ns - r.ts_ns) / 1e9, 3),
        "seq": r.seq,
    }


def _window_json(r: WindowRow) -> dict[str, Any]:
    return {
        "start": rfc3339(r.start_ns),
        "start_ns": r.start_ns,
        "count": r.count,
        "min": r.min,
        "mean": r.mean,
        "max": r.max,
        "last": r.last,
        "last_ts_ns": r.last_ts_ns,
        "last_seq": r.last_seq,
    }


def _json_value(v: Value) -> Value | None:
    """JSON has no NaN or infinity: such a value is shown as null."""
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _value(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _utc(ts_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    """60 -> 1m, 3600 -> 1h, 90 -> 90s: a window length as the config spells it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _age(seconds: float) -> str:
    """A short age: 4s, 3m12s, 2h05m, 3d04h; negative (clock skew) shown as 0s."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
