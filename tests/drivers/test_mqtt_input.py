"""The mqtt input driver against a real mosquitto on 127.0.0.1, fed by a real publisher."""

from __future__ import annotations

import asyncio
import logging
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mosquitto import (
    MOSQUITTO,
    MOSQUITTO_PASSWD,
    OPENSSL,
    WAIT_S,
    Broker,
    missing,
    password_file,
    publish,
    requires,
    start_broker,
    tls_files,
)

from pilog import runtime as runtime_mod
from pilog.config import parse_config
from pilog.datadir import EventLog
from pilog.drivers.base import Payload, PollingDriver
from pilog.drivers.mqtt import driver as mqtt_driver
from pilog.errors import ConfigError
from pilog.events import DriverFailed, Reading
from pilog.history import History
from pilog.runtime import Runtime
from pilog.testing.clock import FakeClock
from pilog.testing.drivers import open_driver

USER, PASSWORD = "pilog", "s3cret-Pa55word"
TASMOTA = (
    b'{"Time":"2026-11-22T08:00:00","BME280":{"Temperature":21.5,"Humidity":40.1,'
    b'"DewPoint":7.6,"Pressure":1013.2},"PressureUnit":"hPa","TempUnit":"C"}'
)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if reason := missing(MOSQUITTO, "mosquitto"):
        pytest.skip(reason)
    b = start_broker(tmp_path)
    yield b
    b.stop()


def read_until(driver: PollingDriver, count: int) -> list[Payload]:
    """Read until `count` readings came (or the wait bound passed)."""
    out: list[Payload] = []
    deadline = time.monotonic() + WAIT_S
    while len(out) < count and time.monotonic() < deadline:
        out.extend(driver.poll())
    return out


def read_until_rejected(driver: PollingDriver, count: int) -> list[Payload]:
    """Read until `count` messages were rejected; return the readings seen meanwhile."""
    out: list[Payload] = []
    deadline = time.monotonic() + WAIT_S
    while sum(driver.rejected.values()) < count and time.monotonic() < deadline:
        out.extend(driver.poll())
    return out


def test_tasmota_json_is_mapped_by_fields_named_after_the_device(broker: Broker) -> None:
    config = {
        "url": broker.url,
        "topics": ["tele/+/SENSOR"],
        "fields": {"temperature_c": "BME280.Temperature", "humidity_pct": "BME280.Humidity"},
        "prefix": "{1}_",
    }
    with open_driver("mqtt", config) as driver:
        publish(
            broker.port,
            [
                ("tele/kitchen/SENSOR", TASMOTA),
                ("tele/kitchen/STATE", b'{"Uptime":"0T01:00:00"}'),  # not subscribed
                ("tele/shed/SENSOR", TASMOTA.replace(b"21.5", b"-3.25")),
            ],
        )
        assert read_until(driver, 2) == [
            {"kitchen_temperature_c": 21.5, "kitchen_humidity_pct": 40.1},
            {"shed_temperature_c": -3.25, "shed_humidity_pct": 40.1},
        ]
        assert sum(driver.rejected.values()) == 0


def test_esphome_numbers_are_named_from_topic_levels(broker: Broker) -> None:
    config = {"url": broker.url, "topics": ["esphome/+/sensor/+/state"], "field": "{1}_{3}"}
    with open_driver("mqtt", config) as driver:
        publish(
            broker.port,
            [
                ("esphome/shed/sensor/temperature/state", b"21.5"),
                ("esphome/shed/sensor/humidity/state", b"57"),
                ("esphome/shed/sensor/wifi_signal/state", b" -61.0\n"),
            ],
        )
        assert read_until(driver, 3) == [
            {"shed_temperature": 21.5},
            {"shed_humidity": 57},
            {"shed_wifi_signal": -61.0},
        ]


