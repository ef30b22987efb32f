"""The agent as a local subprocess: for the test suite and for trying the platform without root.

**No isolation.** A "container" here is ``zlh agent --root <data>/process/<vmid>/root``
running as the API's own user on the host: its runtimes, its code-server and its dev user's
shell can read and write everything that user can. Never offer it to people you do not trust.

Each container gets its own free host ports for the agent and for code-server (the agent is
told to bind addons on 127.0.0.1), so many run side by side. Everything the backend knows is
in ``<data>/process/<vmid>/state.json`` (ports, pid), so ``list()`` and ``status()`` find
containers again after an API restart. ``stop`` signals the agent's process group and every
process below it (code-server runs in its own session), SIGTERM first, SIGKILL after the
timeout.

``rebuild`` keeps ``root/home/dev`` and removes everything else under ``root`` (links are
removed, never followed), then writes the new agent secret: the home is renamed into
``<data>/process/<vmid>/rebuild/`` first and back last, so an interrupted rebuild loses nothing,
refuses to start, and the next rebuild finishes it. There is no template: ``template`` is None.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from zlh.atomic import write_atomically
from zlh.backends.base import (
    Backend,
    BackendError,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    RunState,
    Usage,
)

__all__ = ["ProcessBackend"]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def _free_port(avoid: set[int]) -> int:
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind((LOOPBACK, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise BackendError("no free local port found")


def _alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as dead."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _stat_fields(pid: int | str) -> list[str]:
    """``/proc/<pid>/stat`` after the command name: field 3 (state) is index 0."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _children() -> dict[int, list[int]]:
    """Every process's children, from one walk of /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry.name)[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below ``pid`` (the agent starts code-server in a session of its own)."""
    children = _children() if children is None else children
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


_TICKS_PER_S: Final = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


def _tree_usage(pids: list[int]) -> Usage:
    """CPU time (user + system, of the processes and their reaped children) and resident
    memory summed over ``pids``; a process gone meanwhile counts for nothing."""
    ticks = pages = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        # utime, stime, cutime, cstime: fields 14-17 of proc(5), 11-14 here.
        ticks += sum(int(f) for f in fields[11:15])
        pages += resident
    return Usage(cpu_seconds=ticks / _TICKS_PER_S, memory_bytes=pages * _PAGE_SIZE)


