"""Benchmark: two API replicas polling 10,000 agents over one PostgreSQL database, and the
takeover when one of them is killed.

Parts, each a real process: a throwaway PostgreSQL cluster (tests/api/pg_cluster.py) holding
10,000 ready containers; one agent simulator serving all 10,000 agents from one listener (each
agent at its own loopback address 127.1.x.y, told apart by the ``Host`` header, each checking
its own per-container secret and answering its own status document); two replica processes,
each running the API's real ``Membership`` heartbeat and real ``Poller`` (real ``AgentClient``,
real registry) on uvloop, as ``zlh api`` wires them. The Proxmox stand-in is not started: the
poller never calls the backend (addresses come from the container rows, as the Proxmox backend
recorded them).

Reported: per replica its share, its poll cycle's p50/p99 (for each agent of its share, the
time between two successive reads of its status, as the simulator saw them), its CPU (user+sys
from /proc over the steady window / wall), polls/s, CPU per poll and the full garbage
collections it ran (each stops its event loop); the simulator's CPU; how
many agents were polled within the last 1.2 intervals (sampled each second: below 100 % the
replicas do not keep up);
then, after SIGKILL of one replica, how long until the other sees it dead, until the other's
share is every container, until the other has read every agent of the dead one's share (the
takeover) and until every agent has been polled again, next to the lease.

    .venv/bin/python bench/scale.py [--agents 10000] [--interval 5] [--heartbeat 2] [--lease 6]
                                    [--window 30]

The simulator listens on 0.0.0.0 (a random port) for the run: Linux delivers all of 127/8 to
it, which is what gives each agent an address of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "api"))

import pg_cluster

from api_kit import ready_container
from zlh.api import accounts
from zlh.api.agent_client import AgentClient
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Container, Database
from zlh.api.events import EventBus
from zlh.api.keys import agent_secret, load_or_create_key
from zlh.api.metrics import Metrics
from zlh.api.poller import Poller
from zlh.api.replicas import Membership, owner
from zlh.api.settings import ApiSettings
from zlh.proxy import serving
from zlh.routefeed import RouteFeed
from zlh.schemas import AgentState, AgentStatus

FIRST_VMID = 100
CONTROL_HOST = "bench-control"


def address(index: int) -> str:
    """Agent ``index``'s own loopback address (127.1.0.1, 127.1.0.2, …, 250 per /24)."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


def status_of(vmid: int) -> AgentStatus:
    """Agent ``vmid``'s status document: a ready container, its own version string."""
    return AgentStatus(
        workspace_root="/home/dev/workspace",
        runtime_install_path="/opt/zlh/runtimes/node/22",
        runtime_installed=True,
        code_server_installed=True,
        code_server_running=True,
        state=AgentState.READY,
        agent_version=f"sim-{vmid}",
    )


def nonce(vmid: int) -> str:
    return f"n{vmid}"


def run_loop(main: Any) -> None:
    try:
        import uvloop  # the API runs on uvicorn[standard], i.e. uvloop

        uvloop.run(main)
    except ImportError:
        asyncio.run(main)


# -- the agent simulator ----------------------------------------------------------------------


