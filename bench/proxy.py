"""Benchmark the front (zlh.proxy) against nginx and http-proxy-middleware, with auth on.

    .venv/bin/python bench/proxy.py                 # one round of every test
    ROUNDS=3 .venv/bin/python bench/proxy.py        # any knob of ../shared/bench/proxy/run.sh

Starts the front in its own process (uvloop; the harness measures that process's CPU) with a
route for vmid 100 to the harness's upstream (127.0.0.1:$BASE_PORT, default 18000) owned by a
bench user, then runs ``../shared/bench/proxy/run.sh ours=127.0.0.1:<port>`` against the front's
IDE origin listener (the second-port form, where IDEs are served) with the IDE cookie a ticket
exchange sets (``BENCH_COOKIE='zlh_ide=<jwt>; session=x'``, ``BENCH_STRIP_COOKIE=zlh_ide``: the
front must strip its own cookie and pass the harness's). Prints the harness's table, then the
front's goals as ratios to nginx/hpm in the same run (docs/performance.md).

The harness is not part of this repository: it is the shared proxy benchmark at
``../shared/bench/proxy/`` beside the checkout (``run.sh`` copies itself to ``$BENCH_DIR``,
default /tmp/zlh-proxy-bench, and needs node, nginx and wrk: scripts/bootstrap.sh installs them).
This bench needs it there and uses nothing else outside the repository.

``WORKERS=N`` runs the front as ``zlh up --workers N`` does: this process plus N-1 front workers
(zlh.api.frontworkers) on the same ports, which learn the route over the feed socket. The
harness's nginx runs 2 workers (``worker_processes 2``), so ``WORKERS=2`` compares like with
like on a 2-core machine. Every front process runs under ``SCHED_BATCH``, as ``zlh up``'s do
(setting ``front_scheduling``); ``FRONT_SCHEDULING=normal`` gives them the default policy.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from zlh.proxy.serving import Scheduling
from zlh.proxy.tickets import IDE_COOKIE, Ticket, TicketDesk

if TYPE_CHECKING:
    from zlh.api.frontworkers import FrontWorkers

REPO = Path(__file__).resolve().parent.parent
# PROXY_HARNESS: run.sh elsewhere (a git worktree's parent is not the checkout's).
HARNESS = Path(
    os.environ.get("PROXY_HARNESS", REPO.parent / "shared" / "bench" / "proxy" / "run.sh")
)
BENCH_DIR = Path(os.environ.get("BENCH_DIR", "/tmp/zlh-proxy-bench"))  # noqa: S108 - run.sh's default
BASE_PORT = int(os.environ.get("BASE_PORT", "18000"))
USER = "7"  # the bench user's id (the route feed names users by number)
WORKERS = int(os.environ.get("WORKERS", "1"))
SCHEDULING: Scheduling = "normal" if os.environ.get("FRONT_SCHEDULING") == "normal" else "batch"


def serve(port: int, key: bytes) -> None:
    """The front alone, as the harness sees it: one process, run as ``zlh up`` runs it.
    ``ZLH_BENCH_LLHTTP_ONLY=1`` switches the one-pass head scanner off (bench/proxy_floor.py
    compares)."""
    from zlh.proxy import Front, JwtAuthenticator, ProxySettings, Route, RouteTable, listener, pool
    from zlh.proxy.serving import run

    if os.environ.get("ZLH_BENCH_LLHTTP_ONLY"):
        listener.SCANNING = pool.SCANNING = False

    async def main() -> None:
        routes = RouteTable()
        routes.update(100, Route(owner_id=USER, host="127.0.0.1", port=BASE_PORT, ready=True))
        front = Front(
            ProxySettings(),
            routes,
            JwtAuthenticator(key),
            "unix:/nonexistent.sock",
            tickets=TicketDesk(key),
            reuse_port=WORKERS > 1,
        )
        portal_port = free_port()
        workers = start_workers(key, portal_port, port) if WORKERS > 1 else None
        if workers is not None:  # all of them serve before the harness sees the port
            await workers.start()
            await workers.serving()
        await front.start("127.0.0.1", portal_port)
        await front.start_ide("127.0.0.1", port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        if workers is not None:
            await workers.close()
        await front.close()

    run(main(), scheduling=SCHEDULING)


def start_workers(key: bytes, portal_port: int, ide_port: int) -> FrontWorkers:
    """WORKERS-1 front workers on the same ports, fed the bench route."""
    from zlh.api.frontworkers import FrontWorkers, WorkerConfig
    from zlh.proxy import ProxySettings
    from zlh.routefeed import FeedRoute, RouteFeed

    feed = RouteFeed()
    feed.set_route(
        FeedRoute(
            vmid=100,
            owner_id=int(USER),
            state="ready",
            address="127.0.0.1",
            code_server_port=BASE_PORT,
            code_server_running=True,
        )
    )
    run_dir = Path(tempfile.mkdtemp(prefix="zlh-bench-run-"))
    (run_dir / "tickets").mkdir(mode=0o700)
    config = WorkerConfig(
        listen=("127.0.0.1", portal_port),
        ide_listen=("127.0.0.1", ide_port),
        api_upstream="unix:/nonexistent.sock",
        settings=ProxySettings().model_dump(mode="json"),
        key=key,
        issuer=None,
        run_dir=run_dir,
        ledger=run_dir / "tickets",
        drain_timeout_s=0,
        scheduling=SCHEDULING,
    )
    return FrontWorkers(
        WORKERS - 1, config, feed, on_ide_open=lambda *_: None, on_activity=lambda *_: None
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_session() -> tuple[str, dict[str, str]]:
    """A fresh signing key and a day's IDE cookie for the bench user's vmid 100: the Cookie
    header to send (the IDE cookie and the harness's ``session=x``) and the environment that
    gives ``--serve`` the key."""
    key = secrets.token_bytes(32)
    now = time.time()
    ide, _ = TicketDesk(key).cookie_value(Ticket(USER, "bench", 100, False, now, now + 86400))
    return f"{IDE_COOKIE}={ide}; session=x", dict(os.environ, ZLH_BENCH_KEY=key.hex())


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    """The harness's upstream (``servers/upstream.js`` in ``$BENCH_DIR``) on ``port``, for the
    benches that drive the front without the harness; a run of this script sets it up."""
    upstream_js = BENCH_DIR / "servers" / "upstream.js"
    if not (BENCH_DIR / "node_modules" / "ws").is_dir() or not upstream_js.is_file():
        raise SystemExit(f"{BENCH_DIR} is not set up: run bench/proxy.py once first")
    return subprocess.Popen(
        ["node", str(upstream_js), str(port)], cwd=BENCH_DIR, stdout=subprocess.DEVNULL
    )


def wait_for_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the front exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the front did not listen within 15 s")


def median(
    results: dict[str, dict[str, list[dict[str, float]]]], name: str, test: str, key: str
) -> float | None:
    values = sorted(x[key] for x in results.get(name, {}).get(test, []) if x.get(key) is not None)
    return values[len(values) // 2] if values else None


def goals(results: dict[str, dict[str, list[dict[str, float]]]]) -> list[str]:
    """The front's goals, each as `ratio (goal) ok/MISS`."""
    checks = [
        ("small req/s vs nginx", "small", "rps", "nginx", 0.5, True),
        ("small req/s vs hpm", "small", "rps", "hpm", 10.0, True),
        ("500 KB MB/s vs nginx", "big", "MBps", "nginx", 0.5, True),
        ("ws msgs/s x32 vs nginx", "ws_tput", "msgs_per_s", "nginx", 0.8, True),
        ("ws rtt p99 vs nginx", "ws_lat", "p99_ms", "nginx", 1.5, False),
    ]
    lines = []
    for label, test, key, anchor, goal, higher_is_better in checks:
        ours, theirs = median(results, "ours", test, key), median(results, anchor, test, key)
        if ours is None or not theirs:
            lines.append(f"{label:<26} -")
            continue
        ratio = ours / theirs
        ok = ratio >= goal if higher_is_better else ratio <= goal
        sign = ">=" if higher_is_better else "<="
        lines.append(f"{label:<26} {ratio:6.2f}x  (goal {sign} {goal}x)  {'ok' if ok else 'MISS'}")
    return lines


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), bytes.fromhex(os.environ["ZLH_BENCH_KEY"]))
        return 0
    cookie, env = bench_session()
    port = free_port()
    front = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    try:
        wait_for_port(port, front)
        before = set(BENCH_DIR.glob("results-*.json"))
        harness_env = dict(
            os.environ,
            BENCH_COOKIE=cookie,
            BENCH_STRIP_COOKIE=IDE_COOKIE,
        )
        rc = subprocess.run(
            [str(HARNESS), f"ours=127.0.0.1:{port}"], env=harness_env, check=False
        ).returncode
    finally:
        front.terminate()
        front.wait(10)
    new = sorted(set(BENCH_DIR.glob("results-*.json")) - before)
    if rc != 0 or not new:
        print(f"harness failed (exit {rc})", file=sys.stderr)
        return rc or 1
    results = json.loads(new[-1].read_text())["results"]
    print(f"\n# goals (medians, same run; {new[-1]})")
    print("\n".join(goals(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
