"""The consumers of one `pilog run`: an uploader per `[[sink]]`, a runner per `[[projection]]`.

Each runs on its own thread at its own pace: a sink that is down for days never blocks
another sink, a projection, or the drivers (they only append to the log).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pilog.config import Config, driver_dirs
from pilog.consumers.base import Consumer, ConsumerState
from pilog.datadir import EventLog

if TYPE_CHECKING:
    from pilog.uploader.loop import Uploader

log = logging.getLogger("pilog.consumer")

__all__ = ["Consumer", "ConsumerGroup", "ConsumerState"]


class ConsumerGroup:
    def __init__(self, consumers: list[Consumer], stop: threading.Event) -> None:
        self.consumers = consumers
        self._stop = stop

    @classmethod
    def open(cls, config: Config, events: EventLog) -> ConsumerGroup:
        """Build every configured consumer; ConfigError when one cannot be set up."""
        from pilog.uploader.loop import Uploader  # noqa: PLC0415
        from pilog.uploader.sink import SinkContext  # noqa: PLC0415
        from pilog.uploader.sinks import open_sink  # noqa: PLC0415

        stop = threading.Event()
        consumers: list[Consumer] = []
        try:
            context = SinkContext(config.device_id, events.epoch_hex, config.data_dir)
            search = driver_dirs(config)
            for sink in config.sink:
                consumers.append(Uploader(sink, open_sink(sink, context, search), events, stop))
            if config.projection:
                from pilog.projections.consumer import ProjectionConsumer  # noqa: PLC0415

                consumers.extend(ProjectionConsumer.open_all(config, events, stop))
        except BaseException:
            for c in consumers:
                c.finish()
            raise
        return cls(consumers, stop)

    def start(self) -> None:
        for c in self.consumers:
            c.start()

    def stop(self, timeout_s: float) -> None:
        """Ask every consumer to stop and commit; abandon those still busy after `timeout_s`."""
        self._stop.set()
        for u in self._uploaders():
            u.wake()  # a sink waiting to retry leaves its wait at once
        deadline = time.monotonic() + timeout_s
        for c in self.consumers:
            if not c.join(max(0.0, deadline - time.monotonic())):
                log.warning("%s did not stop in time; its last batch is re-sent next run", c.name)

    def states(self) -> list[dict[str, Any]]:
        return [c.state.as_dict() for c in self.consumers]

    def sink_names(self) -> list[str]:
        return [u.config.name for u in self._uploaders()]

    def retry_now(self, sink: str | None = None) -> list[str]:
        """Wake the sinks waiting to retry (the one named, or all); return the woken ones."""
        return [
            u.config.name for u in self._uploaders() if sink in (None, u.config.name) and u.wake()
        ]

    def _uploaders(self) -> list[Uploader]:
        from pilog.uploader.loop import Uploader  # noqa: PLC0415

        return [c for c in self.consumers if isinstance(c, Uploader)]
