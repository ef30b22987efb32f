"""Fixtures of the API tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pg_cluster
import pytest
from headscale_server import HeadscaleServer, serve_headscale

from zlh.api import accounts
from zlh.api.db import Database
from zlh.backends.process import ProcessBackend


@pytest.fixture
def headscale() -> Iterator[HeadscaleServer]:
    """A fresh in-test Headscale per test (starting one takes a few milliseconds)."""
    yield from serve_headscale(HeadscaleServer())


@pytest.fixture(autouse=True)
def no_agent_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """The process backend's agents (and their code-server) outlive ``zlh up`` by design: a
    test that ran one leaves none behind, whether it ended with a delete or failed before."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    base: Path = request.getfixturevalue("tmp_path")
    yield
    for process_dir in [*base.glob("process"), *base.glob("*/process")]:
        backend = ProcessBackend(data_dir=process_dir.parent)
        for info in asyncio.run(backend.list()):
            asyncio.run(backend.destroy(info.vmid))


@pytest.fixture(scope="session", autouse=True)
def cheap_password_hashing() -> None:
    """Argon2 at its cheapest: the tests hash hundreds of passwords on 2 shared cores."""
    accounts.configure_hashing(time_cost=1, memory_kib=64, parallelism=1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the session (see pg_cluster)."""
    with pg_cluster.cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Storage tests run on both databases: a fresh SQLite file or a fresh PostgreSQL db."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'zlh.db'}"
    server: str = request.getfixturevalue("postgres_server")
    return pg_cluster.fresh_database(server)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database on ``db_url``; its connections are closed afterwards."""
    database = Database(db_url)
    database.migrate()
    yield database
    database.dispose()
