"""`pilog run`: read the sensors into the log until SIGTERM or SIGINT (`pilog.service`)."""

from __future__ import annotations

from pilog.cli.progress import progress_when_told
from pilog.config import Config
from pilog.service import run as run_service


def run(config: Config) -> None:
    """Run pilog with `config` until a stop signal; the wiring lives in `pilog.service`."""
    # A missing or damaged index is rebuilt from every segment before the sensors start.
    with progress_when_told("rebuilding index") as tell:
        run_service(config, index_progress=tell)