def test_zigbee2mqtt_objects_give_every_top_level_scalar(broker: Broker) -> None:
    config = {"url": broker.url, "topics": ["zigbee2mqtt/+"], "prefix": "{1}_"}
    z2m = (
        b'{"battery":97,"humidity":40,"linkquality":120,"temperature":21.3,'
        b'"update":{"state":"idle"},"update_available":false,"voltage":null}'
    )
    with open_driver("mqtt", config) as driver:
        publish(
            broker.port,
            [("zigbee2mqtt/bridge/state", b'{"state":"online"}'), ("zigbee2mqtt/kitchen", z2m)],
        )
        assert read_until(driver, 1) == [
            {
                "kitchen_battery": 97,
                "kitchen_humidity": 40,
                "kitchen_linkquality": 120,
                "kitchen_temperature": 21.3,
                "kitchen_update_available": False,
            }
        ]


def test_bad_payloads_are_rejected_and_reading_goes_on(broker: Broker) -> None:
    config = {"url": broker.url, "topics": ["t/#"], "max_payload_bytes": 100}
    bad = [
        b"garbage \xff\xfe",
        b"nan",  # ESPHome's failed read
        b"-inf",
        b"",
        b"NaN",
        b"1e999",
        b"[21.5]",
        b"null",
        b'{"t": 21.5',  # cut short: not a text state
        b"\x01\x02",
        b"{}",
        b'{"t": 99999999999999999999}',
        b'{"pad": "' + b"x" * 200 + b'"}',
    ]
    with open_driver("mqtt", config) as driver:
        publish(broker.port, [("t/x", p) for p in [*bad, b"7"]])
        assert read_until(driver, 1) == [{"value": 7}]
        assert driver.rejected == {
            "payload is neither JSON nor UTF-8 text": 1,
            "payload is empty": 1,
            "payload is not a finite number": 4,  # nan, -inf, NaN, 1e999
            "payload is an array, not a value or a JSON object": 1,
            "payload is null, not a value or a JSON object": 1,
            "payload is not valid JSON": 1,
            "payload holds control characters, not text": 1,
            "no number, boolean or string at the top level": 1,
            "'t' is out of the 64-bit integer range": 1,
            "payload longer than 100 bytes": 1,
        }


def test_payload_modes_accept_only_their_kind(broker: Broker) -> None:
    messages = [("m", b'{"t": 1}'), ("m", b"2")]
    config = {"url": broker.url, "topics": ["m"]}
    with (
        open_driver("mqtt", {**config, "payload": "json"}) as json,
        open_driver("mqtt", {**config, "payload": "number"}) as num,
    ):
        publish(broker.port, messages)
        assert read_until(json, 1) == [{"t": 1}]
        assert read_until(num, 1) == [{"value": 2}]
        assert read_until_rejected(json, 1) == []
        assert read_until_rejected(num, 1) == []
    assert json.rejected == {"payload is a number, not a JSON object": 1}
    assert num.rejected == {"payload is not a number": 1}


def test_a_topic_too_short_for_the_template_is_rejected(broker: Broker) -> None:
    with open_driver("mqtt", {"url": broker.url, "topics": ["a/#"], "field": "{2}"}) as driver:
        publish(broker.port, [("a/b", b"1"), ("a/b/c", b"2")])
        assert read_until(driver, 1) == [{"c": 2}]
        assert driver.rejected == {"a topic has too few levels for '{2}'": 1}


def test_retained_messages_are_skipped_unless_asked_for(broker: Broker) -> None:
    publish(broker.port, [("esphome/n/sensor/t/state", b"20.5")], retain=True)
    config = {"url": broker.url, "topics": ["esphome/#"], "field": "{3}"}
    with open_driver("mqtt", {**config, "retained": True}) as keeps:
        assert read_until(keeps, 1) == [{"t": 20.5}]
    with open_driver("mqtt", config) as driver:
        publish(broker.port, [("esphome/n/sensor/t/state", b"21")])  # live: not retained for us
        assert read_until(driver, 1) == [{"t": 21}]
        assert sum(driver.rejected.values()) == 0


