"""A front worker in a process of its own: ``python -m zlh.proxy.worker``, started by the API.

``zlh up --workers N`` runs the front on N processes: worker 0 in the API's own process, and
workers 1..N-1 as children of it (zlh.api.frontworkers), each a whole :class:`Front` on the same
public port and IDE-origin port (``SO_REUSEPORT``: the kernel spreads new connections across
them). A worker follows the API's route feed over ``<data dir>/run/feed.sock``
(zlh.feedwire), takes tickets once among all workers (the ``ledger`` directory, or the
replicas' database: ``ticket_db``), and sends back
what the API keeps: IDE opens (audit), container use (idle auto-stop) and its counters.

It reads its configuration as one JSON object on stdin (the signing key is in it, so it is
never on a command line or in the environment); it listens only after the feed's first
snapshot, so it never answers with routes it does not know yet. It dies with the API: the
kernel sends it SIGKILL when its parent exits (``PR_SET_PDEATHSIG``), and it stops when the feed
socket closes. It runs under ``SCHED_BATCH`` unless told ``"scheduling": "normal"`` (setting
``front_scheduling``; zlh.proxy.serving says why and what it costs). SIGTERM drains it: new
WebSockets get 503, open ones run until they end or ``drain_timeout_s``, then it exits 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, Final

from zlh import feedwire
from zlh.proxy.auth import JwtAuthenticator, Principal
from zlh.proxy.feed import follow_socket
from zlh.proxy.front import Front
from zlh.proxy.routes import RouteTable
from zlh.proxy.serving import run
from zlh.proxy.settings import ProxySettings
from zlh.proxy.ticket_db import DbLedger
from zlh.proxy.tickets import FileLedger, Ledger, TicketDesk

__all__ = ["drain", "main"]

log = logging.getLogger("zlh.proxy.worker")

_PR_SET_PDEATHSIG: Final = 1
_DRAIN_POLL_S: Final = 0.1


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux), and exit now if it already has."""
    parent = os.getppid()
    name = ctypes.util.find_library("c")
    if name:
        ctypes.CDLL(name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        raise SystemExit(0)


def _ledger(config: dict[str, Any]) -> Ledger:
    """The tickets taken: in the replicas' database when there is one, else the host's dir."""
    if config.get("ticket_db"):
        return DbLedger(str(config["ticket_db"]))
    return FileLedger(Path(config["ledger"]))


async def _serve(config: dict[str, Any]) -> int:
    index = int(config["index"])
    key = bytes.fromhex(config["key"])
    issuer = config["issuer"]
    reader, writer = await asyncio.open_unix_connection(
        config["feed_socket"], limit=feedwire.LINE_LIMIT
    )

    def send(message: dict[str, Any]) -> None:
        if not writer.is_closing():
            writer.write(feedwire.encode(message))

    def ide_opened(principal: Principal, vmid: int) -> None:
        send({"t": "ide_open", "user_id": principal.user_id, "vmid": vmid})

    def activity(vmid: int, kind: str) -> None:
        send({"t": "activity", "vmid": vmid, "kind": kind})

    ledger = _ledger(config)
    front = Front(
        ProxySettings.model_validate(config["settings"]),
        RouteTable(),
        JwtAuthenticator(key, issuer=issuer),
        config["api_upstream"],
        tickets=TicketDesk(key, issuer=issuer, ledger=ledger),
        on_ide_open=ide_opened,
        on_activity=activity,
        reuse_port=True,
    )
    known = asyncio.Event()
    drain_asked = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, drain_asked.set)
    loop.add_signal_handler(signal.SIGINT, drain_asked.set)
    follower = asyncio.create_task(
        follow_socket(reader, front.routes, on_snapshot=known.set, on_drain=drain_asked.set)
    )
    stats = asyncio.create_task(_send_stats(front, send))
    try:
        waiting = asyncio.create_task(known.wait())
        await asyncio.wait([waiting, follower], return_when=asyncio.FIRST_COMPLETED)
        if not known.is_set():
            waiting.cancel()
            log.error("front worker %d: the API closed the feed before its snapshot", index)
            return 1
        await front.start(*config["listen"])
        if config["ide_listen"] is not None:
            await front.start_ide(*config["ide_listen"])
        send({"t": "hello", "worker": index, "pid": os.getpid()})
        drained = asyncio.create_task(drain_asked.wait())
        await asyncio.wait([drained, follower], return_when=asyncio.FIRST_COMPLETED)
        if follower.done():  # the API is gone: nothing to drain for
            drained.cancel()
            return 0
        # The API gone ends the wait too: its children go with it.
        draining = asyncio.create_task(drain(front, float(config["drain_timeout_s"])))
        await asyncio.wait([draining, follower], return_when=asyncio.FIRST_COMPLETED)
        draining.cancel()
        return 0
    finally:
        stats.cancel()
        follower.cancel()
        await front.close()
        if isinstance(ledger, DbLedger):
            ledger.dispose()
        writer.close()


async def drain(front: Front, timeout_s: float) -> None:
    """Refuse new WebSockets on ``front``; return once its open ones are done, or after
    ``timeout_s``."""
    front.draining = True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # The tunnels' set tells nobody when it empties (compiled, on the hot path): look often.
    while front.open_tunnels() and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(_DRAIN_POLL_S)


async def _send_stats(front: Front, send: Any) -> None:
    while True:
        classes = {
            name: [s.requests, s.bytes_in, s.bytes_out, front.open_websockets(s)]
            for name, s in front.stats.by_class()
        }
        send({"t": "stats", "classes": classes})
        await asyncio.sleep(feedwire.STATS_S)


def main() -> int:
    die_with_parent()
    config = json.loads(sys.stdin.read())
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(name)s[{config['index']}] %(message)s"
    )
    return run(_serve(config), scheduling=config.get("scheduling", "batch"))


if __name__ == "__main__":
    sys.exit(main())
