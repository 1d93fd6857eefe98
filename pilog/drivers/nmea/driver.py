"""NMEA 0183 GPS receivers: GGA, RMC, VTG and GSA sentences, checksums verified.

Sentence layouts and the checksum rule follow gpsd's "NMEA Revealed" (www/NMEA.adoc): the
checksum is the XOR of every character between '$' and '*', sent as two hex digits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from pilog.drivers.base import Payload
from pilog.drivers.serialport import BadLineError, SerialLineDriver, SerialOptions, ascii_text

KMH_PER_KNOT = 1.852
HEX_DIGITS = frozenset("0123456789ABCDEFabcdef")


class NmeaOptions(SerialOptions, forbid_unknown_fields=True, frozen=True):
    """A GPS on a serial port (most modules, e.g. MT3339 and u-blox, default to 9600 baud)."""


def decode_sentence(line: str) -> Payload | None:
    """The reading in one NMEA sentence; None for a valid sentence of another type.

    Raises BadLineError (the reason) for a line that is not a whole, checksummed sentence.
    """
    talker, kind, fields = _split_checked(line)
    decoder = _DECODERS.get(kind)
    if decoder is None or talker.startswith("P"):
        return None  # GSV, GLL, ZDA, proprietary: valid, but not read here
    if len(fields) < _MIN_FIELDS[kind]:
        raise BadLineError(f"truncated {kind} sentence")
    # Optional trailing fields may be left off altogether: read them as empty, as gpsd does
    # (nmea_parse points every field past the last at an empty string).
    fields += [""] * (_ALL_FIELDS[kind] - len(fields))
    try:
        values = decoder(fields)
    except ValueError as e:
        raise BadLineError(f"bad {kind} field: {e}") from None
    return {"sentence": kind, "talker": talker, **values}


def _split_checked(line: str) -> tuple[str, str, list[str]]:
    """Talker, sentence type and data fields of a sentence whose checksum matches."""
    if not line.startswith("$"):
        raise BadLineError("no '$' at the start of the sentence")
    if "$" in line[1:]:
        raise BadLineError("two sentences run together")
    star = line.find("*")
    if star < 0:
        raise BadLineError("missing checksum")
    sent = line[star + 1 :]
    if len(sent) != 2 or not set(sent) <= HEX_DIGITS:
        raise BadLineError("malformed checksum field")
    body = line[1:star]
    calc = 0
    for ch in body.encode("ascii"):
        calc ^= ch
    if calc != int(sent, 16):
        raise BadLineError("checksum mismatch")
    address, *fields = body.split(",")
    if address.startswith("P"):
        return "P", address[1:], fields  # proprietary: "P" + maker + type, no talker
    if len(address) != 5 or not address.isalnum():
        raise BadLineError("malformed sentence address")
    return address[:2], address[2:], fields


# -- field parsers: '' means "not reported" and yields None --------------------------------


def _float(text: str) -> float | None:
    return float(text) if text else None


def _int(text: str) -> int | None:
    return int(text) if text else None


def _coordinate(value: str, hemi: str, degree_digits: int, limit: float) -> float | None:
    """ddmm.mmmm (lat) or dddmm.mmmm (lon) and N/S/E/W as signed degrees."""
    if not value and not hemi:
        return None
    if hemi not in ("NS" if degree_digits == 2 else "EW") or len(hemi) != 1:
        raise ValueError(f"hemisphere {hemi!r}")
    if "." in value and value.index(".") != degree_digits + 2:
        raise ValueError(f"coordinate {value!r}")
    degrees, minutes = int(value[:degree_digits]), float(value[degree_digits:])
    if minutes >= 60:
        raise ValueError(f"minutes in {value!r}")
    result = degrees + minutes / 60
    if result > limit:
        raise ValueError(f"coordinate {value!r} out of range")
    return -result if hemi in "SW" else result


def _date(ddmmyy: str) -> str | None:
    """ddmmyy as ISO yyyy-mm-dd; two-digit years pivot at 80, as gpsd does."""
    if not ddmmyy:
        return None
    if len(ddmmyy) != 6 or not ddmmyy.isdigit():
        raise ValueError(f"date {ddmmyy!r}")
    day, month, yy = int(ddmmyy[:2]), int(ddmmyy[2:4]), int(ddmmyy[4:])
    if not (1 <= day <= 31 and 1 <= month <= 12):
        raise ValueError(f"date {ddmmyy!r}")
    return f"{(1900 if yy >= 80 else 2000) + yy:04d}-{month:02d}-{day:02d}"


def _optional_date(ddmmyy: str) -> str | None:
    """The date, or None when it is garbage: the position beside it is still good.

    gpsd's processRMC likewise sets no time when merge_ddmmyy fails yet keeps lat/lon.
    """
    try:
        return _date(ddmmyy)
    except ValueError:
        return None


def _present(**values: float | int | str | bool | None) -> Payload:
    """The values that were reported (a reading never holds None)."""
    return {k: v for k, v in values.items() if v is not None}


# -- sentences -----------------------------------------------------------------------------


def _gga(f: list[str]) -> Payload:
    """Fix data: time, position, quality (0 = none, 1 = GPS, 2 = DGPS, ...), sats, altitude."""
    quality = int(f[5]) if f[5] else 0
    if not 0 <= quality <= 8:
        raise ValueError(f"fix quality {quality}")
    fix = quality > 0
    # Without a fix receivers report placeholders (0000.0000,N): not a position.
    return _present(
        time_utc=f[0] or None,
        fix=fix,
        fix_quality=quality,
        sats_used=_int(f[6]),
        hdop=_float(f[7]),
        lat_deg=_coordinate(f[1], f[2], 2, 90) if fix else None,
        lon_deg=_coordinate(f[3], f[4], 3, 180) if fix else None,
        alt_m=_float(f[8]) if fix else None,
        geoid_sep_m=_float(f[10]) if fix else None,
    )


def _rmc(f: list[str]) -> Payload:
    """Recommended minimum: time, status A/V, position, speed over ground, course, date."""
    # gpsd's processRMC: A autonomous and D differential are fixes; V or an empty status is none.
    if f[1] not in ("A", "D", "V", ""):
        raise ValueError(f"status {f[1]!r}")
    fix = f[1] in ("A", "D")
    knots = _float(f[6])
    return _present(
        time_utc=f[0] or None,
        date=_optional_date(f[8]),
        fix=fix,
        lat_deg=_coordinate(f[2], f[3], 2, 90) if fix else None,
        lon_deg=_coordinate(f[4], f[5], 3, 180) if fix else None,
        speed_kmh=knots * KMH_PER_KNOT if fix and knots is not None else None,
        course_deg=_float(f[7]) if fix else None,
        mode=f[11] or None,
    )


def _vtg(f: list[str]) -> Payload:
    """Track and ground speed; the km/h field is used, knots converted when it is empty."""
    kmh = _float(f[6])
    if kmh is None and (knots := _float(f[4])) is not None:
        kmh = knots * KMH_PER_KNOT
    return _present(
        course_deg=_float(f[0]),
        speed_kmh=kmh,
        mode=f[8] or None,
    )


def _gsa(f: list[str]) -> Payload:
    """DOP and active satellites: fix type 1 = none, 2 = 2D, 3 = 3D."""
    fix_type = int(f[1]) if f[1] else 1
    if fix_type not in (1, 2, 3):
        raise ValueError(f"fix type {fix_type}")
    prns = [int(p) for p in f[2:14] if p]
    return _present(
        fix=fix_type >= 2,
        fix_type=fix_type,
        sats_used=len(prns),
        pdop=_float(f[14]),
        hdop=_float(f[15]),
        vdop=_float(f[16]),
    )


_DECODERS: dict[str, Callable[[list[str]], Payload]] = {
    "GGA": _gga,
    "RMC": _rmc,
    "VTG": _vtg,
    "GSA": _gsa,
}
# Data fields a sentence must carry, as gpsd's nmea_phrase table has them (its `nf` counts the
# address too): GGA up to the geoid separation (DGPS age and station are optional), RMC up to
# the speed, VTG up to the magnetic course, GSA up to VDOP.
_MIN_FIELDS = {"GGA": 12, "RMC": 7, "VTG": 4, "GSA": 17}
# Data fields read when present (NMEA 2.3: RMC and VTG end in a mode field).
_ALL_FIELDS = {"GGA": 14, "RMC": 12, "VTG": 9, "GSA": 17}


class NmeaDriver(SerialLineDriver):
    """A GPS receiver speaking NMEA 0183: one reading per GGA, RMC, VTG or GSA sentence."""

    name: ClassVar[str] = "nmea"
    description: ClassVar[str] = "NMEA 0183 GPS over serial (GGA/RMC/VTG/GSA, checksummed)"
    sensor_type: ClassVar[str] = "gps"
    Options = NmeaOptions
    # The spec caps a sentence at 82 bytes; some receivers exceed it, so allow slack and let
    # the checksum judge rather than the length.
    max_line_bytes: ClassVar[int] = 256

    def decode_line(self, line: bytes) -> Payload | None:
        return decode_sentence(ascii_text(line))


DRIVER = NmeaDriver