def _response(status: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


class _Agents(asyncio.Protocol):
    """One connection to the simulated agents: keep-alive GETs, each answered by the agent
    its ``Host`` names, after checking that agent's secret. A request is read as far as the
    poller sends one (request line, headers, no body): the simulator must cost the
    replicas' polls little, so what it costs stays out of their measurement."""

    def __init__(
        self,
        agents: dict[bytes, tuple[bytes, bytes, int]],
        last: list[float],
        gaps: list[tuple[float, int, float]],
    ) -> None:
        self.agents, self.last, self.gaps = agents, last, gaps
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            self.transport.write(self._answer(head))

    def _answer(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines[1:] if b": " in line)
        fields = {k.lower(): v for k, v in headers.items()}
        host = fields.get(b"host", b"").partition(b":")[0]
        path = lines[0].split(b" ")[1] if lines[0].count(b" ") >= 2 else b""
        if host == CONTROL_HOST.encode() and path.startswith(b"/polled?since="):
            since = float(path.partition(b"=")[2])
            polled = sum(1 for t in self.last if t >= since)
            return _response("200 OK", json.dumps({"polled": polled}).encode())
        if host == CONTROL_HOST.encode() and path.startswith(b"/unread?since="):
            since = float(path.partition(b"=")[2])
            unread = [index for index, t in enumerate(self.last) if t < since]
            return _response("200 OK", json.dumps({"unread": unread}).encode())
        if host == CONTROL_HOST.encode() and path.startswith(b"/gaps?since="):
            since = float(path.partition(b"=")[2])
            gaps = [[index, gap] for t, index, gap in self.gaps if t >= since]
            return _response("200 OK", json.dumps({"gaps": gaps}).encode())
        agent = self.agents.get(host)
        if agent is None or path != b"/status":
            return _response("404 Not Found", b'{"message": "no such agent"}')
        auth, body, index = agent
        if fields.get(b"authorization") != auth:
            return _response("401 Unauthorized", b'{"message": "unauthorized"}')
        now = time.time()
        if self.last[index]:
            self.gaps.append((now, index, now - self.last[index]))
        self.last[index] = now
        return body


async def serve_agents(count: int, key_file: Path) -> None:
    """All agents on one listener; prints its port as a JSON line. With ``Host: bench-control``:
    ``GET /polled?since=T`` answers how many agents were polled at or after epoch T,
    ``GET /unread?since=T`` which agents (indexes) were not, and ``GET /gaps?since=T`` each
    read's agent and time since that agent's previous read, for the reads at or after T."""
    key = load_or_create_key(key_file)
    agents: dict[bytes, tuple[bytes, bytes, int]] = {}
    for index in range(count):
        vmid = FIRST_VMID + index
        auth = f"Bearer {agent_secret(key, vmid, nonce(vmid))}".encode()
        body = _response("200 OK", status_of(vmid).model_dump_json(by_alias=True).encode())
        agents[address(index).encode()] = (auth, body, index)
    last = [0.0] * count
    gaps: list[tuple[float, int, float]] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Agents(agents, last, gaps), "0.0.0.0", 0, backlog=1024
    )
    print(json.dumps(server.sockets[0].getsockname()[1]), flush=True)
    await asyncio.Event().wait()


# -- one replica ------------------------------------------------------------------------------


class _TimedPoller(Poller):
    """The real Poller, also keeping each tick's poll count and time (its histogram keeps
    only the time): a cycle is a tick whose polls cover the share, not a few late ones."""

    cycles: list[tuple[int, float]]
    polls = 0

    def _time_cycle(self, polls: list[asyncio.Task[None]]) -> None:
        started = time.monotonic()
        self.polls += len(polls)

        def ended(_: object) -> None:
            self.cycles.append((len(polls), time.monotonic() - started))

        asyncio.gather(*polls, return_exceptions=True).add_done_callback(ended)
        super()._time_cycle(polls)


async def replica(name: str, db_url: str, key_file: Path, args: argparse.Namespace) -> None:
    """The real Membership and Poller; every 0.2 s a JSON line: live names, share, the ticks
    ended since the last line ([polls, seconds]), polls launched so far."""
    settings = ApiSettings(
        data_dir=key_file.parent,
        database_url=db_url,
        replica=name,
        poll_interval_s=args.interval,
        replica_heartbeat_s=args.heartbeat,
        replica_lease_s=args.lease,
    )
    db = Database(db_url)
    key = load_or_create_key(key_file)
    metrics = Metrics()
    membership = Membership(
        db,
        name=name,
        heartbeat_s=settings.replica_heartbeat_s,
        lease_s=settings.replica_lease_s,
        metrics=metrics,
    )
    registry = ContainerRegistry(db, EventBus(), RouteFeed())
    registry.bind_loop(asyncio.get_running_loop())

    async def never(_container: Container) -> None:
        raise AssertionError("no agent here is idle")

    poller = _TimedPoller(
        settings=settings,
        registry=registry,
        agents=AgentClient(),
        secret=lambda c: agent_secret(key, c.vmid, c.agent_nonce),
        resend=never,
        overdue=lambda _c: False,
        metrics=metrics,
        share=membership.owns,
    )
    poller.cycles = []
    membership.on_change = poller.wake
    await membership.join()
    tasks = [asyncio.create_task(membership.run()), asyncio.create_task(poller.run())]
    while not any(task.done() for task in tasks):
        share = len(poller.watched())
        seen, poller.cycles = poller.cycles, []
        line = {
            "t": time.time(),
            "live": membership.live,
            "share": share,
            "cycles": seen,
            "polls": poller.polls,
            "full_gcs": gc.get_stats()[2]["collections"],
        }
        print(json.dumps(line), flush=True)
        await asyncio.sleep(0.2)
    for task in tasks:
        if task.done():
            task.result()  # what ended it, raised


