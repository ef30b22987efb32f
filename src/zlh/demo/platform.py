"""``zlh up`` as a child process: started, waited for, and stopped SIGTERM-then-KILL.

The child runs in its own session so the terminal's Ctrl-C reaches only ``zlh demo``, which
then stops the platform in order instead of every process at once. Its output goes to a log
file in the data dir; the last lines are shown when it fails.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from zlh.errors import ZlhError

__all__ = ["UP_LOG", "Platform", "running_platform"]

UP_LOG = "zlh-up.log"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20


@dataclass
class Platform:
    proc: subprocess.Popen[bytes]
    base_url: str  # where this host reaches the public front
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ZlhError(f"zlh up exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(f"  | {line}" for line in lines) + f"\n  (whole log: {self.log})"

    def wait_until_serving(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the API answers through the public address (``/api/auth/me``: 401)."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            try:
                httpx.get(f"{self.base_url}/api/auth/me", timeout=2.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise ZlhError(
                        f"zlh up did not answer at {self.base_url} within {timeout_s:.0f}s:\n"
                        f"{self.log_tail()}"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; whether it stopped gracefully
        (exit status 0: ``zlh up`` closes the front and removes its socket first)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(STOP_TIMEOUT_S) == 0
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return False
        return self.proc.returncode == 0


@contextmanager
def running_platform(argv: list[str], *, base_url: str, log: Path) -> Iterator[Platform]:
    """``zlh <argv>`` running until the block ends, however it ends."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zlh.cli", *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    platform = Platform(proc, base_url, log)
    try:
        yield platform
    finally:
        platform.stop()
