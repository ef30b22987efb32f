"""Front workers 1..N-1: child processes of the API (``python -m zlh.proxy.worker``).

``zlh up --workers N`` (setting ``front_workers``) runs the public front on N processes sharing
its ports with ``SO_REUSEPORT``; worker 0 is the front in the API's own process. This module
starts the others, restarts one that dies, serves them the route feed on
``<data dir>/run/feed.sock`` (zlh.feedwire) and takes back what they report: IDE opens (the
audit log), container use (idle auto-stop) and their counters (summed into ``/metrics``).

Who may speak on the feed socket: it is mode 0600 in the private run directory, and a
connection is served only when its peer (``SO_PEERCRED``) is one of the worker processes
started here, so another local user cannot read the routes nor forge audit or metrics
messages, and a process of the platform's own user that is not a worker is refused too.
Workers die with this process (``PR_SET_PDEATHSIG``, and the feed socket closing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from zlh import feedwire
from zlh.proxy.serving import Scheduling
from zlh.routefeed import RouteFeed

__all__ = ["FrontWorkers", "WorkerConfig", "default_workers"]

log = logging.getLogger("zlh.api.frontworkers")

MAX_DEFAULT_WORKERS: Final = 8
# A worker that dies is started again after this long, doubled while it keeps dying young.
_RESTART_S: Final = 0.5
_RESTART_MAX_S: Final = 10.0
_YOUNG_S: Final = 10.0
_STOP_GRACE_S: Final = 5.0
_ACTIVITY_KINDS: Final = frozenset({"ide", "terminal", "preview"})
_CLASSES: Final = ("ide", "preview", "api")


def default_workers() -> int:
    """One front worker per core, at most :data:`MAX_DEFAULT_WORKERS`."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What every child worker is given (on its stdin)."""

    listen: tuple[str, int]
    ide_listen: tuple[str, int] | None
    api_upstream: str
    settings: dict[str, Any]  # the front's ProxySettings, as JSON
    key: bytes
    issuer: str | None
    run_dir: Path  # where the feed socket goes
    ledger: Path  # the tickets taken (zlh.proxy.tickets), an existing private directory
    drain_timeout_s: float
    ticket_db: str | None = None  # the replicas' database, which holds the tickets taken then
    scheduling: Scheduling = "batch"


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    # Its last report: route class -> [requests, bytes in, bytes out, open WebSockets].
    classes: dict[str, list[int]] = field(default_factory=dict)
    serving: bool = False
    restarts: int = 0


