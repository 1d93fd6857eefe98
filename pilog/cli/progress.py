"""Progress of long work (verify, export, replay, repair, an index rebuild) on stderr.

A bar with bytes read of bytes to read, the rate (events/s where events are decoded, MB/s
where only frames are) and the time left. Only when stderr is a terminal: piped or redirected,
nothing is drawn at all, and the bar is gone once the work is, so the command's own output is
the same either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from pilog.counts import counted
from pilog.log.reader import Progress as ProgressFn


class _EventsColumn(ProgressColumn):
    """Events done and their rate."""

    def render(self, task: Task) -> Text:
        events = int(task.fields.get("events", 0))
        elapsed = task.finished_time if task.finished else task.elapsed
        rate = events / elapsed if elapsed else 0.0
        done = counted(events, "event", thousands=True)
        return Text(f"{done} {rate:,.0f} events/s", style="progress.data.speed")


@contextmanager
def progress(description: str, *, events: bool = True) -> Iterator[ProgressFn | None]:
    """A `Progress` callback drawing a bar on stderr, or None when stderr is not a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with _bar(console, events) as bar:
        task = bar.add_task(description, total=None, events=0)

        def update(done: int, total: int, count: int) -> None:
            bar.update(task, completed=done, total=max(total, done), events=count)

        yield update


@contextmanager
def progress_when_told(description: str, *, events: bool = True) -> Iterator[ProgressFn | None]:
    """As `progress`, for work that may not happen (an index rebuild at start): the bar
    appears on the first report short of the total and goes once done reaches the total."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    shown: list[tuple[Progress, TaskID]] = []

    def update(done: int, total: int, count: int) -> None:
        if not shown:
            if done >= total:
                return  # nothing long to show
            bar = _bar(console, events)
            bar.start()
            shown.append((bar, bar.add_task(description, total=None, events=0)))
        bar, task = shown[0]
        bar.update(task, completed=done, total=max(total, done), events=count)
        if done >= total:
            bar.stop()
            shown.clear()

    try:
        yield update
    finally:
        for bar, _ in shown:
            bar.stop()


def _bar(console: Console, events: bool) -> Progress:
    rate: ProgressColumn = _EventsColumn() if events else TransferSpeedColumn()
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        rate,
        TimeRemainingColumn(),
        console=console,
        transient=True,
        refresh_per_second=4,  # enough for a human; fewer redraws over a slow SSH link
        # Output written meanwhile goes where it would without the bar (stdout stays stdout).
        redirect_stdout=False,
        redirect_stderr=False,
    )
