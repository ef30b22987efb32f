"""``GET /console``: a WebSocket attached to a PTY running the dev user's login shell.

Protocol (one shell per socket, several sockets at once up to a per-agent cap):

* Binary frames carry terminal bytes, both ways, untouched. The server never decodes the
  shell's output: programs write UTF-8, and any frame boundary may fall inside a multi-byte
  character, which terminal emulators (xterm.js fed ``Uint8Array``) reassemble themselves;
  decoding here would either split characters or hold bytes back.
* Text frames carry JSON control messages. Client to server:
  ``{"type": "resize", "rows": R, "cols": C}`` (``TIOCSWINSZ``; the shell gets ``SIGWINCH``) and
  ``{"type": "input", "data": "text"}`` (written UTF-8 encoded, for clients without binary
  frames). Server to client: ``{"type": "exit", "code": N}`` when the shell exits (128+signal if
  it was killed), ``{"type": "error", "message": "..."}`` for a control message it refused.

The shell is ``<shell> -l`` started through ``setsid --ctty`` so it leads its own session with the
PTY as controlling terminal (job control, Ctrl-C). The dev user's identity is applied by
``subprocess`` itself (``user=``, ``group=``, ``extra_groups=``) between fork and exec, so no Python
runs in the child. In a real container ``-l`` sources ``/etc/profile`` and ``/etc/profile.d``,
which puts the installed runtimes on ``PATH``. When the socket closes, every process of the
shell's session gets ``SIGHUP``, then ``SIGKILL`` after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import struct
import termios
from collections.abc import Mapping
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from zlh.agent.files import NotProvisioned
from zlh.agent.runas import DevEnvironmentSource, DevIdentity, start_in_as_child
from zlh.errors import ZlhError

__all__ = ["Console", "ConsoleRoutes"]

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
READ_BYTES = 64 * 1024
HANGUP_GRACE_S = 2.0
MAX_DIMENSION = 1000


class TooManyConsoles(ZlhError):
    status_code = 429


class BadConsoleRequest(ZlhError):
    status_code = 400


class ConsoleFailed(ZlhError):
    status_code = 500


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _dimension(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
        raise BadConsoleRequest(
            f"{name} must be an integer from 1 to {MAX_DIMENSION}, got {value!r}"
        )
    return value


def _session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (field 6 of /proc/<pid>/stat, after the command)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat_file:
                fields = stat_file.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(entry))
    return members


class Console:
    """One shell on one PTY, attached to one WebSocket."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self.master = master
        self._closed = False

    @classmethod
    async def spawn(
        cls,
        *,
        workspace: Path,
        identity: DevIdentity,
        rows: int,
        cols: int,
        env: Mapping[str, str],
        setsid: str,
    ) -> Console:
        master, slave = os.openpty()
        try:
            _set_size(master, rows, cols)
            os.set_blocking(master, False)
            who: dict[str, object] = {}
            if not identity.is_current:
                os.fchown(slave, identity.uid, -1)
                who = {"user": identity.uid, "group": identity.gid}
                who["extra_groups"] = list(identity.groups)
            argv, cwd = start_in_as_child(
                (setsid, "--ctty", identity.shell, "-l"), workspace, identity
            )
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=dict(env),
                **who,  # type: ignore[arg-type]
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return cls(process, master)

    # -- the event loop's readiness, one wait at a time ------------------------------------------

    async def _ready(self, *, write: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        add, remove = (
            (loop.add_writer, loop.remove_writer)
            if write
            else (
                loop.add_reader,
                loop.remove_reader,
            )
        )
        add(self.master, _settle, ready)
        try:
            await ready
        finally:
            remove(self.master)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view) :]
            except BlockingIOError:
                await self._ready(write=True)

    def _read_now(self) -> bytes | None:
        """What the PTY has right now; None once the shell's side is closed (EIO)."""
        try:
            return os.read(self.master, READ_BYTES) or None
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:
                return None
            raise

    async def _pump_output(self, ws: web.WebSocketResponse) -> None:
        while True:
            await self._ready(write=False)
            data = self._read_now()
            if data is None:
                return
            if data:
                await ws.send_bytes(data)

    async def _pump_input(self, ws: web.WebSocketResponse) -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await self.write(message.data)
            elif message.type == WSMsgType.TEXT:
                await self._control(ws, message.data)

    async def _control(self, ws: web.WebSocketResponse, text: str) -> None:
        try:
            command = json.loads(text)
            kind = command.get("type") if isinstance(command, dict) else None
            if kind == "resize":
                rows = _dimension(command.get("rows"), "rows")
                _set_size(self.master, rows, _dimension(command.get("cols"), "cols"))
            elif kind == "input" and isinstance(command.get("data"), str):
                await self.write(command["data"].encode("utf-8", "surrogatepass"))
            else:
                raise BadConsoleRequest(f"unknown control message {text[:100]!r}")
        except (ValueError, BadConsoleRequest) as exc:
            message = exc.message if isinstance(exc, BadConsoleRequest) else f"not JSON: {exc}"
            await ws.send_json({"type": "error", "message": message})

    async def attach(self, ws: web.WebSocketResponse) -> None:
        """Relay until the shell exits (then report its code) or the client goes away."""
        output = asyncio.create_task(self._pump_output(ws))
        exited = asyncio.create_task(self.process.wait())
        client = asyncio.create_task(self._pump_input(ws))
        try:
            await asyncio.wait({exited, client}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done() and not ws.closed:
                output.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await output
                while rest := self._read_now():
                    await ws.send_bytes(rest)
                code = exited.result()
                await ws.send_json({"type": "exit", "code": code if code >= 0 else 128 - code})
                await ws.close()
        finally:
            for task in (output, exited, client):
                task.cancel()
            await asyncio.gather(output, exited, client, return_exceptions=True)

    async def close(self) -> None:
        """Hang up the shell's whole session, kill what outlives the grace period, reap."""
        if self._closed:
            return
        self._closed = True
        sid = self.process.pid
        shell = [sid] if self.process.returncode is None else []
        await _hang_up(_pidfds([*shell, *_session_members(sid)]), HANGUP_GRACE_S)
        await self.process.wait()
        os.close(self.master)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _pidfds(pids: list[int]) -> list[int]:
    """Descriptors of the live ``pids``; signalling through them cannot hit a recycled pid."""
    fds = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds.append(os.pidfd_open(pid))
    return fds


async def _hang_up(pidfds: list[int], grace_s: float) -> None:
    """SIGHUP each process, wait up to ``grace_s`` for all to exit, SIGKILL the rest."""
    loop = asyncio.get_running_loop()
    exits = []
    try:
        for fd in pidfds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGHUP)
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _settle, exited)
            exits.append(exited)
        if exits:
            await asyncio.wait(exits, timeout=grace_s)
        for fd in pidfds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        for fd in pidfds:
            loop.remove_reader(fd)
            os.close(fd)


