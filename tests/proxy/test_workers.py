"""Front workers in child processes (zlh.api.frontworkers, zlh.proxy.worker), for real.

The test's loop plays the API: it owns a route feed and starts real worker processes, which
are the only listeners on their ports, so every request here is served by a child worker
that knows routes and revocations only through the feed socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from proxy_kit import KEY, Harness, ide_cookie, next_vmid, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from support import free_port_pair
from zlh.api.frontworkers import FrontWorkers, WorkerConfig
from zlh.proxy import ProxySettings
from zlh.proxy.serving import Scheduling
from zlh.routefeed import FeedRoute, RouteFeed

OWNER = 7  # the route's owner, as the feed names users (the cookie's subject is "7")


@dataclass
class Workers:
    workers: FrontWorkers
    feed: RouteFeed
    ide_port: int
    opened: list[tuple[str, int]] = field(default_factory=list)
    activity: list[tuple[int, str]] = field(default_factory=list)


@contextmanager
def child_workers(
    h: Harness, *, drain_timeout_s: float = 30.0, scheduling: Scheduling = "batch"
) -> Iterator[Workers]:
    port = free_port_pair()
    run_dir = Path(tempfile.mkdtemp(prefix="zlh-workers-"))
    ledger = run_dir / "tickets"
    ledger.mkdir(mode=0o700)
    config = WorkerConfig(
        listen=("127.0.0.1", port),
        ide_listen=("127.0.0.1", port + 1),
        api_upstream=f"unix:{h.unix_path}",
        settings=ProxySettings().model_dump(mode="json"),
        key=KEY,
        issuer=None,
        run_dir=run_dir,
        ledger=ledger,
        drain_timeout_s=drain_timeout_s,
        scheduling=scheduling,
    )
    feed = RouteFeed()
    opened: list[tuple[str, int]] = []
    activity: list[tuple[int, str]] = []
    front_workers = FrontWorkers(
        1,
        config,
        feed,
        on_ide_open=lambda user, vmid: opened.append((user, vmid)),
        on_activity=lambda vmid, kind: activity.append((vmid, kind)),
    )
    found = Workers(front_workers, feed, port + 1, opened, activity)
    h.run(found.workers.start())
    try:
        wait_until(lambda: found.workers.workers[0].serving, timeout_s=30, what="worker serving")
        yield found
    finally:
        h.run(found.workers.close(), timeout_s=30)


def add_route(h: Harness, w: Workers) -> int:
    vmid = next_vmid()
    route = FeedRoute(
        vmid=vmid,
        owner_id=OWNER,
        state="ready",
        address="127.0.0.1",
        code_server_port=h.upstream_port,
        code_server_running=True,
    )
    h.call(w.feed.set_route, route)
    return vmid


def open_ws(port: int, vmid: int, sid: str) -> ClientConnection:
    cookie = ide_cookie(str(OWNER), vmid, sid=sid)
    return connect(
        f"ws://127.0.0.1:{port}/dev/{vmid}/ide/ws",
        additional_headers={"Cookie": f"zlh_ide={cookie}"},
        ping_interval=None,
        open_timeout=10,
    )


def echoes(ws: ClientConnection, text: str) -> bool:
    ws.send(text)
    return ws.recv(timeout=10) == text


def wait_routed(h: Harness, w: Workers, vmid: int, sid: str) -> ClientConnection:
    """A WebSocket to ``vmid`` once the worker has the route (the feed is asynchronous)."""

    def opens() -> bool:
        try:
            with open_ws(w.ide_port, vmid, sid):
                pass
        except InvalidStatus:
            return False
        return True

    wait_until(opens, timeout_s=10, what="the route reaching the worker")
    return open_ws(w.ide_port, vmid, sid)


def served_route(h: Harness, w: Workers) -> int:
    """A new route, once the worker serves it."""
    vmid = add_route(h, w)
    with wait_routed(h, w, vmid, "sid-first"):
        return vmid


def child_pid(w: Workers) -> int:
    process = w.workers.workers[0].process
    assert process is not None
    return process.pid


@pytest.fixture
def workers(harness: Harness) -> Iterator[Workers]:
    with child_workers(harness) as found:
        yield found


def _revoke(feed: RouteFeed, vmid: int) -> None:
    feed.revoke([f"sid-{vmid}"])


def _remove(feed: RouteFeed, vmid: int) -> None:
    feed.remove_route(vmid)


@pytest.mark.parametrize("lose_access", [_revoke, _remove])
def test_a_revoked_session_or_removed_route_closes_the_ide_websocket_on_a_child_worker(
    harness: Harness, workers: Workers, lose_access: Callable[[RouteFeed, int], None]
) -> None:
    vmid = add_route(harness, workers)
    with wait_routed(harness, workers, vmid, f"sid-{vmid}") as ws:
        assert echoes(ws, "before")
        harness.call(lose_access, workers.feed, vmid)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


def test_ide_page_loads_and_counters_of_a_child_worker_reach_the_api(
    harness: Harness, workers: Workers
) -> None:
    vmid = served_route(harness, workers)
    cookie = ide_cookie(str(OWNER), vmid, sid="sid-page")
    page = httpx.get(
        f"http://127.0.0.1:{workers.ide_port}/dev/{vmid}/ide/",
        headers={"Cookie": f"zlh_ide={cookie}", "Accept": "text/html"},
        timeout=10,
    )
    assert page.status_code == 200
    wait_until(lambda: (str(OWNER), vmid) in workers.opened, timeout_s=10, what="audit")
    wait_until(
        lambda: workers.workers.totals()["ide"][0] >= 2, timeout_s=10, what="ide requests counted"
    )
    assert workers.workers.requests_by_worker()[1] >= 2


def test_a_child_worker_runs_under_batch_scheduling_and_normal_turns_it_off(
    harness: Harness, workers: Workers
) -> None:
    assert os.sched_getscheduler(child_pid(workers)) == os.SCHED_BATCH
    with child_workers(harness, scheduling="normal") as normal:
        assert os.sched_getscheduler(child_pid(normal)) == os.SCHED_OTHER
        served_route(harness, normal)  # and it serves (a WebSocket to a new route opens)


def test_a_killed_child_worker_is_started_again_and_serves(
    harness: Harness, workers: Workers
) -> None:
    vmid = served_route(harness, workers)
    first = child_pid(workers)
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: child_pid(workers) != first and workers.workers.workers[0].serving,
        timeout_s=30,
        what="the worker started again",
    )
    with wait_routed(harness, workers, vmid, "sid-b") as ws:
        assert echoes(ws, "again")
    assert workers.workers.workers[0].restarts == 1


def forge(path: Path, message: dict[str, object]) -> bytes:
    """Connect to the feed socket as a process of the same user that is not a worker, send
    ``message``, and return what the API sends back before it closes."""
    with socket.socket(socket.AF_UNIX) as other:
        other.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # closed already
            other.sendall(json.dumps(message).encode() + b"\n")
        other.settimeout(10)
        try:
            return other.recv(65536)
        except ConnectionResetError:
            return b""


def test_the_feed_socket_is_private_and_serves_no_other_process(
    harness: Harness, workers: Workers
) -> None:
    vmid = add_route(harness, workers)
    path = workers.workers.socket_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    forged_open = {"t": "ide_open", "user_id": "1", "vmid": vmid}
    forged_stats = {"t": "stats", "classes": {"ide": [10**9, 0, 0, 0]}}
    for forged in (forged_open, forged_stats):
        assert forge(path, forged) == b""  # closed: no snapshot, no routes
    assert workers.opened == []
    assert workers.workers.totals()["ide"][0] < 10**9


def test_a_draining_worker_refuses_new_websockets_and_lets_open_ones_finish(
    harness: Harness, workers: Workers
) -> None:
    vmid = add_route(harness, workers)
    process = workers.workers.workers[0].process
    assert process is not None
    with wait_routed(harness, workers, vmid, "sid-open") as ws:
        harness.call(workers.workers.drain)

        def refused() -> bool:
            try:
                with open_ws(workers.ide_port, vmid, "sid-new"):
                    pass
            except InvalidStatus as exc:
                assert exc.response.status_code == 503
                assert json.loads(exc.response.body or b"{}")["message"] == "draining"
                return True
            return False

        wait_until(refused, timeout_s=10, what="new WebSockets refused")
        assert echoes(ws, "still open")
        assert process.returncode is None
    wait_until(lambda: process.returncode == 0, timeout_s=10, what="the drained worker's exit")


def test_a_drain_ends_open_websockets_at_the_drain_timeout(harness: Harness) -> None:
    with child_workers(harness, drain_timeout_s=0.5) as workers:
        vmid = add_route(harness, workers)
        process = workers.workers.workers[0].process
        assert process is not None
        with wait_routed(harness, workers, vmid, "sid-long") as ws:
            harness.call(workers.workers.drain)
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=15)
        wait_until(lambda: process.returncode == 0, timeout_s=10, what="the worker's exit")