def test_broker_restart_raises_and_a_reopen_reconnects(broker: Broker) -> None:
    config = {"url": broker.url, "topics": ["s"], "qos": 1}
    with open_driver("mqtt", config) as driver:
        publish(broker.port, [("s", b"1")])
        assert read_until(driver, 1) == [{"value": 1}]
        broker.stop()
        with pytest.raises(mqtt_driver.BrokerError, match="connection lost"):
            read_until(driver, 1)
    # What the runtime does after the raise: a new driver, opened again (with backoff).
    with pytest.raises(mqtt_driver.BrokerError, match="cannot connect"):  # noqa: SIM117
        with open_driver("mqtt", config):
            pass
    broker.start()
    with open_driver("mqtt", config) as driver:
        publish(broker.port, [("s", b"2")])
        assert read_until(driver, 1) == [{"value": 2}]


def test_runtime_keeps_reading_across_a_broker_restart(
    broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_mod, "RESTART_BACKOFF_MIN_S", 0.02)
    monkeypatch.setattr(runtime_mod, "RESTART_BACKOFF_MAX_S", 0.2)
    config = parse_config(
        tomllib.loads(
            f"""
            device_id = "t"
            data_dir = "{tmp_path / "data"}"
            [log]
            fsync = "never"
            [[sensor]]
            name = "z2m"
            driver = "mqtt"
            url = "{broker.url}"
            topics = ["zigbee2mqtt/+"]
            prefix = "{{1}}_"
            sensor_type = "zigbee2mqtt"
            """
        ),
        "test.toml",
        {},
    )
    clock = FakeClock()
    events = EventLog(config, clock=clock)
    rt = Runtime(config, events, clock)

    def count() -> int:
        health = rt.health.get("z2m")
        return 0 if health is None else health.readings

    async def until_readings(wanted: int, payload: bytes) -> None:
        # Publish until the driver has subscribed and read: a message published while it is
        # (re)connecting is not delivered, by design (clean session).
        deadline = time.monotonic() + WAIT_S
        while count() < wanted:
            assert time.monotonic() < deadline, f"not {wanted} readings within {WAIT_S}s"
            await asyncio.to_thread(publish, broker.port, [("zigbee2mqtt/kitchen", payload)])
            await asyncio.sleep(0.05)

    async def main() -> None:
        task = asyncio.create_task(rt.run())
        try:
            await until_readings(1, b'{"temperature": 1}')
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)
            await until_readings(count() + 1, b'{"temperature": 2}')
        finally:
            rt.stop()
            await task

    try:
        asyncio.run(main())
    finally:
        events.close()
    bodies = [e.body for e in History(config.data_dir).events(0)]
    readings = [b for b in bodies if isinstance(b, Reading) and b.sensor == "z2m"]
    assert {r.sensor_type for r in readings} == {"zigbee2mqtt"}
    values = [r.values for r in readings]
    assert values[0] == {"kitchen_temperature": 1}
    assert values[-1] == {"kitchen_temperature": 2}
    failed = [b for b in bodies if isinstance(b, DriverFailed) and b.sensor == "z2m"]
    assert "connection lost" in failed[0].error


@requires(MOSQUITTO_PASSWD, "mosquitto")
def test_password_file_authenticates_and_a_wrong_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if reason := missing(MOSQUITTO, "mosquitto"):
        pytest.skip(reason)
    caplog.set_level(logging.DEBUG)
    broker = start_broker(tmp_path, password_file=password_file(tmp_path, USER, PASSWORD))
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text(PASSWORD + "\n")
        config = {"url": broker.url, "topics": ["s"], "username": USER}
        config["password_file"] = str(secret)
        with open_driver("mqtt", config) as driver:
            publish(broker.port, [("s", b"5")], username=USER, password=PASSWORD)
            assert read_until(driver, 1) == [{"value": 5}]
        secret.write_text("wrong-" + PASSWORD)
        with pytest.raises(mqtt_driver.BrokerError, match="refused the connection") as e:  # noqa: SIM117
            with open_driver("mqtt", config):
                pass
        assert PASSWORD not in str(e.value)
        secret.write_text("")
        with pytest.raises(ConfigError, match="is empty"):  # noqa: SIM117
            with open_driver("mqtt", config):
                pass
        with pytest.raises(mqtt_driver.BrokerError, match="refused the connection"):  # noqa: SIM117
            with open_driver("mqtt", {"url": broker.url, "topics": ["s"]}):  # anonymous
                pass
    finally:
        broker.stop()
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