class ConsoleRoutes:
    """``GET /console``'s handler and the open sessions; ``zlh.agent.lazy_routes`` mounts it."""

    def __init__(
        self,
        *,
        environment: DevEnvironmentSource,
        max_consoles: int,
        env: Mapping[str, str],
        setsid: str,
    ) -> None:
        self.environment = environment
        self.max_consoles = max_consoles
        self.setsid = setsid
        self.extra_env = dict(env)
        self.sessions: dict[Console, web.WebSocketResponse] = {}
        self._starting = 0

    async def open(self, request: web.Request) -> web.StreamResponse:
        if len(self.sessions) + self._starting >= self.max_consoles:
            raise TooManyConsoles(f"{self.max_consoles} consoles are open already; close one first")
        self._starting += 1
        try:
            try:
                rows = _dimension(int(request.query.get("rows", "24")), "rows")
                cols = _dimension(int(request.query.get("cols", "80")), "cols")
            except ValueError as exc:
                raise BadConsoleRequest(f"rows and cols must be integers: {exc}") from exc
            console = await self._spawn(rows, cols)
        finally:
            self._starting -= 1
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1024 * 1024)
        self.sessions[console] = ws
        try:
            await ws.prepare(request)
            await console.attach(ws)
        finally:
            del self.sessions[console]
            await console.close()
        return ws

    async def _spawn(self, rows: int, cols: int) -> Console:
        dev = self.environment()
        if dev is None:
            raise NotProvisioned("the dev environment is not set up yet; provision the container")
        who = dev.identity
        env = {
            "HOME": str(who.home),
            "USER": who.name,
            "LOGNAME": who.name,
            "SHELL": who.shell,
            "TERM": "xterm-256color",
            "LANG": "C.UTF-8",
            "PATH": DEFAULT_PATH,
            **self.extra_env,
        }
        try:
            return await Console.spawn(
                workspace=dev.workspace,
                identity=who,
                rows=rows,
                cols=cols,
                env=env,
                setsid=self.setsid,
            )
        except OSError as exc:
            raise ConsoleFailed(f"cannot start a shell in {dev.workspace}: {exc}") from exc

    async def shutdown(self, _app: web.Application) -> None:
        for ws in list(self.sessions.values()):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"agent shutting down")
