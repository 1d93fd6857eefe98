"""`pilog status`: the state of a data dir, from its files, without taking any lock."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from pilog.cli.common import human_bytes
from pilog.config import Config
from pilog.datadir import writer_pid
from pilog.events import rfc3339
from pilog.history import History


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
        "incidents": [],
        "index": "missing",
    }
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
        except Exception as e:  # a damaged index is reported, and rebuilt by the writer
            status["index"] = f"unreadable ({e})"
        finally:
            index.close()
    return status


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
        ("fsync", status["fsync"]),
        ("repairs", str(status["repairs"])),
        ("gaps", str(status["gaps"])),
        ("quarantine", f"{len(status['quarantined_files'])} file(s)"),
        ("index", status["index"]),
    ]
    for name, seq in sorted(status["cursors"].items()):
        lag = (status["last_seq"] + 1 - seq) if status["last_seq"] is not None else 0
        rows.append((f"cursor {name}", f"next seq {seq} (lag {lag} events)"))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for inc in status["incidents"]:
        console.print(f"  {inc['ts']}  #{inc['seq']}  {inc['kind']}: {inc['detail']}")
