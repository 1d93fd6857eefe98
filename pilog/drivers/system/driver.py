"""CPU temperature, load, memory and disk use of the machine pilog runs on (/sys, /proc)."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import msgspec

from pilog.drivers.base import DriverContext, Payload, PollingDriver

# Junction temperatures outside this are not a CPU's: SoCs are rated -40 °C (industrial) to
# 105-125 °C Tj max. raspberrypi/firmware#133 shows reads such as -650788984 (-650788 °C).
CPU_TEMP_RANGE_C = (-40.0, 125.0)
# raspberrypi/firmware#133 and alibaba/tsar#9: the Pi's thermal zone now and then reads 85000
# for one read while the chip is far cooler. A Pi 4 does reach 85 °C (it throttles there), so
# the value is re-read once rather than rejected outright.
GLITCH_MILLI_C = 85000
# Zone types that are the CPU's: "cpu-thermal" (Raspberry Pi device tree), "bcm2835_thermal"
# (older Pi kernels), "x86_pkg_temp" (Intel package sensor), "soc_thermal", "cpu0-thermal".
CPU_ZONE_TYPE = re.compile(r"cpu|x86_pkg_temp|soc|bcm2835", re.IGNORECASE)
KIB = 1024  # /proc/meminfo's "kB" is KiB (proc(5): "in kibibytes", fs/proc/meminfo.c)


class SystemOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    thermal_zone: str = ""  # "thermal_zone1" or a zone type ("x86_pkg_temp"); "" = the CPU's
    disk_path: str = ""  # whose file system to measure; "" = the data dir


@dataclass(frozen=True, slots=True)
class ThermalZone:
    """One /sys/class/thermal/thermal_zoneN: its folder name, `type`, and `temp` file."""

    name: str
    type: str
    temp: Path


class SystemDriver(PollingDriver):
    """The host itself as a sensor: CPU temperature, load averages, memory and disk use.

    Files that do not exist here (no thermal zone in a VM, no /proc) are skipped, not errors.
    """

    name: ClassVar[str] = "system"
    description: ClassVar[str] = "CPU temperature, load, memory and data-dir disk use of this host"
    sensor_type: ClassVar[str] = "system"
    Options = SystemOptions

    def __init__(self, ctx: DriverContext) -> None:
        super().__init__(ctx)
        self._opts: SystemOptions = ctx.options
        self._zone: ThermalZone | None = None

    def open(self) -> None:
        """Choose the thermal zone; a zone named in the options must exist."""
        zones = find_thermal_zones(self.ctx.sysfs_root)
        wanted = self._opts.thermal_zone
        if wanted:
            matches = [z for z in zones if wanted in (z.name, z.type)]
            if not matches:
                found = ", ".join(f"{z.name} ({z.type})" for z in zones) or "none"
                raise FileNotFoundError(f"no thermal zone '{wanted}' (found: {found})")
            self._zone = matches[0]
        else:
            cpu = [z for z in zones if CPU_ZONE_TYPE.search(z.type)]
            self._zone = next(iter(cpu or zones), None)

    def poll(self) -> list[Payload]:
        values: Payload = {}
        self._read_cpu_temp(values)
        self._read_loadavg(values)
        self._read_meminfo(values)
        self._read_disk(values)
        return [values] if values else []

    # --- one method per source; each adds its fields or skips them --------------------------

    def _read_cpu_temp(self, values: Payload) -> None:
        if self._zone is None:
            return
        milli = self._read_int(self._zone.temp, "cpu temperature")
        if milli == GLITCH_MILLI_C:
            again = self._read_int(self._zone.temp, "cpu temperature")
            if again != GLITCH_MILLI_C:
                self.reject("cpu temperature: one-off 85000 m°C, re-read")
            milli = again
        if milli is None:
            return
        celsius = milli / 1000
        low, high = CPU_TEMP_RANGE_C
        if not low <= celsius <= high:
            self.reject(f"cpu temperature out of range: {milli} m°C")
            return
        values["cpu_temp_c"] = celsius
        values["cpu_temp_zone"] = self._zone.type or self._zone.name

    def _read_loadavg(self, values: Payload) -> None:
        text = self._read_text(self.ctx.procfs_root / "loadavg", "loadavg")
        if text is None:
            return
        # proc_loadavg(5): "0.09 0.10 0.09 1/292 20758": 1, 5, 15 min, runnable/total, last pid.
        m = re.fullmatch(r"(\d+\.\d+) (\d+\.\d+) (\d+\.\d+) (\d+)/(\d+) \d+\s*", text)
        if m is None:
            self.reject("loadavg: malformed")
            return
        values["load_1m"] = float(m.group(1))
        values["load_5m"] = float(m.group(2))
        values["load_15m"] = float(m.group(3))
        values["tasks_runnable"] = int(m.group(4))
        values["tasks_total"] = int(m.group(5))

    def _read_meminfo(self, values: Payload) -> None:
        text = self._read_text(self.ctx.procfs_root / "meminfo", "meminfo")
        if text is None:
            return
        kib = parse_meminfo(text)
        total = kib.get("MemTotal")
        if not total:
            self.reject("meminfo: no MemTotal")
            return
        available = kib.get("MemAvailable")
        if available is None:
            # Kernels before 3.14 lack MemAvailable (commit 34e431b0ae39); MemFree + Buffers +
            # Cached is what free(1) showed as available before it, an over-estimate.
            available = kib.get("MemFree", 0) + kib.get("Buffers", 0) + kib.get("Cached", 0)
        available = min(available, total)
        values["mem_total_bytes"] = total * KIB
        values["mem_available_bytes"] = available * KIB
        values["mem_used_bytes"] = (total - available) * KIB
        values["mem_used_pct"] = 100 * (total - available) / total
        if "SwapTotal" in kib and "SwapFree" in kib:
            values["swap_total_bytes"] = kib["SwapTotal"] * KIB
            values["swap_used_bytes"] = max(kib["SwapTotal"] - kib["SwapFree"], 0) * KIB

    def _read_disk(self, values: Payload) -> None:
        try:
            st = os.statvfs(self._disk_path())
        except FileNotFoundError:
            return
        except OSError as e:
            self.reject(f"disk: statvfs failed ({_errno_name(e)})")
            return
        if st.f_blocks == 0:  # a pseudo file system (procfs) has no size to report
            return
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        avail = st.f_bavail * st.f_frsize
        values["disk_total_bytes"] = st.f_blocks * st.f_frsize
        values["disk_free_bytes"] = avail
        values["disk_used_bytes"] = used
        # df(1)'s Use%: blocks reserved for root count as neither used nor available.
        values["disk_used_pct"] = 100 * used / (used + avail) if used + avail else 0.0

    def _disk_path(self) -> Path:
        if self._opts.disk_path:
            return Path(self._opts.disk_path)  # absent (not mounted yet?) means skipped
        path = self.ctx.data_dir or Path(".")
        # `pilog check` runs before the data dir is made: measure the file system it will be on.
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    # --- reading files --------------------------------------------------------------------

    def _read_text(self, path: Path, what: str) -> str | None:
        """The file's text; None when absent (skipped) or unreadable (counted)."""
        try:
            return path.read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as e:
            # The Pi's thermal zone read can fail with EINVAL (raspberrypi/linux#2136, #2530).
            self.reject(f"{what}: read failed ({_errno_name(e)})")
            return None

    def _read_int(self, path: Path, what: str) -> int | None:
        text = self._read_text(path, what)
        if text is None:
            return None
        try:
            return int(text.strip())
        except ValueError:
            self.reject(f"{what}: not an integer")
            return None


def find_thermal_zones(sysfs_root: Path) -> list[ThermalZone]:
    """The thermal zones with a `temp` file, in zone-number order."""
    zones = []
    for folder in (sysfs_root / "class" / "thermal").glob("thermal_zone*"):
        suffix = folder.name.removeprefix("thermal_zone")
        if not suffix.isdigit() or not (folder / "temp").exists():
            continue
        try:
            kind = (folder / "type").read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            kind = ""
        zones.append((int(suffix), ThermalZone(folder.name, kind, folder / "temp")))
    return [zone for _, zone in sorted(zones, key=lambda pair: pair[0])]


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as {key: value}; values in KiB ("kB"), or counts (HugePages_*)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        fields = rest.split()
        if sep and fields and fields[0].isdigit():
            out[key.strip()] = int(fields[0])
    return out


def _errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, type(e).__name__)


DRIVER = SystemDriver
