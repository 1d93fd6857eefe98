"""The sink contract suite against the mqtt sink and a real mosquitto (at least once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mosquitto import MOSQUITTO, MOSQUITTO_PASSWD, Broker, Subscriber, missing
from mosquitto import start_broker as start_mosquitto

from pilog.testing.sink_contract import Endpoint, SinkContract, StoredReading
from pilog.testing.tcp_proxy import ProxiedEndpoint, TcpProxy

USER = "contract"


class BrokerEndpoint(ProxiedEndpoint):
    """mosquitto with a subscriber on it; the sink reaches the broker through a proxy."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.subscriber = Subscriber(broker.port)  # direct: unaffected by stop and hang
        self.proxy = TcpProxy(("127.0.0.1", broker.port))
        self.url = f"mqtt://127.0.0.1:{self.proxy.port}"

    def stored(self) -> list[StoredReading]:
        out = []
        for message in list(self.subscriber.messages):
            o = json.loads(message.payload)
            out.append(StoredReading(o["id"], o["sensor"], dict(o["payload"])))
        return out

    def close_server(self) -> None:
        self.subscriber.close()
        self.broker.stop()


class TestMqttContract(SinkContract):
    sink_type = "mqtt"
    exactly_once = False  # QoS 1: a batch sent again is published again, same ids

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> Iterator[Endpoint]:
        if reason := missing(MOSQUITTO, "mosquitto") or missing(MOSQUITTO_PASSWD, "mosquitto"):
            pytest.skip(reason)
        # Anonymous clients (the subscriber) and USER, whose password the secret test sets.
        endpoint = BrokerEndpoint(start_mosquitto(tmp_path))
        yield endpoint
        endpoint.close()

    def sink_table(self, endpoint: Any) -> dict[str, Any]:
        return {"url": endpoint.url, "qos": 1}

    def secret_table(self, secret: str, tmp_path: Path) -> dict[str, Any] | None:
        path = tmp_path / "mqtt-password"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        return {"username": USER, "password_file": str(path)}
