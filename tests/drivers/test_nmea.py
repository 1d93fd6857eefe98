"""The nmea driver: sentences against gpsd's captures, and a real pty carrying them."""

from __future__ import annotations

import json
import threading
import time
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
from helpers import CORPUS

from pilog.drivers.base import Payload, PollingDriver
from pilog.drivers.nmea.driver import decode_sentence
from pilog.drivers.serialport import BadLineError, PortLostError, ascii_text
from pilog.testing.drivers import open_driver
from pilog.testing.pty import SerialPty

WAIT_S = 30.0  # a bound for waiting on the pty, never a measured result
READ_TYPES = {"GGA", "RMC", "VTG", "GSA"}
KMH_PER_KNOT = 1.852


def corpus_file(name: str) -> Path:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"corpus file {path} is absent (see ../shared/corpus/SOURCES.md)")
    return path


def expected_lines() -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = json.loads(corpus_file("nmea_expected.json").read_text())["lines"]
    return lines


def sentence(body: str) -> str:
    """`$body*hh` with the checksum computed here, independently of the driver."""
    check = reduce(lambda acc, ch: acc ^ ord(ch), body, 0)
    return f"${body}*{check:02X}"


def decode(raw: str) -> Payload | None:
    """What the driver makes of one line (as bytes off the wire)."""
    return decode_sentence(ascii_text(raw.encode("latin-1")))


def expected_payload(d: dict[str, Any]) -> Payload:
    """The reading the README promises for a sentence gpsd's corpus decoded as `d`."""
    kind, fix = d["type"], d.get("has_fix")
    values: dict[str, Any] = {"sentence": kind, "talker": d["talker"]}
    if kind == "GGA":
        values |= {"time_utc": d["time"], "fix": fix, "fix_quality": d["fix_quality"]}
        values |= {"sats_used": d["num_sats"], "hdop": d["hdop"]}
        if fix:
            values |= {"lat_deg": d["lat"], "lon_deg": d["lon"], "alt_m": d["altitude_m"]}
            values["geoid_sep_m"] = d["geoid_sep_m"]
    elif kind == "RMC":
        values |= {"time_utc": d["time"], "fix": fix, "mode": d["mode"]}
        dd, mm, yy = d["date"][:2], d["date"][2:4], d["date"][4:]
        values["date"] = f"{1900 if int(yy) >= 80 else 2000}"[:2] + f"{yy}-{mm}-{dd}"
        if fix:
            values |= {"lat_deg": d["lat"], "lon_deg": d["lon"], "course_deg": d["course_deg"]}
            knots = d["speed_knots"]
            values["speed_kmh"] = None if knots is None else knots * KMH_PER_KNOT
    elif kind == "VTG":
        kmh = d["speed_kmh"]
        if kmh is None and d["speed_knots"] is not None:
            kmh = d["speed_knots"] * KMH_PER_KNOT
        values |= {"course_deg": d["course_true"], "speed_kmh": kmh, "mode": d["mode"]}
    else:
        values |= {"fix": fix, "fix_type": d["fix_type"], "sats_used": len(d["prns"])}
        values |= {"pdop": d["pdop"], "hdop": d["hdop"], "vdop": d["vdop"]}
    return {k: v for k, v in values.items() if v is not None}


def read_until(driver: PollingDriver, count: int, rejected: int = 0) -> list[Payload]:
    """Read until `count` readings and `rejected` rejects came (or the wait bound passed)."""
    out: list[Payload] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and (len(out) < count or driver.rejected.total() < rejected):
        out.extend(driver.poll())
    return out


def feed(pty: SerialPty, data: bytes) -> threading.Thread:
    """Write `data` from a thread: a pty holds a few KiB until the driver reads them."""
    writer = threading.Thread(target=pty.write, args=(data,), daemon=True)
    writer.start()
    return writer


# -- decoder against the corpus -----------------------------------------------------------


def test_every_captured_line_decodes_or_is_rejected_as_gpsd_verdict_says() -> None:
    for line in expected_lines():
        where = f"line {line['line']}: {line['raw']!r}"
        if line["verdict"] != "ok":
            with pytest.raises(BadLineError):
                decode(line["raw"])
            continue
        payload = decode(line["raw"])
        if line["decoded"]["type"] not in READ_TYPES:
            assert payload is None, where
            continue
        assert payload == pytest.approx(expected_payload(line["decoded"]), abs=1e-8), where


