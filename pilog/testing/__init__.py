"""Shipped test support for pilog and for driver and sink authors.

Fakes stand in only for what a test machine cannot have (an I2C bus, an SPI device, the wall
clock, a failing disk); each implements the real library's surface, backed by datasheet
simulators. The modules import no hardware library at import time. `sink_contract` is the
behaviour suite every sink type passes (it imports pytest), with `tcp_proxy` to make a real
server unreachable or hung under a sink.
"""

from pilog.testing.clock import FakeClock
from pilog.testing.drivers import open_driver, run_driver
from pilog.testing.faultyfs import FaultyFileSystem
from pilog.testing.pty import SerialPty
from pilog.testing.smbus import FakeSMBus
from pilog.testing.spidev import FakeSpiDev

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pilog.testing.receiver import Receiver


def __getattr__(name: str) -> object:
    # Lazy: `python -m pilog.testing.receiver` must not find the module imported already.
    if name == "Receiver":
        from pilog.testing.receiver import Receiver  # noqa: PLC0415

        return Receiver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FakeClock",
    "FakeSMBus",
    "FakeSpiDev",
    "FaultyFileSystem",
    "Receiver",
    "SerialPty",
    "open_driver",
    "run_driver",
]
