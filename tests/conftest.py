"""Fixtures shared across the suite: real artifacts built once per machine, a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Helpers importable from any test directory (``from support import zlh, free_port, …``).
from support import CACHE_DIR, copy_catalog_entry, serve_store, zlh
from zlh.schemas import ArtifactKind

SRC = Path(__file__).resolve().parents[1] / "src"

# Platforms made by tests keep no warm pool unless a test asks for one (tests/api/test_pool.py):
# the suite counts containers and vmids. Child processes (`zlh up`) inherit it.
os.environ.setdefault("ZLH_WARM_POOL", "0")


@pytest.fixture(scope="session")
def node_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding real Node runtimes built by ``zlh artifacts build node``: 22 (the
    default) and 24, so a container can change versions."""
    store = tmp_path_factory.mktemp("node-store")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for version in ("22", "24"):
        args = ("--version", version, "--store", str(store), "--cache-dir", str(CACHE_DIR))
        zlh("artifacts", "build", "node", *args)
    return store


@pytest.fixture(scope="session")
def node_server(node_store: Path) -> Iterator[str]:
    """Base URL of ``zlh artifacts serve`` over ``node_store``."""
    yield from serve_store(node_store)


@pytest.fixture(scope="session")
def code_server_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding real code-server (with its own Node 24 as ``lib/node``), built by
    ``zlh artifacts build code-server`` (~3.5 min cold, cached in CACHE_DIR afterwards)."""
    store = tmp_path_factory.mktemp("code-server-store")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    zlh("artifacts", "build", "code-server", "--store", str(store), "--cache-dir", str(CACHE_DIR))
    return store


@pytest.fixture(scope="session")
def ide_store(
    node_store: Path, code_server_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One store with real Node 22 (the default) and code-server: the portal's default
    request, what a warm pool holds."""
    store = tmp_path_factory.mktemp("ide-store")
    copy_catalog_entry(node_store, store, ArtifactKind.RUNTIME, "node")
    copy_catalog_entry(code_server_store, store, ArtifactKind.ADDON, "code-server")
    return store


# A cold code-server build (npm compiles native modules) takes minutes on a 2-core machine; the
# first test that asks for it pays inside its own timeout, so those tests get a longer one.
CODE_SERVER_BUILD_TIMEOUT_S = 2400


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compiled modules (setup.py) shadow their sources: refuse to test edits they do not have
    (``make bootstrap`` recompiles them when they are older, as ``make test`` does first)."""
    stale = [
        str(so.relative_to(SRC))
        for so in SRC.rglob("*.so")
        for suffix in (".py", ".pxd")  # scan.pxd types the Cython-compiled scan.py
        if (source := so.with_name(so.name.split(".")[0] + suffix)).exists()
        and source.stat().st_mtime > so.stat().st_mtime
    ]
    if stale:
        pytest.exit(
            f"compiled modules older than their sources, so they would test old code: "
            f"{', '.join(stale)}. Recompile them with `make bootstrap`",
            returncode=2,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Browser tests last: Playwright's sync API keeps an event loop running in the main thread
    # for the rest of the session, and asyncio.run() refuses to start beside it.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
    for item in items:
        if "code_server_store" in getattr(item, "fixturenames", ()):
            current = item.get_closest_marker("timeout")
            if current is None or current.args[0] < CODE_SERVER_BUILD_TIMEOUT_S:
                item.add_marker(pytest.mark.timeout(CODE_SERVER_BUILD_TIMEOUT_S), append=False)


@pytest.fixture(autouse=True)
def _umask_kept() -> Iterator[None]:
    """Commands run in-process make the umask private (077), as they must for a real run;
    the next test gets the umask it started with."""
    before = os.umask(0o022)
    os.umask(before)
    yield
    os.umask(before)
