"""`pilog replay`: rewind consumers for recovery, while pilog runs or not.

A sink re-delivers `--from`..`--to` (receivers de-duplicate by event id, so re-delivering what
they already hold is harmless) and then resumes where it was; a projection is rebuilt from the
oldest event in the log (its state cannot be partly undone). With `pilog run` running, the
request goes through the index's `rewinds` table and the consumer picks it up within about a
second; without, the sink's cursor is set at once and projections are rebuilt right here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pilog.cli.progress import progress
from pilog.cli.tail import parse_from
from pilog.config import Config, projection_name
from pilog.counts import counted
from pilog.datadir import DataDirPaths, writer_pid
from pilog.errors import PilogError
from pilog.events import Reading, decode_event
from pilog.history import History
from pilog.index.store import IndexStore, Rewind
from pilog.log.reader import Progress

PICKUP_WAIT_S = 10.0


@dataclass
class Target:
    name: str  # "sink:NAME" | "projection:NAME"
    cursor: int | None
    rewind: Rewind | None  # None: nothing to re-deliver (sinks) / projections rebuild
    events: int = 0
    readings: int = 0
    note: str = ""


def plan(
    config: Config,
    history: History,
    *,
    from_text: str,
    to_text: str | None,
    sinks: list[str],
    projections: list[str],
    now_ns: int,
) -> list[Target]:
    """What the replay will do to each consumer; nothing is changed."""
    first, last = history.first_seq(), history.last_seq()
    if last is None or first is None:
        raise PilogError(f"the log in {config.data_dir} is empty: nothing to replay")
    from_seq = parse_from(from_text, history, now_ns)
    to_seq = last
    if to_text is not None:
        to_seq = parse_to(to_text, history, now_ns)
        if projections:
            raise PilogError("--to applies to sinks only: a projection is rebuilt whole")
    if to_seq < from_seq:
        raise PilogError(f"--to (seq {to_seq}) is before --from (seq {from_seq})")
    start = max(from_seq, first)
    cursors = _cursors(config)
    targets = []
    for name in sinks:
        key = f"sink:{name}"
        targets.append(_sink_target(key, cursors.get(key), start, to_seq, last))
        if from_seq < first:
            targets[-1].note += f" (seq {from_seq}..{first - 1} are no longer in the log)"
    for name in projections:
        key = f"projection:{name}"
        t = Target(key, cursors.get(key), Rewind(key, first, None, None, False, now_ns))
        t.events = last + 1 - first
        t.note = f"rebuilt from seq {first} ({counted(t.events, 'event')})"
        targets.append(t)
    _count_readings(history, [t for t in targets if t.name.startswith("sink:")])
    return targets


def parse_to(text: str, history: History, now_ns: int) -> int:
    if text.strip().isdigit():
        return int(text)
    # A time or an age: the events before it, so the last one is the seq just before.
    return parse_from(text, history, now_ns, option="--to") - 1


def _sink_target(name: str, cursor: int | None, start: int, to_seq: int, last: int) -> Target:
    upto = min(cursor if cursor is not None else start, to_seq + 1)
    if cursor is None or start >= upto:
        where = "has not started" if cursor is None else f"is at seq {cursor}"
        return Target(name, cursor, None, note=f"nothing to re-deliver: it {where}")
    resume = cursor if to_seq + 1 < cursor else None
    rewind = Rewind(name, start, to_seq if resume is not None else None, resume, False, 0)
    t = Target(name, cursor, rewind, events=upto - start)
    back = f", then resume at seq {resume}" if resume is not None else ""
    t.note = f"re-deliver seq {start}..{upto - 1}{back}"
    return t


def _count_readings(history: History, targets: list[Target]) -> None:
    for t in targets:
        if t.rewind is None:
            continue
        end = t.rewind.from_seq + t.events
        with progress(f"counting {t.name}") as tell:
            t.readings += _count(history, t.rewind.from_seq, end, tell)


def _count(history: History, start: int, end: int, tell: Progress | None) -> int:
    """Readings among seqs `start`..`end - 1`."""
    n = 0
    for batch in history.reader.read_batches(start, progress=tell):
        for seq, payload in batch:
            if seq >= end:
                return n
            n += isinstance(decode_event(seq, payload).body, Reading)
    return n


def _cursors(config: Config) -> dict[str, int]:
    index = History(config.data_dir).open_index()
    if index is None:
        return {}
    try:
        return index.cursors()
    finally:
        index.close()


def apply(config: Config, targets: list[Target]) -> list[str]:
    """Carry out the plan; return one line per consumer saying what happened."""
    todo = [t for t in targets if t.rewind is not None]
    if not todo:
        return []
    index_path = DataDirPaths(config.data_dir).index
    if not index_path.exists():
        raise PilogError(f"no index in {config.data_dir}: has pilog run there?")
    pid = writer_pid(History(config.data_dir).paths)
    index = IndexStore(index_path)
    try:
        if pid is not None:
            return _ask_running(index, todo, pid)
        return _apply_now(config, index, todo)
    finally:
        index.close()


def _ask_running(index: IndexStore, todo: list[Target], pid: int) -> list[str]:
    for t in todo:
        assert t.rewind is not None
        r = t.rewind
        index.request_rewind(t.name, r.from_seq, r.to_seq, r.resume_seq)
    deadline = time.monotonic() + PICKUP_WAIT_S
    waiting = {t.name for t in todo}
    while waiting and time.monotonic() < deadline:
        pending = {r.name for r in index.rewinds() if not r.applied}
        waiting &= pending
        if waiting:
            time.sleep(0.1)
    return [
        f"{t.name}: {'not yet picked up by' if t.name in waiting else 'picked up by'} "
        f"pilog run (pid {pid})"
        for t in todo
    ]


def _apply_now(config: Config, index: IndexStore, todo: list[Target]) -> list[str]:
    lines = []
    rebuild = [t.name.split(":", 1)[1] for t in todo if t.name.startswith("projection:")]
    for t in todo:
        if t.name.startswith("sink:"):
            assert t.rewind is not None
            index.apply_rewind(t.rewind)
            lines.append(f"{t.name}: cursor set to {t.rewind.from_seq}; pilog run delivers it")
    if rebuild:
        from pilog.projections import rebuild as rebuild_projections  # noqa: PLC0415

        with progress(f"rebuilding {', '.join(rebuild)}") as tell:
            done = rebuild_projections(Path(config.data_dir), config, rebuild, tell)
        for name, seq in done.items():
            index.set_cursor(f"projection:{name}", seq)
            lines.append(f"projection:{name}: rebuilt up to seq {seq - 1}")
    return lines


def select(
    config: Config, sinks: list[str], projections: list[str], all_: bool
) -> tuple[list[str], list[str]]:
    """The consumers named on the command line, checked against the config."""
    known_sinks = [s.name for s in config.sink]
    known_projections = [projection_name(p) for p in config.projection]
    if all_:
        return known_sinks, known_projections
    if not sinks and not projections:
        raise PilogError("say what to replay: --sink NAME, --projection NAME or --all")
    for what, names, known in (
        ("sink", sinks, known_sinks),
        ("projection", projections, known_projections),
    ):
        for n in names:
            if n not in known:
                raise PilogError(
                    f"no {what} named {n!r} in {config.source}; "
                    f"configured: {', '.join(known) or 'none'}"
                )
    return sinks, projections