class FrontWorkers:
    def __init__(
        self,
        count: int,
        config: WorkerConfig,
        feed: RouteFeed,
        *,
        on_ide_open: Callable[[str, int], None],
        on_activity: Callable[[int, str], None],
    ) -> None:
        """``count`` child workers (``front_workers`` - 1)."""
        self._config = config
        self._feed = feed
        self._on_ide_open = on_ide_open
        self._on_activity = on_activity
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self.socket_path = config.run_dir / "feed.sock"
        self._server: asyncio.Server | None = None
        self._supervisors: list[asyncio.Task[None]] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._all_serving = asyncio.Event()

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        previous = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._accept, str(self.socket_path), limit=feedwire.LINE_LIMIT
            )
        finally:
            os.umask(previous)
        os.chmod(self.socket_path, 0o600)
        self._supervisors = [asyncio.create_task(self._supervise(w)) for w in self.workers]

    def drain(self) -> None:
        """Ask every worker to drain (SIGTERM): they exit once their WebSockets are done."""
        self._stopping = True
        for worker in self.workers:
            process = worker.process
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)

    async def wait_drained(self, timeout_s: float) -> None:
        """Until every worker has exited or ``timeout_s`` passed."""
        running = [w.process.wait() for w in self.workers if w.process is not None]
        if running:
            await asyncio.wait(
                [asyncio.ensure_future(r) for r in running], timeout=max(timeout_s, 0.01)
            )

    async def close(self) -> None:
        """Stop every worker (SIGTERM, SIGKILL after a grace), the feed socket with them."""
        self._stopping = True
        self.drain()
        await self.wait_drained(_STOP_GRACE_S)
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.kill()
                await worker.process.wait()
        for task in (*self._supervisors, *self._connections):
            task.cancel()
        if self._server is not None:
            self._server.close()
        self.socket_path.unlink(missing_ok=True)

    async def serving(self) -> None:
        """Until every worker listens (benchmarks wait for it before they start)."""
        await self._all_serving.wait()

    def stopping(self) -> bool:
        """Whether the workers are being stopped (no more restarts)."""
        return self._stopping

    # ---------------------------------------------------------------- reports
    def totals(self) -> dict[str, list[int]]:
        """Route class -> [requests, bytes in, bytes out, open WebSockets], summed over the
        child workers' last reports."""
        sums = {name: [0, 0, 0, 0] for name in _CLASSES}
        for worker in self.workers:
            for name, values in worker.classes.items():
                sums[name] = [a + b for a, b in zip(sums[name], values, strict=True)]
        return sums

    def requests_by_worker(self) -> dict[int, int]:
        return {w.index: sum(v[0] for v in w.classes.values()) for w in self.workers}

    # ---------------------------------------------------------------- internals
    async def _supervise(self, worker: _Worker) -> None:
        delay = _RESTART_S
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            worker.serving = False
            self._all_serving.clear()
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "zlh.proxy.worker", stdin=asyncio.subprocess.PIPE
            )
            assert worker.process.stdin is not None
            worker.process.stdin.write(self._config_line(worker.index))
            worker.process.stdin.close()
            code = await worker.process.wait()
            if self.stopping():
                return
            worker.restarts += 1
            young = loop.time() - started < _YOUNG_S
            delay = min(delay * 2, _RESTART_MAX_S) if young else _RESTART_S
            log.warning(
                "front worker %d exited with %s; starting it again in %.1f s",
                worker.index,
                code,
                delay,
            )
            await asyncio.sleep(delay)

    def _config_line(self, index: int) -> bytes:
        config = self._config
        return json.dumps(
            {
                "index": index,
                "listen": config.listen,
                "ide_listen": config.ide_listen,
                "api_upstream": config.api_upstream,
                "feed_socket": str(self.socket_path),
                "ledger": str(config.ledger),
                "ticket_db": config.ticket_db,
                "settings": config.settings,
                "key": config.key.hex(),
                "issuer": config.issuer,
                "drain_timeout_s": config.drain_timeout_s,
                "scheduling": config.scheduling,
            }
        ).encode()

    def _worker_of(self, writer: asyncio.StreamWriter) -> _Worker | None:
        sock: socket.socket = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _, _ = struct.unpack("3i", creds)
        for worker in self.workers:
            if worker.process is not None and worker.process.pid == pid:
                return worker
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker = self._worker_of(writer)
        if worker is None:
            log.warning("feed socket: refused a process that is not a front worker")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sender = asyncio.create_task(_send_feed(self._feed, writer))
        try:
            while line := await reader.readline():
                self._received(worker, feedwire.decode(line))
        except (feedwire.WireError, ValueError, KeyError, TypeError) as exc:
            log.warning("front worker %d: bad message (%s); dropping it", worker.index, exc)
        except OSError:
            pass
        finally:
            self._connections.discard(task)
            sender.cancel()
            writer.close()

    def _received(self, worker: _Worker, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "stats":
            classes = message["classes"]
            worker.classes = {
                name: [int(v) for v in classes[name]][:4] for name in _CLASSES if name in classes
            }
        elif kind == "ide_open":
            user_id, vmid = str(message["user_id"]), int(message["vmid"])
            self._on_ide_open(user_id, vmid)
        elif kind == "activity":
            vmid, activity = int(message["vmid"]), str(message["kind"])
            if activity in _ACTIVITY_KINDS:
                self._on_activity(vmid, activity)
        elif kind == "hello":
            worker.serving = True
            if all(w.serving for w in self.workers):
                self._all_serving.set()
            log.info("front worker %d serving (pid %s)", worker.index, message.get("pid"))
        else:
            raise feedwire.WireError(f"unknown message {kind!r}")


async def _send_feed(feed: RouteFeed, writer: asyncio.StreamWriter) -> None:
    """The feed to one worker until it is gone (the reading side then ends the connection)."""
    with contextlib.suppress(OSError):
        await feedwire.send_feed(feed, writer)
