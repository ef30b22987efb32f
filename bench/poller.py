"""Benchmark: one API status poller polling 1,000 simulated agents every 5 s.

A separate process runs one aiohttp server listening on 1,000 loopback ports, each answering
``GET /status`` with a real ``AgentStatus`` document (a ready container). This process runs
the API's real ``Poller`` (real ``AgentClient``, real registry on a SQLite database holding
1,000 ready containers) on uvloop, and drives full poll cycles every 5 s. It prints the CPU
cores this process used (user+sys time / wall time, the server's CPU not included) and the
p50/p99/max wall time of a full cycle.

Goal: ≤ 0.2 core, p99 cycle ≤ 2 s.

    .venv/bin/python bench/poller.py [--agents 1000] [--interval 5] [--cycles 12]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from api_kit import ready_container
from zlh.api import accounts
from zlh.api.agent_client import AgentClient
from zlh.api.containers import ContainerRegistry
from zlh.api.db import Container, Database
from zlh.api.events import EventBus
from zlh.api.poller import Poller
from zlh.api.settings import ApiSettings
from zlh.routefeed import RouteFeed
from zlh.schemas import AgentState, AgentStatus

STATUS = AgentStatus(
    workspace_root="/home/dev/workspace",
    runtime_install_path="/opt/zlh/runtimes/node/22",
    runtime_installed=True,
    code_server_installed=True,
    code_server_running=True,
    state=AgentState.READY,
    agent_version="bench",
)


async def serve(count: int) -> None:
    """The simulated agents: one app on ``count`` ports; prints the ports as one JSON line."""
    body = STATUS.model_dump_json(by_alias=True).encode()

    async def status(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = []
    for _ in range(count):
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=16)
        await site.start()
        ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    print(json.dumps(ports), flush=True)
    await asyncio.Event().wait()


def seed(db: Database, ports: list[int]) -> None:
    owner = accounts.create_user(db, "bench", "bench-password")
    with db.session() as session:
        for index, port in enumerate(ports):
            session.add(
                ready_container(
                    100 + index,
                    owner.id,
                    address="127.0.0.1",
                    agent_port=port,
                    agent_nonce="n",
                    status=STATUS,
                )
            )


async def bench(ports: list[int], interval_s: float, cycles: int, data_dir: Path) -> None:
    settings = ApiSettings(data_dir=data_dir, poll_interval_s=interval_s)
    db = Database(settings.db_url)
    db.migrate()
    accounts.configure_hashing(time_cost=1, memory_kib=64, parallelism=1)
    seed(db, ports)
    registry = ContainerRegistry(db, EventBus(), RouteFeed())
    registry.bind_loop(asyncio.get_running_loop())
    agents = AgentClient()
    virtual = [0.0]  # the poller's clock: every cycle makes every agent due

    async def never(_container: Container) -> None:
        raise AssertionError("no agent here is idle")

    poller = Poller(
        settings=settings,
        registry=registry,
        agents=agents,
        secret=lambda _c: "secret",
        resend=never,
        overdue=lambda _c: False,
        clock=lambda: virtual[0],
    )
    await poller.poll_once()  # warm-up: connections opened, targets loaded
    durations = []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    wall_start = time.perf_counter()
    for cycle in range(cycles):
        virtual[0] += interval_s
        started = time.perf_counter()
        await poller.poll_once()
        durations.append(time.perf_counter() - started)
        next_start = wall_start + (cycle + 1) * interval_s
        await asyncio.sleep(max(0.0, next_start - time.perf_counter()))
    wall = time.perf_counter() - wall_start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cores = (usage.ru_utime + usage.ru_stime - cpu_start) / wall
    await agents.close()
    db.dispose()
    ordered = sorted(durations)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(f"agents: {len(ports)}, interval: {interval_s:g}s, cycles: {cycles}")
    print(f"CPU: {cores:.3f} cores (goal <= 0.2)")
    print(
        f"full cycle: p50 {statistics.median(durations):.3f}s, p99 {p99:.3f}s, "
        f"max {ordered[-1]:.3f}s (goal p99 <= 2s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        import uvloop  # the API runs on uvicorn[standard], i.e. uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    if args.serve:
        run(serve(args.serve))
        return
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(args.agents)], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        ports = json.loads(server.stdout.readline())
        with tempfile.TemporaryDirectory() as data_dir:
            run(bench(ports, args.interval, args.cycles, Path(data_dir)))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