def test_published_spot_values() -> None:
    gga = decode(
        "$GPGGA,202640.000,4404.1306,N,12118.8515,W,2,10,0.98,1127.7,M,-19.6,M,0000,0000*6C"
    )
    assert gga is not None
    assert gga["lat_deg"] == pytest.approx(44.068843333, abs=1e-9)
    assert gga["lon_deg"] == pytest.approx(-121.314191667, abs=1e-9)
    assert (gga["fix_quality"], gga["sats_used"], gga["alt_m"]) == (2, 10, 1127.7)
    rmc = decode("$GNRMC,092835.00,A,4804.14539,N,01621.54005,E,0.250,,210615,,,A*6F")
    assert rmc is not None
    assert (rmc["talker"], rmc["fix"], rmc["date"]) == ("GN", True, "2015-06-21")
    assert rmc["speed_kmh"] == pytest.approx(0.463)
    assert "course_deg" not in rmc
    assert decode("$GPRMC,001902.00,V,,,,,,,020211,,,N*77") == {
        "sentence": "RMC",
        "talker": "GP",
        "time_utc": "001902.00",
        "date": "2011-02-02",
        "fix": False,
        "mode": "N",
    }


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB"])
def test_any_talker_is_read(talker: str) -> None:
    payload = decode(
        sentence(f"{talker}GGA,120000.00,3351.1234,S,15112.5000,E,1,08,1.1,42.0,M,,M,,")
    )
    assert payload is not None
    assert payload["talker"] == talker
    assert payload["lat_deg"] == pytest.approx(-(33 + 51.1234 / 60))
    assert payload["lon_deg"] == pytest.approx(151 + 12.5 / 60)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("$GPGGA,000343.03,4808.9993,N,01135.0798,E,1,04,01.4,00460.0,M,0046.2,M,,", "missing"),
        ("$GPGGA,000343.03,4808.9993,N,01135.0798,E,1,04,01.4,00460.0,M,0046.2,M,,*57", "mismatch"),
        ("$GPGGA,000343.03,4808.9993,N,01135.0798,E,1,04,01.4,00460.0,M,0046.2,M,,*5", "malformed"),
        (sentence("GPGGA,000343.03,4808.9993,N,01135.0798,E,1,04"), "truncated GGA"),
        (sentence("GPGSA,A,1,,,,,,,,,,,,,,,") + sentence("GPVTG,,T,,M,,N,,K,N"), "run together"),
        ("GPGSA,A,1,,,,,,,,,,,,,,,*1E", "no '\\$'"),
        (sentence("GPGGA,1,9100.0000,N,01135.0798,E,1,04,1.4,460.0,M,46.2,M,,"), "out of range"),
        (sentence("GPGGA,1,4860.0000,N,01135.0798,E,1,04,1.4,460.0,M,46.2,M,,"), "minutes"),
        (sentence("GPGGA,1,4808.9993,X,01135.0798,E,1,04,1.4,460.0,M,46.2,M,,"), "hemisphere"),
        (sentence("GPGGA,1,4808.9993,N,01135.0798,E,9,04,1.4,460.0,M,46.2,M,,"), "fix quality"),
        (sentence("GPRMC,1,Q,,,,,,,020211,,,N"), "status"),
        (sentence("GPGSA,A,3,x,,,,,,,,,,,,1.0,1.0,1.0"), "bad GSA field"),
        ("$GPRMC,000346.03,A,4808\x00\x00  ", "non-printable"),
    ],
)
def test_bad_sentences_are_rejected_with_their_reason(raw: str, reason: str) -> None:
    with pytest.raises(BadLineError, match=reason):
        decode(raw)


# -- what real receivers send beyond the fixtures: as liberal as gpsd where a field is optional


