"""Where the front's CPU per small GET goes: the front as installed (hot path compiled), the same
front with its one-pass head scanner switched off (every head through llhttp's callbacks), the
same front as plain Python, and a blind uvloop splice (no HTTP parsing, no auth: the floor any
uvloop proxy pays in syscalls and the event loop), the splice both with a new ``bytes`` per read
and reading into one reused buffer per connection (``asyncio.BufferedProtocol``), measured in
turns in one run.

    .venv/bin/python bench/proxy_floor.py                   # ROUNDS=5 DURATION=5 by default

It uses the upstream of the shared proxy harness ``../shared/bench/proxy/`` (outside this
repository): ``servers/upstream.js`` in ``$BENCH_DIR``, which a run of bench/proxy.py sets up.
Each turn is ``wrk -t1 -c32`` on the 223 B JSON for DURATION seconds; CPU is the server
process's user+system time over the turn. Prints medians of req/s and of CPU
microseconds per request, and each as a ratio to the installed front.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import cast

from proxy import bench_session, free_port, start_upstream, wait_for_port

REPO = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("ROUNDS", "5"))
DURATION = int(os.environ.get("DURATION", "5"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READ_SIZE = 256 * 1024  # uvloop's own read size


def splice(port: int, upstream_port: int, *, buffered: bool = False) -> None:
    """The floor: bytes from each client go to its own upstream connection and back, as read;
    ``buffered``: read into one reused buffer per connection, not a new ``bytes`` per read."""
    import uvloop

    class Upstream(asyncio.Protocol):
        def __init__(self, client: asyncio.Transport) -> None:
            self.client = client

        def data_received(self, data: bytes | memoryview) -> None:
            if not self.client.is_closing():
                self.client.write(data)

    class Client(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)
            self.upstream: asyncio.Transport | None = None
            self.early: list[bytes] = []
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            loop = asyncio.get_running_loop()
            upstream, _ = await loop.create_connection(
                lambda: upstream_side(self.transport), "127.0.0.1", upstream_port
            )
            self.upstream = upstream
            for data in self.early:
                upstream.write(data)

        def data_received(self, data: bytes | memoryview) -> None:
            if self.upstream is None:
                self.early.append(bytes(data))
            elif not self.upstream.is_closing():
                self.upstream.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.upstream is not None:
                self.upstream.close()

    class Reused(asyncio.BufferedProtocol):
        """Reads into one buffer of its own, handed on as a view (written before reused)."""

        view = memoryview(b"")

        def get_buffer(self, sizehint: int) -> memoryview:
            if not self.view:
                self.view = memoryview(bytearray(READ_SIZE))
            return self.view

        def buffer_updated(self, nbytes: int) -> None:
            self.data_received(self.view[:nbytes])

        def data_received(self, data: bytes | memoryview) -> None:
            raise NotImplementedError  # the splice side's, before this class in the MRO

    class BufferedUpstream(Upstream, Reused):
        pass

    class BufferedClient(Client, Reused):
        pass

    upstream_side = BufferedUpstream if buffered else Upstream

    async def main() -> None:
        loop = asyncio.get_running_loop()
        client_side = BufferedClient if buffered else Client
        server = await loop.create_server(client_side, "127.0.0.1", port, backlog=2048)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def turn(
    pid: int, url: str, cookie: str, *, connections: int = 32, duration: int = DURATION
) -> tuple[float, float]:
    """One wrk run: (req/s, CPU µs of ``pid`` per request). Any response but 2xx/3xx is an error
    (a refused cookie would otherwise be timed as a fast 401)."""
    before = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "-H", f"Cookie: {cookie}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = cpu_seconds(pid) - before
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    if "Non-2xx or 3xx responses" in out:
        raise SystemExit(f"{url} answered errors under load:\n{out}")
    rate = float(found.group(1))
    return rate, used / (rate * duration) * 1e6


def pure_python_tree(dest: Path) -> Path:
    """A copy of the zlh sources without compiled modules, to import the front uncompiled."""
    shutil.copytree(REPO / "src" / "zlh", dest / "zlh", ignore=shutil.ignore_patterns("*.so"))
    return dest


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] in ("--splice", "--splice-buffered"):
        splice(int(sys.argv[2]), int(sys.argv[3]), buffered=sys.argv[1] == "--splice-buffered")
        return 0
    cookie, env = bench_session()
    proxy_py = str(Path(__file__).with_name("proxy.py"))
    upstream_port = int(os.environ.get("BASE_PORT", "18000"))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="zlh-floor-") as tmp:
        pure = pure_python_tree(Path(tmp))
        names = (
            "front",
            "front (llhttp only)",
            "front (plain Python)",
            "splice",
            "splice (reused buffer)",
        )
        ports = {name: free_port() for name in names}
        commands = {
            "front": ([sys.executable, proxy_py, "--serve", str(ports["front"])], env),
            "front (llhttp only)": (
                [sys.executable, proxy_py, "--serve", str(ports["front (llhttp only)"])],
                dict(env, ZLH_BENCH_LLHTTP_ONLY="1"),
            ),
            "front (plain Python)": (
                [sys.executable, proxy_py, "--serve", str(ports["front (plain Python)"])],
                dict(env, PYTHONPATH=str(pure)),
            ),
            "splice": (
                [sys.executable, __file__, "--splice", str(ports["splice"]), str(upstream_port)],
                env,
            ),
            "splice (reused buffer)": (
                [
                    sys.executable,
                    __file__,
                    "--splice-buffered",
                    str(ports["splice (reused buffer)"]),
                    str(upstream_port),
                ],
                env,
            ),
        }
        try:
            upstream = start_upstream(upstream_port)
            procs.append(upstream)
            pids = {}
            for name, (cmd, cmd_env) in commands.items():
                proc = subprocess.Popen(cmd, env=cmd_env)
                procs.append(proc)
                wait_for_port(ports[name], proc)
                pids[name] = proc.pid
            wait_for_port(upstream_port, upstream)
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            for round_no in range(1, ROUNDS + 1):
                for name, pid in pids.items():
                    prefix = "" if name.startswith("splice") else "/dev/100/ide"
                    url = f"http://127.0.0.1:{ports[name]}{prefix}/small.json"
                    rate, us = turn(pid, url, cookie)
                    runs[name].append((rate, us))
                    print(f"round {round_no} {name:<22} {rate:9.0f} req/s {us:7.1f} us/req")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    base_rate = median(r for r, _ in runs["front"])
    base_us = median(u for _, u in runs["front"])
    print(f"\n# medians of {ROUNDS} rounds ({DURATION} s each), ratios to the installed front")
    for name, values in runs.items():
        rate, us = median(r for r, _ in values), median(u for _, u in values)
        print(
            f"{name:<22} {rate:9.0f} req/s ({rate / base_rate:4.2f}x) "
            f"{us:7.1f} us/req ({us / base_us:4.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
