"""The sink contract suite against the nats sink and a real JetStream server (exactly once).

One JetStream server (a stream of one replica) behind a proxy: the contract stops and hangs
the sink's way in, while the stream is read back over a direct connection. The 3-node cluster,
leader kills and outages longer than the duplicate window are in tests/uploader/test_nats.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilog.testing.nats import NatsCluster, missing
from pilog.testing.sink_contract import SinkContract, StoredReading
from pilog.testing.tcp_proxy import ProxiedEndpoint, TcpProxy

USER, PASSWORD = "contract", "contract-Pa55"
STREAM = "CONTRACT"


class JetStreamEndpoint(ProxiedEndpoint):
    """A single JetStream server with stream CONTRACT on `contract.>`, behind a proxy."""

    def __init__(self, directory: Path) -> None:
        self.server = NatsCluster.start(
            directory,
            nodes=1,
            authorization=f'  user: {USER}\n  password: "{PASSWORD}"',
            connect_options={"user": USER, "password": PASSWORD},
        )
        self.server.add_stream(STREAM, ["contract.>"])
        self.proxy = TcpProxy(("127.0.0.1", self.server.nodes[0].port))
        self.url = f"nats://127.0.0.1:{self.proxy.port}"
        self.password_file = directory / "password"
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)

    def stored(self) -> list[Any]:
        out = []
        for _, _, data in self.server.stored(STREAM):
            o = json.loads(data)
            out.append(StoredReading(o["id"], o["sensor"], dict(o["payload"])))
        return out

    def close_server(self) -> None:
        self.server.close()


class TestNatsContract(SinkContract):
    sink_type = "nats"

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> Iterator[JetStreamEndpoint]:
        if reason := missing():
            pytest.skip(reason)
        endpoint = JetStreamEndpoint(tmp_path / "nats")
        yield endpoint
        endpoint.close()

    def sink_table(self, endpoint: Any) -> dict[str, Any]:
        return {
            "url": endpoint.url,
            "subject": "contract.{device_id}",
            "username": USER,
            "password_file": str(endpoint.password_file),
        }

    def secret_table(self, secret: str, tmp_path: Path) -> dict[str, Any] | None:
        path = tmp_path / "nats-password"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        return {"username": USER, "password_file": str(path)}
