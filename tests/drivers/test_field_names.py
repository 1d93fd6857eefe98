"""The field-name rule and the paths of docs/drivers.md, checked against the page itself."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pilog.drivers.field_names import FIELD_NAME_RE, check_field_name, field_name
from pilog.drivers.fields import parse_path
from pilog.drivers.mqtt.driver import MqttOptions

DOC = Path(__file__).parents[2] / "docs" / "drivers.md"
SECTION = DOC.read_text().split("## Network input: paths, optional fields and field names")[1]


def doc_table() -> list[tuple[str, str, str]]:
    """(row as written, what the device sent, field name) for each row of the names table."""
    rows = re.findall(r"^\| (.+?) \| `([a-z0-9_]+)` \|$", SECTION, re.M)
    assert len(rows) >= 5, "docs/drivers.md lost its table of field names"
    out = []
    for left, name in rows:
        pieces = re.findall(r"`([^`]+)`", left)
        if "(a path)" in left:
            raw = "_".join(str(k) for k in parse_path(pieces[0]))
        else:
            raw = "".join(pieces)
        out.append((left, raw, name))
    return out


@pytest.mark.parametrize(("row", "raw", "name"), doc_table())
def test_the_documented_names_are_what_the_rule_makes(row: str, raw: str, name: str) -> None:
    assert field_name(raw) == name, row


@given(st.text())
def test_every_name_fits_every_engine_and_the_rule_is_idempotent(raw: str) -> None:
    name = field_name(raw)
    assert name == "" or FIELD_NAME_RE.fullmatch(name)
    assert field_name(name) == name


def test_a_configured_name_that_breaks_the_rule_is_refused_with_the_fix() -> None:
    check_field_name("pm2_5_ugm3", "fields")
    with pytest.raises(ValueError, match=r"fields: field name 'PM2\.5' .* write 'pm2_5'"):
        check_field_name("PM2.5", "fields")
    with pytest.raises(ValueError, match="use letters, digits and _"):
        check_field_name("°", "fields")


def test_the_documented_tasmota_table_is_a_valid_mqtt_sensor() -> None:
    block = re.search(r"```toml\n(.*?)^```$", SECTION, re.M | re.S)
    assert block, "docs/drivers.md lost its optional_fields example"
    table = tomllib.loads(block.group(1))["sensor"][0]
    options = MqttOptions(**{k: v for k, v in table.items() if k not in ("name", "driver")})
    assert options.optional_fields == {
        "temperature_c": "BME280.Temperature",
        "humidity_pct": "BME280.Humidity",
        "pm2_5_ugm3": 'SDS0X1."PM2.5"',
        "pm10_ugm3": "SDS0X1.PM10",
    }


@pytest.mark.parametrize(
    ("path", "keys"),
    [
        ('SDS0X1."PM2.5"', ("SDS0X1", "PM2.5")),
        ("sensors.0.temp", ("sensors", 0, "temp")),
        ('a."0"', ("a", "0")),
        ('"a.b"', ("a.b",)),
    ],
)
def test_paths_quote_keys_holding_a_dot(path: str, keys: tuple[str | int, ...]) -> None:
    assert parse_path(path) == keys


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a..b", "empty or half-quoted"),
        ("a.", "ends with a dot"),
        ('"PM2.5', "not closed"),
        ('"PM2.5"x', "a dot must follow"),
        ('SDS0X1.PM2"5"', "half-quoted"),
    ],
)
def test_malformed_paths_are_refused(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_path(path)
