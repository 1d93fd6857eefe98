"""The sink contract suite against the postgres sink and a real PostgreSQL (exactly once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilog.testing import postgres as pg_server
from pilog.testing import sink_contract as contract
from pilog.testing.postgres import PostgresServer
from pilog.testing.tcp_proxy import ProxiedEndpoint, TcpProxy

USER, PASSWORD = "contract", "contract-pw"
TABLE = "pilog_readings"


class PostgresEndpoint(ProxiedEndpoint):
    """A PostgreSQL server; the sink reaches it through a proxy, the checks go direct."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.proxy = TcpProxy(("127.0.0.1", server.port))
        self.url = f"postgresql://{USER}@127.0.0.1:{self.proxy.port}/pilog"

    def stored(self) -> list[Any]:
        if not self.server.sql(f"SELECT to_regclass('{TABLE}')", dbname="pilog")[0][0]:
            return []
        rows = self.server.sql(f"SELECT id, sensor, payload FROM {TABLE}", dbname="pilog")
        return [contract.StoredReading(r[0], r[1], dict(r[2])) for r in rows]

    def close_server(self) -> None:
        self.server.close()


class TestPostgresContract(contract.SinkContract):
    sink_type = "postgres"
    # jsonb keeps numbers as exact decimals without a float/int tag: 1e300 reads back as an
    # integer and -0.0 as 0 (the sink's README says so); every other edge value comes back.
    kept_fields = ("sum_c", "tiny", "count", contract.NON_ASCII_FIELD)

    @pytest.fixture
    def endpoint(self, tmp_path: Path) -> Iterator[PostgresEndpoint]:
        if reason := pg_server.missing():
            pytest.skip(reason)
        server = PostgresServer.create()
        server.start()
        server.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        server.sql(f"CREATE DATABASE pilog OWNER {USER}")
        endpoint = PostgresEndpoint(server)
        yield endpoint
        endpoint.close()

    def sink_table(self, endpoint: Any) -> dict[str, Any]:
        path = Path(endpoint.server.home) / "password"
        path.write_text(PASSWORD + "\n")
        path.chmod(0o600)
        return {"url": endpoint.url, "password_file": str(path)}

    def secret_table(self, secret: str, tmp_path: Path) -> dict[str, Any] | None:
        path = tmp_path / "pg-password"
        path.write_text(secret + "\n")
        path.chmod(0o600)
        return {"password_file": str(path)}
