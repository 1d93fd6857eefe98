"""The sink contract suite against the http-json sink and pilog.testing.Receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilog.testing.receiver import Receiver
from pilog.testing.sink_contract import Endpoint, SinkContract, StoredReading
from pilog.testing.tcp_proxy import ProxiedEndpoint, TcpProxy


class ReceiverEndpoint(ProxiedEndpoint):
    """The receiver of the wire contract, behind a proxy; it de-duplicates by id."""

    def __init__(self) -> None:
        self.receiver = Receiver()
        self.proxy = TcpProxy(("127.0.0.1", self.receiver.port))
        self.url = f"http://127.0.0.1:{self.proxy.port}/api/readings"

    def stored(self) -> list[StoredReading]:
        return [
            StoredReading(i, o["sensor"], dict(o["payload"]))
            for i, o in self.receiver.events.items()
        ]

    def close_server(self) -> None:
        self.receiver.close()


class TestHttpJsonContract(SinkContract):
    sink_type = "http-json"
    exactly_once = True  # the receiver keeps one copy per id

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> Iterator[Endpoint]:
        endpoint = ReceiverEndpoint()
        yield endpoint
        endpoint.close()

    def sink_table(self, endpoint: Any) -> dict[str, Any]:
        return {"url": endpoint.url}

    def secret_table(self, secret: str, tmp_path: Path) -> dict[str, Any] | None:
        token = tmp_path / "token"
        token.write_text(secret + "\n")
        token.chmod(0o600)
        return {"token_file": str(token)}