@requires(OPENSSL, "openssl")
# paho 2.2 does not close the socket when the TLS handshake fails (Client._ssl_wrap_socket);
# CPython closes it when the exception is gone, with a ResourceWarning.
@pytest.mark.filterwarnings("ignore:unclosed <ssl.SSLSocket:ResourceWarning")
def test_mqtts_verifies_the_broker_with_the_ca_bundle(tmp_path: Path) -> None:
    if reason := missing(MOSQUITTO, "mosquitto"):
        pytest.skip(reason)
    ca, cert, key = tls_files(tmp_path)
    broker = start_broker(tmp_path, tls=(cert, key))
    url = f"mqtts://127.0.0.1:{broker.port}"
    try:
        config = {"url": url, "topics": ["s"], "ca_bundle": str(ca)}
        with open_driver("mqtt", config) as driver:
            publish(broker.port, [("s", b"3")], ca=ca)
            assert read_until(driver, 1) == [{"value": 3}]
        with pytest.raises(mqtt_driver.BrokerError, match=r"cannot connect.*CERTIFICATE"):  # noqa: SIM117
            with open_driver("mqtt", {"url": url, "topics": ["s"]}):  # the system's CAs
                pass
    finally:
        broker.stop()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://h", "topics": ["a"]}, "mqtt:// or mqtts://"),
        ({"url": "mqtt://", "topics": ["a"]}, "has no host"),
        ({"url": "mqtt://u:p@h", "topics": ["a"]}, "username and password_file"),
        ({"url": "mqtt://h", "topics": []}, "at least one"),
        ({"url": "mqtt://h", "topics": ["a/#/b"]}, "'#' must be the whole last level"),
        ({"url": "mqtt://h", "topics": ["a/b+"]}, "'\\+' must be a whole level"),
        ({"url": "mqtt://h", "topics": ["a"], "qos": 2}, "qos"),
        ({"url": "mqtt://h", "topics": ["a"], "payload": "xml"}, "payload"),
        ({"url": "mqtt://h", "topics": ["a/+"], "field": "{2}"}, "levels 0 to 1"),
        ({"url": "mqtt://h", "topics": ["a/+"], "prefix": "{dev}_"}, "only topic levels"),
        ({"url": "mqtt://h", "topics": ["a"], "prefix": "{0"}, "prefix"),
        ({"url": "mqtt://h", "topics": ["a"], "ca_bundle": "/ca.pem"}, "needs an mqtts"),
        ({"url": "mqtt://h", "topics": ["a"], "password_file": "/p"}, "needs a username"),
        ({"url": "mqtt://h", "topics": ["a"], "fields": {"PM2.5": "PM2.5"}}, "write 'pm2_5'"),
        (
            {"url": "mqtt://h", "topics": ["a"], "fields": ["SDS0X1.PM2.5", "SDS0X1.PM2_5"]},
            "another path",
        ),
        ({"url": "mqtt://h", "topics": ["a"], "optional_fields": ["a..b"]}, "quote a key"),
        ({"url": "mqtt://h", "topics": ["a"], "fields": ['"PM2.5']}, "not closed"),
        ({"url": "mqtt://h", "topics": ["a"], "fields": ["a"], "optional_fields": ["a"]}, "both"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):  # noqa: SIM117
        with open_driver("mqtt", options):
            pass