# -- the run ----------------------------------------------------------------------------------


def seed(db: Database, count: int, port: int) -> None:
    user = accounts.create_user(db, "bench", "bench-password")
    with db.session() as session:
        for index in range(count):
            vmid = FIRST_VMID + index
            session.add(
                ready_container(
                    vmid,
                    user.id,
                    address=address(index),
                    agent_port=port,
                    agent_nonce=nonce(vmid),
                    status=status_of(vmid),
                )
            )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Replica:
    """A replica process and the JSON lines it printed (read by a thread)."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.lines: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(json.loads(line))

    @property
    def last(self) -> dict[str, Any]:
        return self.lines[-1] if self.lines else {"live": [], "share": 0, "cycles": []}

    def cycles_since(self, since: float) -> list[float]:
        """Cycles (ticks polling at least a tenth of the share then: a kept-up poller polls its
        whole share in one tick, an overloaded one in a few) reported after ``since``."""
        found: list[float] = []
        for line in self.lines:
            if line["t"] >= since:
                found += [took for polls, took in line["cycles"] if polls >= line["share"] // 10]
        return found

    def count_at(self, key: str, moment: float) -> int:
        """Counter ``key`` (polls launched, full collections) as of the last line printed at
        or before ``moment``."""
        return max((line[key] for line in self.lines if line["t"] <= moment), default=0)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """The time (epoch) ``predicate`` first held, checked every 20 ms."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(0.02)
    return time.time()


