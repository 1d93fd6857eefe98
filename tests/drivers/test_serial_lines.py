"""The serial_lines driver and the serial transport under it, over a real pty."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from pilog.drivers.base import Payload, PollingDriver
from pilog.drivers.serial_lines.driver import decode_csv, decode_json, decode_regex, scalar
from pilog.drivers.serialport import BadLineError, LineFramer, PortLostError
from pilog.errors import ConfigError
from pilog.testing.drivers import open_driver
from pilog.testing.pty import SerialPty

WAIT_S = 30.0  # a bound for waiting on the pty, never a measured result


def read_until(driver: PollingDriver, count: int, rejected: int = 0) -> list[Payload]:
    """Read until `count` readings and `rejected` rejects came (or the wait bound passed)."""
    out: list[Payload] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and (len(out) < count or driver.rejected.total() < rejected):
        out.extend(driver.poll())
    return out


# -- the line framer ------------------------------------------------------------------------


def test_framer_ends_lines_at_cr_lf_or_crlf_across_chunks() -> None:
    reasons: list[str] = []
    framer = LineFramer(64, reasons.append)
    assert framer.feed(b"a,1\r") == [b"a,1"]
    assert framer.feed(b"\nb,2\nc") == [b"b,2"]
    assert framer.feed(b",3\r\n\r\n\n") == [b"c,3"]
    assert reasons == []


def test_framer_strips_edge_nuls_and_rejects_inner_nuls() -> None:
    reasons: list[str] = []
    framer = LineFramer(64, reasons.append)
    assert framer.feed(b"\x00\x00ok\x00\r\nbr\x00ken\r\n\x00\x00\r\n") == [b"ok"]
    assert reasons == ["NUL bytes inside a line"]


def test_framer_rejects_an_overlong_line_once_and_resumes_after_its_end() -> None:
    reasons: list[str] = []
    framer = LineFramer(8, reasons.append)
    assert framer.feed(b"0123456789") == []
    assert framer.feed(b"abcdefghij" * 3) == []
    assert framer.feed(b"tail\nnext\n") == [b"next"]
    assert framer.feed(b"0123456789abc\nlast\n") == [b"last"]
    assert reasons == ["line longer than 8 bytes"] * 2


# -- decoders -------------------------------------------------------------------------------


def test_scalar_converts_numbers_and_keeps_text() -> None:
    assert scalar(" 42 ") == 42
    assert scalar("-1.5e3") == -1500.0
    assert scalar("OK") == "OK"
    assert scalar("nan") == "nan"
    assert scalar("99999999999999999999") == 1e20  # beyond int64: kept as a float


def test_json_integers_beyond_int64_are_rejected() -> None:
    with pytest.raises(BadLineError, match="out of range"):
        decode_json('{"n": 99999999999999999999}', pytest.fail)


def test_json_lines() -> None:
    line = '{"temp_c": 21.5, "count": 3, "ok": true, "unit": "C", "missing": null}'
    assert decode_json(line, pytest.fail) == {"temp_c": 21.5, "count": 3, "ok": True, "unit": "C"}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"temp_c": 21.5', "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"a": {"b": 1}}', "nested"),
        ('{"a": [1]}', "nested"),
        ('{"a": null}', "no values"),
        ('{"temp_c": 21.5}{"temp_c": 21.6}', "not valid JSON"),
    ],
)
def test_bad_json_lines_are_rejected(line: str, reason: str) -> None:
    with pytest.raises(BadLineError, match=reason):
        decode_json(line, pytest.fail)


def test_json_keys_become_field_names_by_the_one_rule() -> None:
    # What real firmware prints: Tasmota-style capitals, a dotted PM2.5, a unit in the key.
    line = '{"Temperature": 21.5, "PM2.5": 3, "Temp °C": 20.9, "Küche": "ON", "1st": true}'
    assert decode_json(line, pytest.fail) == {
        "temperature": 21.5,
        "pm2_5": 3,
        "temp_c": 20.9,
        "kuche": "ON",
        "_1st": True,
    }


def test_json_keys_that_collide_or_make_no_name_are_left_out_and_reported() -> None:
    dropped: list[str] = []
    line = '{"Temp": 1, "temp": 2, "°": 3, "rh_pct": 40}'
    assert decode_json(line, dropped.append) == {"temp": 1, "rh_pct": 40}
    assert dropped == [
        "key 'temp' makes no field name or one already taken: left out",
        "key '°' makes no field name or one already taken: left out",
    ]
    with pytest.raises(BadLineError, match="no values"):
        decode_json('{"°": 1}', dropped.append)


def test_csv_lines() -> None:
    columns = ["temp_c", "rh_pct", "status"]
    assert decode_csv("21.5,40,ok", columns) == {"temp_c": 21.5, "rh_pct": 40, "status": "ok"}
    assert decode_csv("21.5;;ok", columns, ";") == {"temp_c": 21.5, "status": "ok"}
    with pytest.raises(BadLineError, match="2 CSV columns, expected 3"):
        decode_csv("21.5,40", columns)
    with pytest.raises(BadLineError, match="4 CSV columns"):
        decode_csv("21.5,40,ok,21.6", columns)


def test_regex_lines() -> None:
    pattern = re.compile(r"T=(?P<temp_c>-?[\d.]+)C H=(?P<rh_pct>[\d.]+)%(?: (?P<note>\w+))?")
    assert decode_regex("T=-3.5C H=40%", pattern) == {"temp_c": -3.5, "rh_pct": 40}
    assert decode_regex("T=1C H=2% hot", pattern) == {"temp_c": 1, "rh_pct": 2, "note": "hot"}
    with pytest.raises(BadLineError, match="does not match"):
        decode_regex("T=?C", pattern)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"format": "csv"}, "needs `columns"),
        ({"format": "regex", "pattern": "("}, "not a valid regex"),
        ({"format": "regex", "pattern": r"\d+"}, "named groups"),
        ({"format": "xml"}, "format"),
        ({"colums": ["a"]}, "colums"),
        ({"format": "csv", "columns": ["t", "RH %"]}, r"columns\[1\]: .*write 'rh'"),
        ({"format": "regex", "pattern": r"T=(?P<Temp>\d+)"}, "pattern: .*write 'temp'"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    # Options are checked before the port is touched: /dev/null is never opened.
    with (
        pytest.raises(ConfigError, match=message),
        open_driver("serial_lines", {"port": "/dev/null", **options}),
    ):
        pass


# -- the driver on a real pty ---------------------------------------------------------------


def test_json_lines_over_a_pty_with_noise_and_a_stall() -> None:
    with SerialPty() as pty, open_driver("serial_lines", {"port": pty.path}) as driver:
        pty.write(b'\x00\x00{"temp_c": 21.5}\r\n')
        pty.write(b'garbage\r\n{"temp_c": 2\x00\x002}\r\n\xff\xfe\r\n{"temp_c": ')
        assert read_until(driver, 1, rejected=3) == [{"temp_c": 21.5}]
        assert driver.poll() == []  # stalled mid-line
        pty.write(b"22.0}\n")
        assert read_until(driver, 1) == [{"temp_c": 22.0}]
        assert driver.rejected == {
            "not valid JSON": 1,
            "NUL bytes inside a line": 1,
            "not UTF-8 text": 1,
        }


def test_json_keys_over_a_pty_are_named_by_the_rule_and_collisions_counted() -> None:
    with SerialPty() as pty, open_driver("serial_lines", {"port": pty.path}) as driver:
        pty.write(b'{"PM2.5": 7, "Temperature": 21.5, "temperature": 99}\r\n')
        assert read_until(driver, 1, rejected=1) == [{"pm2_5": 7, "temperature": 21.5}]
        assert driver.rejected == {
            "key 'temperature' makes no field name or one already taken: left out": 1
        }


def test_csv_and_regex_over_a_pty() -> None:
    with (
        SerialPty() as pty,
        open_driver(
            "serial_lines", {"port": pty.path, "format": "csv", "columns": ["t", "rh"]}
        ) as driver,
    ):
        pty.write(b"21.5,40\r\n21.6\r\n21.7,41\r\n")
        assert read_until(driver, 2, rejected=1) == [{"t": 21.5, "rh": 40}, {"t": 21.7, "rh": 41}]
        assert driver.rejected == {"1 CSV columns, expected 2": 1}
    options = {"format": "regex", "pattern": r"^T=(?P<t>[-\d.]+)$"}
    with SerialPty() as pty, open_driver("serial_lines", {"port": pty.path, **options}) as driver:
        pty.write(b"T=1.5\nT=x\nT=-2\n")
        assert read_until(driver, 2, rejected=1) == [{"t": 1.5}, {"t": -2}]


def test_max_line_bytes_option_bounds_a_line() -> None:
    options = {"port": "", "max_line_bytes": 16}
    with SerialPty() as pty:
        options["port"] = pty.path
        with open_driver("serial_lines", options) as driver:
            pty.write(b'{"long": "' + b"x" * 64 + b'"}\n{"a": 1}\n')
            assert read_until(driver, 1, rejected=1) == [{"a": 1}]
            assert driver.rejected == {"line longer than 16 bytes": 1}


def test_unplugged_port_raises_and_a_reopen_after_replug_reads_again(tmp_path: Path) -> None:
    link = tmp_path / "ttyACM-arduino"
    with SerialPty(link=link) as pty:
        with open_driver("serial_lines", {"port": str(link)}) as driver:
            pty.write(b'{"n": 1}\n')
            assert read_until(driver, 1) == [{"n": 1}]
            pty.unplug()
            with pytest.raises(PortLostError, match="lost"):
                read_until(driver, 1)
        pty.replug()
        with open_driver("serial_lines", {"port": str(link)}) as driver:
            pty.write(b'{"n": 2}\n')
            assert read_until(driver, 1) == [{"n": 2}]