def test_without_paho_opening_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_driver, "HAVE_PAHO", False)
    with pytest.raises(ConfigError, match=r"pip install 'paho-mqtt>=2.0'"):  # noqa: SIM117
        with open_driver("mqtt", {"url": "mqtt://127.0.0.1", "topics": ["a"]}):
            pass


# Tasmota SENSOR messages as devices send them (PMS5003: arendst/Tasmota#16971; SI7021 with a
# failed probe, which old firmware prints as a bare nan: ioBroker/ioBroker.sonoff#65).
PMS5003 = (
    b'{"Time":"2026-11-22T08:00:00","PMS5003":{"CF1":5,"CF2.5":8,"CF10":8,"PM1":5,"PM2.5":8,'
    b'"PM10":8,"PB0.3":996,"PB0.5":264,"PB1":59,"PB2.5":2,"PB5":0,"PB10":0}}'
)
SDS011 = b'{"Time":"2026-11-22T08:00:00","SDS0X1":{"PM2.5":3.2,"PM10":7.9}}'
SI7021_NAN = (
    b'{"Time":"2018-10-31T11:57:31","SI7021-00":{"Temperature":17.1,"Humidity":70.0},'
    b'"SI7021-02":{"Temperature":nan,"Humidity":nan},'
    b'"SI7021-04":{"Temperature":10.0,"Humidity":59.7},"TempUnit":"C"}'
)
DS18B20 = b'{"Time":"2026-11-22T08:00:00","DS18B20":{"Id":"01144A0CB2AA","Temperature":4.5}}'


def test_keys_holding_a_dot_are_named_by_quoted_paths(broker: Broker) -> None:
    config = {
        "url": broker.url,
        "topics": ["tele/+/SENSOR"],
        "fields": ['PMS5003."PM2.5"', 'PMS5003."CF2.5"', 'PMS5003."PB0.3"', "PMS5003.PM10"],
    }
    mapping = {**config, "fields": {"pm2_5_ugm3": 'SDS0X1."PM2.5"'}}
    with open_driver("mqtt", config) as paths, open_driver("mqtt", mapping) as table:
        publish(broker.port, [("tele/air/SENSOR", PMS5003), ("tele/sds/SENSOR", SDS011)])
        assert read_until(paths, 1) == [
            {"pms5003_pm2_5": 8, "pms5003_cf2_5": 8, "pms5003_pb0_3": 996, "pms5003_pm10": 8}
        ]
        assert read_until(table, 1) == [{"pm2_5_ugm3": 3.2}]


def test_a_bare_nan_drops_that_value_and_keeps_the_other_sensors(broker: Broker) -> None:
    temperatures = ["SI7021-00.Temperature", "SI7021-02.Temperature", "SI7021-04.Temperature"]
    config = {"url": broker.url, "topics": ["tele/+/SENSOR"], "fields": temperatures}
    dht11_unplugged = b'{"Time":"2018-10-23T23:47:58","DHT11":{"Temperature":nan},"TempUnit":"C"}'
    only_dht = {**config, "fields": {"temperature_c": "DHT11.Temperature"}}
    with open_driver("mqtt", config) as driver, open_driver("mqtt", only_dht) as dht:
        publish(
            broker.port, [("tele/cellar/SENSOR", SI7021_NAN), ("tele/d/SENSOR", dht11_unplugged)]
        )
        assert read_until(driver, 1) == [
            {"si7021_00_temperature": 17.1, "si7021_04_temperature": 10.0}
        ]
        assert read_until_rejected(dht, 3) == []
    assert driver.rejected == {
        "'SI7021-02.Temperature' is not a finite number: that value is left out": 1,
        "no 'SI7021-00.Temperature' in the document": 1,  # the DHT11 device
    }
    assert dht.rejected == {
        "no 'DHT11.Temperature' in the document": 1,  # the SI7021 device
        "'DHT11.Temperature' is not a finite number: that value is left out": 1,
        "no finite value among the fields": 1,
    }