def _signal_tree(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)  # each of them may lead a group (the agent, code-server)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class ProcessBackend(Backend):
    """``zlh agent`` subprocesses with their own root dirs and ports. NO isolation."""

    name = "process"

    def __init__(self, *, data_dir: Path, agent_command: list[str] | None = None) -> None:
        self.base = data_dir.resolve() / "process"
        self.base.mkdir(parents=True, exist_ok=True)
        self.agent_command = agent_command or [sys.executable, "-m", "zlh.cli", "agent"]
        log.warning(
            "process backend: containers are plain local processes with NO isolation "
            "(state under %s); for tests and trying zlh out only",
            self.base,
        )

    def _dir(self, vmid: int) -> Path:
        return self.base / str(vmid)

    def _read(self, vmid: int) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads((self._dir(vmid) / "state.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise BackendError(f"container {vmid}: unreadable state.json ({exc})") from exc
        return state

    def _write(self, vmid: int, state: dict[str, Any]) -> None:
        write_atomically(self._dir(vmid) / "state.json", json.dumps(state))

    def _running_pid(self, vmid: int, state: dict[str, Any]) -> int | None:
        """The agent's pid if it still runs *and* is ours (pids get reused after a reboot)."""
        pid = state.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if str(self._dir(vmid) / "agent-token").encode() in cmdline else None

    def _info(self, vmid: int) -> ContainerInfo:
        state = self._read(vmid)
        if state is None:
            return ContainerInfo(vmid=vmid, state=RunState.ABSENT)
        running = self._running_pid(vmid, state) is not None
        return ContainerInfo(
            vmid=vmid,
            state=RunState.RUNNING if running else RunState.STOPPED,
            address=LOOPBACK,
            agent_port=state["agent_port"],
            code_server_port=state["code_server_port"],
            node=socket.gethostname(),
        )

    def _ports_in_use(self) -> set[int]:
        used: set[int] = set()
        for vmid in self._vmids():
            state = self._read(vmid) or {}
            used.update(state.get(k, 0) for k in ("agent_port", "code_server_port"))
        return used

    def _vmids(self) -> list[int]:
        return sorted(int(p.name) for p in self.base.iterdir() if p.name.isdigit())

    # -- the interface ---------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        async with self._lock(spec.vmid):
            directory = self._dir(spec.vmid)
            if directory.exists():
                raise ContainerExists(f"container {spec.vmid} already exists ({directory})")
            used = self._ports_in_use()
            agent_port = _free_port(used)
            code_server_port = _free_port(used | {agent_port})
            try:
                (directory / "root").mkdir(parents=True)
                fd = os.open(directory / "agent-token", os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(spec.agent_secret)
                self._write(
                    spec.vmid,
                    {"agent_port": agent_port, "code_server_port": code_server_port, "pid": None},
                )
            except OSError as exc:
                shutil.rmtree(directory, ignore_errors=True)
                raise BackendError(f"cannot create container {spec.vmid}: {exc}") from exc
            return self._info(spec.vmid)

    async def start(self, vmid: int) -> ContainerInfo:
        async with self._lock(vmid):
            state = self._read(vmid)
            if state is None:
                raise BackendError(f"container {vmid} does not exist")
            if self._running_pid(vmid, state) is not None:
                return self._info(vmid)
            directory = self._dir(vmid)
            if (directory / "rebuild").exists():
                raise BackendError(
                    f"container {vmid} has an unfinished rebuild (its home is kept in "
                    f"{directory / 'rebuild'}): rebuild it again to finish it"
                )
            command = [
                *self.agent_command,
                "--listen",
                f"{LOOPBACK}:{state['agent_port']}",
                "--token-file",
                str(directory / "agent-token"),
                "--root",
                str(directory / "root"),
                "--bind-host",
                LOOPBACK,
            ]
            try:
                proc = _spawn(command, directory / "agent.log")
            except OSError as exc:
                raise BackendError(f"cannot start the agent of {vmid}: {exc}") from exc
            self._write(vmid, {**state, "pid": proc.pid})
            log.info("started agent of %s (pid %s) on port %s", vmid, proc.pid, state["agent_port"])
            return self._info(vmid)

    async def stop(self, vmid: int, *, timeout_s: float = 10.0) -> None:
        async with self._lock(vmid):
            await self._stop(vmid, timeout_s)

    async def _stop(self, vmid: int, timeout_s: float) -> None:
        state = self._read(vmid)
        pid = self._running_pid(vmid, state) if state else None
        if pid is None:
            return
        tree = [pid, *_descendants(pid)]
        _signal_tree(tree, signal.SIGTERM)
        if not await _wait_gone(tree, timeout_s):
            log.warning("agent of %s ignored SIGTERM for %.0fs; killing it", vmid, timeout_s)
            _signal_tree([p for p in tree if _alive(p)], signal.SIGKILL)
            if not await _wait_gone(tree, 5.0):
                raise BackendError(f"container {vmid}: processes survive SIGKILL: {tree}")

    async def rebuild(self, spec: ContainerSpec) -> ContainerInfo:
        async with self._lock(spec.vmid):
            state = self._read(spec.vmid)
            if state is None:
                raise BackendError(f"container {spec.vmid} does not exist")
            if self._running_pid(spec.vmid, state) is not None:
                raise BackendError(f"container {spec.vmid} is running: stop it before rebuilding")
            try:
                await asyncio.to_thread(self._replace_root, spec)
            except OSError as exc:
                raise BackendError(f"cannot rebuild container {spec.vmid}: {exc}") from exc
            return self._info(spec.vmid)

    def _replace_root(self, spec: ContainerSpec) -> None:
        """Everything under the root but ``home/dev`` removed, then the new secret written;
        each step can be repeated (see the module docstring)."""
        directory = self._dir(spec.vmid)
        root, kept = directory / "root", directory / "rebuild"
        home, own = kept / "home", directory / "root" / "home" / "dev"
        kept.mkdir(mode=0o700, exist_ok=True)
        if not os.path.lexists(home) and _is_dir(own):
            os.rename(own, home)
        if os.path.lexists(root):
            shutil.rmtree(root)  # removes links, never follows them
        (root / "home").mkdir(parents=True)
        write_atomically(directory / "agent-token", spec.agent_secret, mode=0o600)
        if os.path.lexists(home):
            os.rename(home, own)
        kept.rmdir()

    async def destroy(self, vmid: int) -> None:
        async with self._lock(vmid):
            if not self._dir(vmid).exists():
                return
            await self._stop(vmid, 5.0)
            await asyncio.to_thread(shutil.rmtree, self._dir(vmid))

    async def status(self, vmid: int) -> ContainerInfo:
        return self._info(vmid)

    async def list(self) -> list[ContainerInfo]:
        infos = [self._info(vmid) for vmid in self._vmids()]
        return [info for info in infos if info.state.exists]

    async def usage(self, vmids: Sequence[int]) -> dict[int, Usage]:
        return await asyncio.to_thread(self._usage, vmids)

    def _usage(self, vmids: Sequence[int]) -> dict[int, Usage]:
        """The agent's process tree of each running container, from one walk of /proc."""
        children = _children()
        found: dict[int, Usage] = {}
        for vmid in vmids:
            try:
                state = self._read(vmid)
            except BackendError:
                continue
            pid = self._running_pid(vmid, state) if state is not None else None
            if pid is not None:
                found[vmid] = _tree_usage([pid, *_descendants(pid, children)])
        return found


def _is_dir(path: Path) -> bool:
    """A directory itself, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _spawn(command: list[str], logfile: Path) -> subprocess.Popen[bytes]:
    with logfile.open("ab") as log_handle:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, for stop()
        )
    # Reap it whenever it exits (also when another backend object stopped it).
    threading.Thread(target=proc.wait, name=f"reap-agent-{proc.pid}", daemon=True).start()
    return proc


async def _wait_gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