def test_gga_without_dgps_age_and_station_is_read() -> None:
    # Receivers without DGPS end GGA at the geoid separation's unit (gpsd needs no more).
    payload = decode(sentence("GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M"))
    assert payload == pytest.approx(
        {
            "sentence": "GGA",
            "talker": "GP",
            "time_utc": "123519.00",
            "fix": True,
            "fix_quality": 1,
            "sats_used": 8,
            "hdop": 0.9,
            "lat_deg": 48 + 7.038 / 60,
            "lon_deg": 11 + 31.0 / 60,
            "alt_m": 545.4,
            "geoid_sep_m": 46.9,
        }
    )
    # With the age but not the station, too.
    aged = decode(sentence("GNGGA,123519.00,4807.038,N,01131.000,E,2,08,0.9,545.4,M,46.9,M,3.0"))
    assert aged is not None
    assert aged["fix_quality"] == 2


@pytest.mark.parametrize("date", ["000000", "321394", "1911", "19119X", "191194.0"])
def test_rmc_with_a_garbage_date_keeps_its_position(date: str) -> None:
    payload = decode(
        sentence(f"GPRMC,225446.33,A,4916.45,N,12311.12,W,000.5,054.7,{date},020.3,E,A")
    )
    assert payload is not None
    assert "date" not in payload
    assert payload["time_utc"] == "225446.33"
    assert payload["lat_deg"] == pytest.approx(49 + 16.45 / 60)
    assert payload["lon_deg"] == pytest.approx(-(123 + 11.12 / 60))
    assert payload["speed_kmh"] == pytest.approx(0.5 * KMH_PER_KNOT)


def test_rmc_of_nmea_2_0_without_date_variation_and_mode_is_read() -> None:
    payload = decode(sentence("GPRMC,225446,A,4916.45,N,12311.12,W,000.5"))
    assert payload == pytest.approx(
        {
            "sentence": "RMC",
            "talker": "GP",
            "time_utc": "225446",
            "fix": True,
            "lat_deg": 49 + 16.45 / 60,
            "lon_deg": -(123 + 11.12 / 60),
            "speed_kmh": 0.5 * KMH_PER_KNOT,
        }
    )


@pytest.mark.parametrize(("status", "fix"), [("D", True), ("", False)])
def test_rmc_differential_status_is_a_fix_and_an_empty_one_is_none(status: str, fix: bool) -> None:
    payload = decode(sentence(f"GPRMC,225446.33,{status},4916.45,N,12311.12,W,0.5,54.7,191194,,,D"))
    assert payload is not None
    assert payload["fix"] is fix
    assert ("lat_deg" in payload) is fix
    assert payload["date"] == "1994-11-19"


@pytest.mark.parametrize(
    "body",
    [
        "GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9",  # geoid unit missing
        "GPRMC,225446,A,4916.45,N,12311.12,W",  # no speed
        "GPVTG,054.7,T,034.4",
    ],
)
def test_sentences_shorter_than_gpsd_accepts_are_still_truncated(body: str) -> None:
    with pytest.raises(BadLineError, match="truncated"):
        decode(sentence(body))


def test_short_sentences_with_a_bad_checksum_are_still_rejected() -> None:
    good = sentence("GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M")
    bad = good[:-2] + f"{int(good[-2:], 16) ^ 0x01:02X}"
    with pytest.raises(BadLineError, match="checksum mismatch"):
        decode(bad)
    rmc = sentence("GPRMC,225446.33,A,4916.45,N,12311.12,W,000.5,054.7,999999,020.3,E,A")
    with pytest.raises(BadLineError, match="checksum mismatch"):
        decode(rmc.replace("4916.45", "4916.46"))


def test_other_valid_sentences_are_skipped_not_rejected() -> None:
    assert decode("$GPGSV,1,1,00*79") is None
    assert decode(sentence("PUBX,00,081350.00,4717.113210,N")) is None


# -- the driver on a real pty ---------------------------------------------------------------


def test_captured_stream_over_a_pty_gives_every_good_sentence_in_order() -> None:
    lines = expected_lines()
    wanted = [
        expected_payload(line["decoded"])
        for line in lines
        if line["verdict"] == "ok" and line["decoded"]["type"] in READ_TYPES
    ]
    bad = sum(1 for line in lines if line["verdict"] != "ok")
    with SerialPty() as pty, open_driver("nmea", {"port": pty.path}) as driver:
        writer = feed(pty, corpus_file("nmea_capture.txt").read_bytes())
        got = read_until(driver, len(wanted), bad)
        writer.join(WAIT_S)
        assert len(got) == len(wanted)
        for reading, expected in zip(got, wanted, strict=True):
            assert reading == pytest.approx(expected, abs=1e-8)
        assert driver.rejected.total() == bad
        assert driver.rejected["two sentences run together"] == 5
        assert driver.rejected["NUL bytes inside a line"] == 1
        assert driver.rejected["no '$' at the start of the sentence"] == 2
        assert driver.poll() == []  # nothing left over, and a quiet port returns empty