def test_text_and_boolean_states_are_recorded(broker: Broker) -> None:
    esphome = {"url": broker.url, "topics": ["esphome/+/+/+/state"], "field": "{1}_{3}"}
    # zigbee2mqtt with `output: attribute` publishes each attribute on its own topic.
    z2m = {"url": broker.url, "topics": ["zigbee2mqtt/+/+"], "field": "{1}_{2}"}
    with open_driver("mqtt", esphome) as esp, open_driver("mqtt", z2m) as zig:
        publish(
            broker.port,
            [
                ("esphome/shed/binary_sensor/door/state", b"ON"),
                ("esphome/shed/switch/pump/state", b"OFF"),
                ("esphome/shed/text_sensor/wifi_ssid/state", b"Gartenhaus 2.4"),
                ("esphome/shed/sensor/temperature/state", b"21.5"),
                ("zigbee2mqtt/hall/contact", b"true"),
                ("zigbee2mqtt/hall/state", b'"ON"'),
                ("zigbee2mqtt/hall/occupancy", b"false"),
            ],
        )
        assert read_until(esp, 4) == [
            {"shed_door": "ON"},
            {"shed_pump": "OFF"},
            {"shed_wifi_ssid": "Gartenhaus 2.4"},
            {"shed_temperature": 21.5},
        ]
        assert read_until(zig, 3) == [
            {"hall_contact": True},
            {"hall_state": "ON"},
            {"hall_occupancy": False},
        ]
    assert sum(esp.rejected.values()) == sum(zig.rejected.values()) == 0


def test_field_names_from_topic_levels_and_keys_are_sanitized(broker: Broker) -> None:
    z2m = b'{"Temperature":21.3,"humidity":40,"link quality":120,"voltage":null}'
    config = {"url": broker.url, "topics": ["zigbee2mqtt/+"], "prefix": "{1}_"}
    esphome = {"url": broker.url, "topics": ["esphome/+/sensor/+/state"], "field": "{1}-{3}"}
    with open_driver("mqtt", config) as driver, open_driver("mqtt", esphome) as esp:
        publish(
            broker.port,
            [
                ("zigbee2mqtt/Küche Sensor", z2m),
                ("zigbee2mqtt/1. Stock/Bad", z2m),  # not matched: the filter has one level
                ("esphome/Gewächshaus/sensor/Temp °C/state", b"19.5"),
            ],
        )
        assert read_until(driver, 1) == [
            {
                "kuche_sensor_temperature": 21.3,
                "kuche_sensor_humidity": 40,
                "kuche_sensor_link_quality": 120,
            }
        ]
        assert read_until(esp, 1) == [{"gewachshaus_temp_c": 19.5}]


def test_optional_fields_take_what_each_tasmota_device_has(broker: Broker) -> None:
    sample = tomllib.loads((Path(mqtt_driver.__file__).parent / "sample.toml").read_text())
    tasmota = next(s for s in sample["sensor"] if s["name"] == "tasmota")
    options = {k: v for k, v in tasmota.items() if k not in ("name", "driver")}
    config = {**options, "url": broker.url, "username": None, "password_file": None}
    with open_driver("mqtt", config) as driver:
        publish(
            broker.port,
            [
                ("tele/kitchen/SENSOR", TASMOTA),
                ("tele/balcony/SENSOR", SDS011),
                ("tele/attic/SENSOR", PMS5003),
                ("tele/cellar/SENSOR", DS18B20),  # none of the fields
            ],
        )
        assert read_until(driver, 3) == [
            {
                "kitchen_temperature_c": 21.5,
                "kitchen_humidity_pct": 40.1,
                "kitchen_pressure_hpa": 1013.2,
            },
            {"balcony_pm2_5_ugm3": 3.2, "balcony_pm10_ugm3": 7.9},
            {"attic_pm1_ugm3": 5, "attic_pms_pm2_5_ugm3": 8, "attic_pms_pm10_ugm3": 8},
        ]
        assert read_until_rejected(driver, 1) == []
    assert driver.rejected == {"none of the fields is in the document": 1}
