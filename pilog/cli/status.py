"""`pilog status`: the state of a data dir, from its files, without taking any lock."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from pilog.cli.common import human_age, human_bytes
from pilog.config import Config, projection_name
from pilog.control import StatusRequest, query
from pilog.counts import counted
from pilog.datadir import writer_pid
from pilog.durability import durability_dict
from pilog.events import rfc3339
from pilog.history import History
from pilog.index.store import Rewind
from pilog.runstate import ConsumerView, RunSnapshot


def collect(config: Config) -> dict[str, Any]:
    """Everything status shows, as plain data (the `--json` output)."""
    history = History(config.data_dir)
    segments = history.reader.segments()
    last_seq = history.last_seq()
    sizes = [p.stat().st_size for _, p in segments if p.exists()]
    header = history.header()
    quarantine = sorted(history.paths.quarantine_dir.glob("*")) if segments else []
    status: dict[str, Any] = {
        "data_dir": str(config.data_dir),
        "config": config.source,
        "writer_pid": writer_pid(history.paths),
        "device_id": header.device_id if header else None,
        "epoch": header.epoch_hex if header else None,
        "segments": len(segments),
        "bytes": sum(sizes),
        "max_bytes": int(config.log.max_bytes),
        "first_seq": history.first_seq(),
        "last_seq": last_seq,
        # The writer writes a batch just before its fdatasync, so what a reader finds on disk
        # is durable but for the batch being synced (fsync = "never": durable against crashes
        # of the process only).
        "durable_seq": last_seq,
        "fsync": config.log.fsync,
        "quarantined_files": [q.name for q in quarantine],
        "cursors": {},
        "repairs": 0,
        "gaps": 0,
        "dead_letters": 0,
        "drivers": None,  # live state: only while pilog run answers on its control socket
        "writer": None,
        "clock": None,
        "incidents": [],
        "index": "missing",
    }
    cursor_rows: dict[str, tuple[int, int]] = {}
    rewinds: dict[str, Rewind] = {}
    index = history.open_index()
    if index is not None:
        try:
            counts = index.incident_counts()
            status["index"] = "ok"
            status["cursors"] = index.cursors()
            status["repairs"] = counts.get("repair", 0)
            status["gaps"] = counts.get("gap", 0)
            status["incidents"] = [
                {
                    "seq": i.seq,
                    "kind": i.kind,
                    "ts": rfc3339(i.ts_ns),
                    "detail": json.loads(i.detail),
                }
                for i in index.incidents(limit=10)
            ]
            status["dead_letters"] = counts.get("dead_letter", 0)
            cursor_rows = index.cursor_rows()
            rewinds = {r.name: r for r in index.rewinds()}
        except Exception as e:  # a damaged index is reported, and rebuilt by the writer
            status["index"] = f"unreadable ({e})"
        finally:
            index.close()
    answer = query(config.data_dir, StatusRequest(), RunSnapshot) if status["writer_pid"] else None
    live = answer if isinstance(answer, RunSnapshot) else None
    # The running process's own window when it answers: its config is the one in force.
    status["durability"] = durability_dict(config) | {"of": "this config (pilog not running)"}
    if live is not None:
        status["durability"] = msgspec.to_builtins(live.durability) | {"of": "the running pilog"}
        status["durable_seq"] = live.writer.durable_seq
        status["writer"] = msgspec.to_builtins(live.writer)
        status["drivers"] = msgspec.to_builtins(live.drivers)
        status["clock"] = msgspec.to_builtins(live.clock)
    status["consumers"] = _consumers(
        config, history, last_seq, cursor_rows, rewinds, live.consumers if live else []
    )
    return status


def _consumers(
    config: Config,
    history: History,
    last_seq: int | None,
    cursor_rows: dict[str, tuple[int, int]],
    rewinds: dict[str, Rewind],
    live: list[ConsumerView],
) -> list[dict[str, Any]]:
    """Each configured or remembered consumer: cursor, lag in events and age, live state.

    The lag is the running pilog's when it answers (from what the consumer delivered, committed
    or not); else from the committed cursor, or from the oldest event for a consumer that never
    committed one (it starts there)."""
    names = [f"sink:{s.name}" for s in config.sink]
    names += [f"projection:{projection_name(p)}" for p in config.projection]
    names += sorted(n for n in cursor_rows if n not in names)
    by_name = {c.name: c for c in live}
    now = time.time_ns()
    first_seq = history.first_seq()
    out = []
    for name in names:
        seq, updated_ns = cursor_rows.get(name, (None, None))
        entry: dict[str, Any] = {"name": name, "next_seq": seq, "updated_ns": updated_ns}
        view = by_name.get(name)
        if view is not None:
            entry["lag_events"] = view.lag_events
            entry["lag_s"] = (now - view.oldest_ns) / 1e9 if view.oldest_ns else 0.0
        elif last_seq is not None:
            start = seq if seq is not None else first_seq
            if start is not None:
                entry["lag_events"] = max(0, last_seq + 1 - start)
                oldest = next(iter(history.events(start)), None) if start <= last_seq else None
                entry["lag_s"] = (now - oldest.ts_ns) / 1e9 if oldest is not None else 0.0
        if name in rewinds:
            entry["replay"] = dataclasses.asdict(rewinds[name])
        if view is not None:
            entry["live"] = msgspec.to_builtins(view)
        out.append(entry)
    return out


def render(status: dict[str, Any], console: Console) -> None:
    running = f"running (pid {status['writer_pid']})" if status["writer_pid"] else "not running"
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    used = status["bytes"] / status["max_bytes"] * 100 if status["max_bytes"] else 0
    rows = [
        ("data dir", status["data_dir"]),
        ("writer", running),
        ("device id", status["device_id"] or "-"),
        ("epoch", status["epoch"] or "-"),
        ("segments", str(status["segments"])),
        (
            "log size",
            f"{human_bytes(status['bytes'])} of {human_bytes(status['max_bytes'])} ({used:.1f}%)",
        ),
        (
            "seqs",
            f"{status['first_seq']} .. {status['last_seq']}"
            if status["last_seq"] is not None
            else "empty",
        ),
        ("durable seq", str(status["durable_seq"]) if status["durable_seq"] is not None else "-"),
        ("durability", _durability_line(status["durability"])),
        ("repairs", str(status["repairs"])),
        ("gaps", str(status["gaps"])),
        ("quarantine", counted(len(status["quarantined_files"]), "file")),
        ("index", status["index"]),
    ]
    rows.append(("dead letters", str(status["dead_letters"])))
    if status["writer"]:
        rows.append(("writer state", _writer_line(status["writer"])))
    if status["clock"]:
        rows.append(("clock", _clock_line(status["clock"])))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if status["consumers"]:
        console.print(_consumer_table(status["consumers"]))
    if status["drivers"]:
        console.print(_driver_table(status["drivers"]))
    elif not status["writer_pid"]:
        console.print("drivers: pilog is not running (health is live state)")
    if status["incidents"]:
        console.print(_incident_table(status["incidents"]), highlight=False)


INCIDENT_KINDS = {"gap": "gap", "repair": "repair", "dead_letter": "dead letter"}


def _incident_table(incidents: list[dict[str, Any]]) -> Table:
    table = Table(title="recent incidents (newest first)", title_justify="left")
    for col in ("time", "seq", "kind", "detail"):
        table.add_column(col)
    for inc in incidents:
        table.add_row(
            inc["ts"],
            str(inc["seq"]),
            INCIDENT_KINDS.get(inc["kind"], inc["kind"]),
            _detail_cell(inc["detail"]),
        )
    return table


def _detail_cell(detail: object) -> str:
    """`reason: disk full, count: 3`: the fields that say something, in words, not a dict."""
    if not isinstance(detail, dict):
        return str(detail)
    parts = []
    for key, value in detail.items():
        if value is None or value in ("", {}, []):
            continue
        text = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value
        parts.append(f"{key.replace('_', ' ')}: {text}")
    return "; ".join(parts) or "-"


def _durability_line(d: dict[str, Any]) -> str:
    line = str(d["summary"])
    if d.get("of") != "the running pilog":
        line = f"(pilog not running; with this config) {line}"
    return f"{line}\n[yellow]{d['advice']}[/yellow]" if d.get("advice") else line


def _writer_line(w: dict[str, Any]) -> str:
    if w.get("io_error"):
        return f"[red]disk error, retrying:[/red] {w['io_error']}"
    if w.get("refusing"):
        return "[red]refusing appends[/red] (log full under on_full = block, or disk stalled)"
    return f"ok, {w['backlog_fraction'] * 100:.0f}% of the write backlog used"


def _clock_line(clock: dict[str, Any]) -> str:
    if not clock["steps"]:
        return "no step since start"
    return (
        f"{counted(clock['steps'], 'step')} since start, last {clock['last_step_ns'] / 1e9:+.3f}s"
    )


def _consumer_table(consumers: list[dict[str, Any]]) -> Table:
    table = Table(title="consumers", title_justify="left")
    table.add_column("consumer", no_wrap=True)
    for col in ("next seq", "lag", "state", "last ok", "last error"):
        table.add_column(col)
    now = time.time_ns()
    for c in consumers:
        live = c.get("live") or {}
        lag = "-"
        if "lag_events" in c:
            lag = f"{counted(c['lag_events'], 'event')}, {human_age(c['lag_s'])}"
        last_ok = live.get("last_ok_ns")
        table.add_row(
            c["name"],
            "-" if c["next_seq"] is None else str(c["next_seq"]),
            lag,
            _state_cell(c, live, now),
            human_age((now - last_ok) / 1e9) + " ago" if last_ok else "-",
            _error_cell(live, now),
        )
    return table


def _ago(ns: int, now: int) -> str:
    return f"{human_age((now - ns) / 1e9)} ago"


def _state_cell(c: dict[str, Any], live: dict[str, Any], now: int) -> str:
    raw = str(live.get("state", "not running" if not live else "?"))
    state = raw
    reason = live.get("paused_reason")
    if raw == "paused" and reason:
        state = f"[red]paused[/red]: {PAUSED_BECAUSE.get(reason, reason)}"
    if live.get("attempts"):
        state += f" (attempt {live['attempts']}"
        if live.get("failing_since_ns"):
            state += f", failing for {human_age((now - live['failing_since_ns']) / 1e9)}"
        state += ")"
    retry_at = live.get("retry_at_ns")
    if retry_at and raw in ("retrying", "paused"):
        state += f", next try in {human_age(max(0, retry_at - now) / 1e9)} or on pilog retry"
    recovered = live.get("recovered_ns")
    if recovered and not live.get("attempts"):
        state += f", delivering again since {rfc3339(recovered)} ({_ago(recovered, now)})"
    if "replay" in c:
        state += f", replaying from {c['replay']['from_seq']}"
    return state


def _error_cell(live: dict[str, Any], now: int) -> str:
    error = live.get("last_error")
    if not error:
        return "-"
    at = live.get("last_error_ns")
    text = f"{_ago(at, now)}: {error}" if at else str(error)
    recovered = live.get("recovered_ns")
    if recovered and at and recovered > at and not live.get("attempts"):
        text = f"(before recovery) {text}"
    return text


PAUSED_BECAUSE = {
    "endpoint": "the endpoint refuses every reading (see last error; fix the url)",
    "credentials": "the receiver refuses the credentials",
}


def _driver_table(drivers: list[dict[str, Any]]) -> Table:
    table = Table(title="drivers", title_justify="left")
    for col in ("sensor", "driver", "state", "readings", "failures", "dropped", "last error"):
        table.add_column(col)
    for d in drivers:
        table.add_row(
            d["sensor"],
            d["driver"],
            d["state"],
            str(d["readings"]),
            str(d["failures"]),
            str(d["dropped"]),
            d["last_error"] or "-",
        )
    return table
