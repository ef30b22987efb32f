"""Helpers shared by tests in every directory: import them with ``from support import …``.

(They live here, not in conftest.py: several conftest.py files share the module name
``conftest``, so ``from conftest import …`` finds whichever was imported last.)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
