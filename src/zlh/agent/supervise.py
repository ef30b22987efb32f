"""Keeps one long-running process up: restart with backoff, give up on a crash loop.

A process that exits is started again after a backoff that doubles with each *fast* exit (one
within ``fast_exit_s`` of its start); ``max_fast_exits`` fast exits in a row mean it cannot run
here, and the supervisor stops trying and says why (exit code and the last lines it printed).

The pid (with the kernel's start time, so a recycled pid is never mistaken for ours) is kept in
a pid file. An agent that was killed leaves its children running; the next agent *adopts* a
live process from the pid file instead of starting a second one that would fight it for the
port, watches it, and starts a fresh one when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zlh.agent.runas import DevIdentity, start_in_as_child

__all__ = ["ProcessSpec", "Supervisor", "as_user", "run_once"]

log = logging.getLogger("zlh.agent")

_TAIL_BYTES = 2048


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: DevIdentity | None = None  # None: run as the agent's own user


def as_user(user: DevIdentity | None) -> dict[str, Any]:
    """``create_subprocess_exec`` keywords that run the child as ``user`` (none for ourselves)."""
    if user is None or user.is_current:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": list(user.groups)}


async def run_once(
    argv: Sequence[str], *, timeout_s: float, env: dict[str, str], user: DevIdentity | None = None
) -> tuple[int, str]:
    """Run a short command to its end: (exit code, its output). Killed, then TimeoutError,
    when it takes longer than ``timeout_s``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        **as_user(user),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace").strip()


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks), None if no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str) -> bool:
    return _start_time(pid) == started


async def _wait_exit(pid: int, started: str, timeout_s: float | None) -> bool:
    """Wait (on a pidfd, no polling) until the process is gone; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not _alive(pid, started):
            return True
        loop = asyncio.get_running_loop()
        gone: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda: None if gone.done() else gone.set_result(None))
        try:
            await asyncio.wait_for(gone, timeout_s)
        except TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)
        return True
    finally:
        os.close(fd)


class Supervisor:
    def __init__(
        self,
        spec: ProcessSpec,
        *,
        pid_file: Path,
        log_file: Path,
        max_fast_exits: int = 5,
        fast_exit_s: float = 10.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.spec = spec
        self.pid_file = pid_file
        self.log_file = log_file
        self.max_fast_exits = max_fast_exits
        self.fast_exit_s = fast_exit_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.restarts = 0
        self.gave_up: str | None = None
        self.pid: int | None = None
        self._started: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """Set by :meth:`stop` while the loop awaits (a property so checks are not narrowed)."""
        return self._stopping

    @property
    def active(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start supervising (idempotent while active)."""
        if self.active:
            return
        self._stopping = False
        self.gave_up = None
        self._task = asyncio.create_task(self._loop(), name=f"supervise-{self.spec.name}")

    async def stop(self, *, timeout_s: float = 10.0) -> None:
        """Stop the process (TERM, then KILL after ``timeout_s``) and the supervision."""
        self._stopping = True
        pid, started = self.pid, self._started
        task, self._task = self._task, None
        if pid is not None and started is not None and _alive(pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            if not await _wait_exit(pid, started, timeout_s):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            if task is not None:
                # Let the loop reap its child (it returns once it sees `stopping`): a child
                # cancelled away unreaped would linger as a zombie.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(task), timeout_s)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.pid_file.unlink(missing_ok=True)
        self.pid = None

    def _adoptable(self) -> tuple[int, str] | None:
        try:
            record = json.loads(self.pid_file.read_text())
            pid, started, argv = int(record["pid"]), str(record["started"]), record["argv"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if argv != list(self.spec.argv) or not _alive(pid, started):
            return None
        return pid, started

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        argv, cwd = start_in_as_child(self.spec.argv, self.spec.cwd, self.spec.user)
        with self.log_file.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=self.spec.env,
                cwd=cwd,
                start_new_session=True,
                **as_user(self.spec.user),
            )
        started = _start_time(proc.pid) or ""
        self.pid, self._started = proc.pid, started
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": proc.pid, "started": started, "argv": list(self.spec.argv)}
        self.pid_file.write_text(json.dumps(record))
        return proc

    async def _loop(self) -> None:
        fast_exits = 0
        adopted = self._adoptable()
        while not self._stopping:
            begun = time.monotonic()
            if adopted is not None:
                self.pid, self._started = adopted
                log.info("%s: adopted running pid %d", self.spec.name, adopted[0])
                await _wait_exit(*adopted, None)
                code: int | None = None
                adopted = None
            else:
                try:
                    proc = await self._spawn()
                except OSError as exc:
                    self.gave_up = f"{self.spec.name} cannot start: {exc}"
                    return
                code = await proc.wait()
            if self.stopping:
                return
            self._kill_group()
            fast_exits = fast_exits + 1 if time.monotonic() - begun < self.fast_exit_s else 0
            how = "exited" if code is None else f"exited with code {code}"
            log.warning("%s %s", self.spec.name, how)
            if fast_exits >= self.max_fast_exits:
                self.gave_up = (
                    f"{self.spec.name} {how} {fast_exits} times within "
                    f"{self.fast_exit_s:g}s of starting; gave up. Last output: {self.tail()!r}"
                )
                return
            self.restarts += 1
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** max(fast_exits - 1, 0))
            await asyncio.sleep(delay if fast_exits else 0.0)

    def _kill_group(self) -> None:
        """Children left behind by the exited process would hold its port: end them too."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def tail(self) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-5:])

    def running_pid(self) -> int | None:
        if self.pid is not None and self._started is not None and _alive(self.pid, self._started):
            return self.pid
        return None
