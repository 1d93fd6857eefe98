"""A reading too large for a log frame is dropped alone, as a Gap; its driver goes on."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from test_runtime import config_for, run_until, sensor

from pilog.drivers import Payload, PollingDriver
from pilog.events import DriverFailed, Gap, Reading
from pilog.log.format import MAX_PAYLOAD_BYTES
from pilog.testing.clock import FakeClock


class Bulky(PollingDriver):
    """Every third poll carries one reading no frame can hold beside two that fit."""

    name: ClassVar[str] = "bulky"
    polls = 0

    def poll(self) -> list[Payload]:
        self.polls += 1
        small = {"n": self.polls}
        if self.polls % 3:
            return [small]
        return [small, {"blob": "x" * (MAX_PAYLOAD_BYTES + 1)}, {"n": -self.polls}]


def test_a_reading_over_the_frame_limit_is_a_gap_and_the_others_are_kept(
    tmp_path: Path,
) -> None:
    config = config_for(
        tmp_path,
        "\n".join([sensor("bulky", f"{__name__}:Bulky", 1), sensor("good", "synthetic", 1)]),
    )

    events, rt = run_until(
        config,
        FakeClock(),
        lambda rt: "bulky" in rt.health and rt.health["bulky"].readings >= 20,
    )

    assert not [e for e in events if isinstance(e.body, DriverFailed)]
    gaps = [e.body for e in events if isinstance(e.body, Gap) and e.body.sensor == "bulky"]
    assert gaps, "the dropped reading is recorded"
    assert all(g.count == 1 and "too large" in g.reason for g in gaps)
    kept = [e.body.values for e in events if isinstance(e.body, Reading)]
    bulky = [v["n"] for v in kept if "n" in v]
    assert not [v for v in kept if "blob" in v]
    # Beside each dropped reading, the two that fit are in the log.
    assert len([n for n in bulky if isinstance(n, int) and n < 0]) == len(gaps)
    assert [e.seq for e in events] == list(range(len(events)))
    assert rt.health["good"].readings > 0
