"""`pilog retry [SINK]`: a sink waiting to retry sends again now, not after its backoff."""

from __future__ import annotations

from pathlib import Path

from pilog.config import Config
from pilog.control import SOCKET_NAME, ErrorAnswer, RetryAnswer, RetryRequest, query
from pilog.errors import PilogError


def retry(config: Config, sink: str | None) -> str:
    """Ask the running pilog to wake `sink` (None: every sink); the line to print."""
    data_dir = Path(config.data_dir).resolve()
    answer = query(data_dir, RetryRequest(sink), RetryAnswer)
    if answer is None:
        raise PilogError(
            f"pilog is not running for data dir {data_dir} (nothing answers on "
            f"{data_dir / SOCKET_NAME}); start it with `pilog run`, which tries every sink at once"
        )
    if isinstance(answer, ErrorAnswer):
        raise PilogError(answer.error)
    if answer.woken:
        return "sending again now: " + ", ".join(answer.woken)
    if not answer.sinks:
        return "the running pilog has no sinks"
    which = f"sink {sink} was" if sink is not None else "no sink was"
    return f"{which} not waiting to retry (sinks: {', '.join(answer.sinks)}); nothing to do"
