"""`pilog run`: read the sensors into the log until SIGTERM or SIGINT (`pilog.service`)."""

from __future__ import annotations

from pilog.config import Config
from pilog.service import run as run_service


def run(config: Config) -> None:
    """Run pilog with `config` until a stop signal; the wiring lives in `pilog.service`."""
    run_service(config)