def test_short_gga_and_rmc_with_a_bad_date_over_a_pty_are_read() -> None:
    lines = [
        sentence("GPGGA,123519.00,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M"),
        sentence("GPRMC,123519.00,A,4807.038,N,01131.000,E,000.5,054.7,00000,,,A"),
    ]
    with SerialPty() as pty, open_driver("nmea", {"port": pty.path}) as driver:
        writer = feed(pty, "".join(f"{line}\r\n" for line in lines).encode())
        gga, rmc = read_until(driver, 2)
        writer.join(WAIT_S)
        assert (gga["sentence"], gga["alt_m"]) == ("GGA", 545.4)
        assert rmc["lat_deg"] == pytest.approx(48 + 7.038 / 60)
        assert "date" not in rmc
        assert driver.rejected.total() == 0


def test_noise_nul_bytes_and_a_stall_mid_sentence_over_a_pty() -> None:
    good = "$GPGGA,202640.000,4404.1306,N,12118.8515,W,2,10,0.98,1127.7,M,-19.6,M,0000,0000*6C"
    with SerialPty() as pty, open_driver("nmea", {"port": pty.path}) as driver:
        # Power-up: line noise, then NULs before the first sentence (a UART in break).
        pty.write(b"\xff\xfe\x13garbage\r\n\x00\x00\x00" + good[:30].encode())
        assert read_until(driver, 0, rejected=1) == []
        assert driver.rejected["non-printable bytes in line"] == 1
        # The receiver stalls mid-sentence for longer than a read waits.
        assert driver.poll() == []  # a read of a stalled port returns empty within READ_WAIT_S
        pty.write(good[30:].encode() + b"\r\n")
        (reading,) = read_until(driver, 1)
        assert reading["lat_deg"] == pytest.approx(44.068843333, abs=1e-9)
        assert driver.rejected.total() == 1


def test_overlong_line_without_an_end_is_rejected_once_then_reading_resumes() -> None:
    good = "$GPGSA,A,3,20,16,09,03,07,10,23,19,27,30,,,1.64,0.98,1.31*05"
    with SerialPty() as pty, open_driver("nmea", {"port": pty.path}) as driver:
        pty.write(b"$GPGSV" + b",1" * 400)
        assert read_until(driver, 0, rejected=1) == []
        pty.write(b",1" * 400 + b"\r\n" + good.encode() + b"\r\n")
        (reading,) = read_until(driver, 1)
        assert (reading["fix_type"], reading["sats_used"]) == (3, 10)
        assert driver.rejected == {"line longer than 256 bytes": 1}


def test_unplugged_receiver_raises_and_a_reopen_after_replug_reads_again(tmp_path: Path) -> None:
    gga = "$GPGGA,000343.03,4808.9993,N,01135.0798,E,1,04,01.4,00460.0,M,0046.2,M,,*56\r\n"
    link = tmp_path / "serial" / "by-id" / "usb-gps"
    with SerialPty(link=link) as pty:
        with open_driver("nmea", {"port": str(link)}) as driver:
            pty.write(gga.encode())
            assert len(read_until(driver, 1)) == 1
            pty.unplug()
            with pytest.raises(PortLostError, match="lost"):
                read_until(driver, 1)
        # While it is away, opening fails as an OSError: the runtime backs off and retries.
        with (
            pytest.raises(FileNotFoundError, match="usb-gps does not exist: plug the device in"),
            open_driver("nmea", {"port": str(link)}),
        ):
            pass
        pty.replug()
        with open_driver("nmea", {"port": str(link)}) as driver:
            pty.write(gga.encode())
            (reading,) = read_until(driver, 1)
            assert reading["fix_quality"] == 1