def ask_simulator(port: int, path: str) -> Any:
    """The agent simulator's JSON answer to a control request."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", path, headers={"Host": CONTROL_HOST})
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return answer


def polled_since(port: int, since: float) -> int:
    return int(ask_simulator(port, f"/polled?since={since}")["polled"])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def bench(args: argparse.Namespace, workdir: Path) -> None:
    key_file = workdir / "agent.key"
    load_or_create_key(key_file)
    me = [sys.executable, __file__]
    knobs = [
        *("--interval", str(args.interval), "--heartbeat", str(args.heartbeat)),
        *("--lease", str(args.lease), "--key", str(key_file)),
    ]
    with (
        pg_cluster.cluster() as server,
        process([*me, "--serve-agents", str(args.agents), *knobs]) as sim,
    ):
        assert sim.stdout is not None
        port = json.loads(sim.stdout.readline())
        db_url = pg_cluster.fresh_database(server)
        db = Database(db_url)
        db.migrate()
        accounts.configure_hashing(time_cost=1, memory_kib=64, parallelism=1)
        seeded = time.monotonic()
        seed(db, args.agents, port)
        db.dispose()
        print(f"seeded {args.agents} containers in {time.monotonic() - seeded:.1f}s")
        names = ["a", "b"]
        replicas = [Replica(n, [*me, "--replica", n, "--db", db_url, *knobs]) for n in names]
        try:
            measure(args, replicas, sim, port)
        finally:
            for r in replicas:
                r.process.kill()
                r.process.wait()


def measure(
    args: argparse.Namespace, replicas: list[Replica], sim: subprocess.Popen[str], port: int
) -> None:
    a, b = replicas
    total = args.agents
    wait_until(
        lambda: (
            all(r.last["live"] == ["a", "b"] for r in replicas)
            and sum(r.last["share"] for r in replicas) == total
            and all(r.cycles_since(0) for r in replicas)
        ),
        timeout_s=120 + total / 50,
        what="both replicas to poll their shares",
    )
    # Steady state: wait out one more interval (first cycles open every connection), then measure.
    time.sleep(args.interval)
    start = time.time()
    cpu_start = {r.name: cpu_seconds(r.process.pid) for r in replicas}
    sim_start = cpu_seconds(sim.pid)
    fresh = []  # each second: the share of agents polled within the last 1.2 intervals
    while time.time() < start + args.window:
        time.sleep(1.0)
        fresh.append(polled_since(port, time.time() - 1.2 * args.interval) / total)
    end = time.time()
    wall = end - start
    cpu = {r.name: cpu_seconds(r.process.pid) - cpu_start[r.name] for r in replicas}
    sim_cores = (cpu_seconds(sim.pid) - sim_start) / wall
    time.sleep(0.5)  # the lines up to the window's end
    print(
        f"agents: {total}, replicas: 2, interval: {args.interval:g}s, "
        f"heartbeat: {args.heartbeat:g}s, lease: {args.lease:g}s, window: {wall:.0f}s, "
        f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    # The poll cycle as an operator sees it: for each agent, the time between two successive
    # reads of its status, by the replica whose share it is.
    gaps: dict[str, list[float]] = {r.name: [] for r in replicas}
    for index, gap in ask_simulator(port, f"/gaps?since={start}")["gaps"]:
        if (name := owner(FIRST_VMID + index, ["a", "b"])) is not None:
            gaps[name].append(gap)
    for r in replicas:
        share = r.last["share"]
        if not gaps[r.name]:
            raise SystemExit(f"replica {r.name} read no agent twice in the window")
        polls = r.count_at("polls", end) - r.count_at("polls", start)
        full_gcs = r.count_at("full_gcs", end) - r.count_at("full_gcs", start)
        cycle = gaps[r.name]
        print(
            f"replica {r.name}: share {share} ({share / total:.0%}), poll cycle (time between "
            f"two reads of one agent, {len(cycle)} reads): p50 {statistics.median(cycle):.3f}s "
            f"p99 {percentile(cycle, 0.99):.3f}s max {max(cycle):.3f}s, "
            f"CPU {cpu[r.name] / wall:.3f} cores, {polls / wall:.0f} polls/s, "
            f"{cpu[r.name] * 1000 / max(polls, 1):.2f} ms CPU per poll, "
            f"{full_gcs} full garbage collections"
        )
    print(f"agent simulator: CPU {sim_cores:.3f} cores")
    print(
        f"agents polled within the last {1.2 * args.interval:g}s (1.2 intervals), sampled every "
        f"second: min {min(fresh):.1%}, median {statistics.median(fresh):.1%}"
    )
    orphans = {i for i in range(total) if owner(FIRST_VMID + i, ["a", "b"]) == "b"}
    killed = time.time()
    b.process.send_signal(signal.SIGKILL)
    b.process.wait()
    declared_dead = wait_until(
        lambda: a.last["live"] == ["a"] and a.last["t"] >= killed,
        timeout_s=args.lease * 4 + 60,
        what="the survivor to see b dead",
    )
    took_share = wait_until(
        lambda: a.last["share"] == total and a.last["t"] >= killed,
        timeout_s=args.lease * 4 + 60,
        what="the survivor to take the whole share",
    )
    took_over = wait_until(
        lambda: not orphans & set(ask_simulator(port, f"/unread?since={killed}")["unread"]),
        timeout_s=args.lease * 4 + 120,
        what="the survivor to read every agent of b's share",
    )
    polled_all = wait_until(
        lambda: polled_since(port, killed) == total,
        timeout_s=args.lease * 4 + 120,
        what="every agent polled after the kill",
    )
    dead_s, share_s, all_s = declared_dead - killed, took_share - killed, polled_all - killed
    over_s = took_over - killed
    print(
        f"after SIGKILL of b: a sees b dead after {dead_s:.2f}s "
        f"({dead_s / args.lease:.2f} of the {args.lease:g}s lease), "
        f"a's share is all {total} after {share_s:.2f}s "
        f"({share_s / args.lease:.2f} of the {args.lease:g}s lease); takeover (a has read every "
        f"one of b's {len(orphans)} agents) after {over_s:.2f}s "
        f"({over_s / args.lease:.2f} of the lease); every agent polled again "
        f"after {all_s:.2f}s ({all_s / args.lease:.2f} of the lease)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=5.0, help="poll_interval_s")
    parser.add_argument("--heartbeat", type=float, default=2.0, help="replica_heartbeat_s")
    parser.add_argument("--lease", type=float, default=6.0, help="replica_lease_s")
    parser.add_argument("--window", type=float, default=30.0, help="steady-state seconds measured")
    parser.add_argument("--serve-agents", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--replica", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_agents:
        run_loop(serve_agents(args.serve_agents, args.key))
    elif args.replica:
        # as zlh api runs (front_scheduling's default)
        serving.run(replica(args.replica, args.db, args.key, args), scheduling="batch")
    else:
        # A SIGTERM (timeout, CI) unwinds: the replicas, the simulator and the cluster end too.
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit("terminated"))
        with tempfile.TemporaryDirectory(prefix="zlh-bench-scale-") as workdir:
            Path(workdir).chmod(0o700)
            bench(args, Path(workdir))


if __name__ == "__main__":
    main()
