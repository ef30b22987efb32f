"""Fixtures shared across the suite: real artifacts built once per machine, a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Registry downloads (wheels, npm tarballs) are cached here across runs; CI starts empty.
CACHE_DIR = Path(os.environ.get("ZLH_TEST_CACHE", REPO / ".data" / "test-cache"))
ZLH = [sys.executable, "-m", "zlh.cli"]


def zlh(*args: str, check: bool = True, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run the real ``zlh`` CLI in a subprocess, the way an operator would."""
    result = subprocess.run([*ZLH, *args], capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(f"zlh {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result  # type: ignore[no-any-return]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, *, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll until something accepts on host:port (not a sleep: returns as soon as it listens)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on {host}:{port} within {timeout_s}s")


@pytest.fixture(scope="session")
def node_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding a real Node runtime built by ``zlh artifacts build node``."""
    store = tmp_path_factory.mktemp("node-store")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    zlh("artifacts", "build", "node", "--store", str(store), "--cache-dir", str(CACHE_DIR))
    return store


def serve_store(store: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [*ZLH, "artifacts", "serve", "--store", str(store), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def node_server(node_store: Path) -> Iterator[str]:
    """Base URL of ``zlh artifacts serve`` over ``node_store``."""
    yield from serve_store(node_store)
