"""Download throughput of ``zlh artifacts serve`` against ``python -m http.server`` (and nginx).

Creates a random file in a temp store, serves the store with each server on loopback, downloads
the file ``--rounds`` times from each (servers interleaved per round, after one warm-up) with a
streaming client (``curl -o /dev/null`` if installed, else httpx) and prints the median MB/s per
server, the server's CPU seconds per GB served (steadier than MB/s on a busy machine) and the
ratio ours / http.server. Usage::

    .venv/bin/python bench/artifacts.py [--size-mb 100] [--rounds 10] [--client curl|httpx]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ZLH = [sys.executable, "-m", "zlh.cli"]
MB = 1_000_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            httpx.head(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout_s}s")


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its descendants (nginx workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    tree = {pid}
    while grown := {c for c, (parent, _) in stats.items() if parent in tree} - tree:
        tree |= grown
    return sum(stats[p][1] for p in tree if p in stats)


@contextmanager
def running(cmd: list[str], url: str) -> Iterator[Server]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(url, proc)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def nginx_command(store: Path, port: int, workdir: Path) -> list[str]:
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{ listen 127.0.0.1:{port}; root {store}; }}
}}
"""
    )
    return ["nginx", "-c", str(conf), "-p", str(workdir)]


def download_curl(url: str) -> float:
    """Seconds to download ``url`` with curl into /dev/null."""
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    status, seconds = out.stdout.split()
    if status != "200":
        raise SystemExit(f"GET {url} answered {status}")
    return float(seconds)


def download_httpx(url: str) -> float:
    start = time.perf_counter()
    with httpx.stream("GET", url, timeout=60.0) as response:
        response.raise_for_status()
        for _ in response.iter_raw(1 << 20):
            pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--client", choices=["curl", "httpx"], default=None)
    args = parser.parse_args()
    client = args.client or ("curl" if shutil.which("curl") else "httpx")
    download: Callable[[str], float] = download_curl if client == "curl" else download_httpx

    with tempfile.TemporaryDirectory(prefix="zlh-bench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        work.chmod(0o755)  # nginx workers run as nobody
        source = work / "bench.tar.gz"
        with source.open("wb") as out:
            for _ in range(args.size_mb):
                out.write(os.urandom(MB))
        store = work / "store"
        subprocess.run(
            [
                *ZLH,
                "artifacts",
                "add",
                "runtime",
                "node",
                "1",
                "--file",
                str(source),
                "--store",
                str(store),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        path = "runtime/node/1/bench.tar.gz"

        servers: dict[str, Server] = {}
        port = free_port()
        servers["zlh artifacts serve"] = stack.enter_context(
            running(
                [
                    *ZLH,
                    "artifacts",
                    "serve",
                    "--store",
                    str(store),
                    "--listen",
                    f"127.0.0.1:{port}",
                ],
                f"http://127.0.0.1:{port}/{path}",
            )
        )
        port = free_port()
        servers["python -m http.server"] = stack.enter_context(
            running(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    "--directory",
                    str(store),
                    str(port),
                ],
                f"http://127.0.0.1:{port}/{path}",
            )
        )
        if shutil.which("nginx"):
            port = free_port()
            servers["nginx"] = stack.enter_context(
                running(nginx_command(store, port, work), f"http://127.0.0.1:{port}/{path}")
            )

        speeds: dict[str, list[float]] = {name: [] for name in servers}
        for server in servers.values():
            download(server.url)  # warm-up: page cache, connection setup paths
        cpu_before = {name: cpu_seconds(server.pid) for name, server in servers.items()}
        for _ in range(args.rounds):
            for name, server in servers.items():
                speeds[name].append(args.size_mb / download(server.url))
        served_gb = args.size_mb * args.rounds / 1000
        cpu_per_gb = {
            name: (cpu_seconds(server.pid) - cpu_before[name]) / served_gb
            for name, server in servers.items()
        }

    print(f"{args.size_mb} MB file, {args.rounds} downloads per server, client {client}")
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    for name, median in medians.items():
        spread = f"min {min(speeds[name]):.0f} max {max(speeds[name]):.0f}"
        cpu = f"server CPU {cpu_per_gb[name]:.2f} s/GB"
        print(f"  {name:24} median {median:8.0f} MB/s  ({spread}; {cpu})")
    ratio = medians["zlh artifacts serve"] / medians["python -m http.server"]
    print(f"ratio ours / http.server: {ratio:.2f}x")
    if "nginx" in medians:
        print(f"ratio ours / nginx: {medians['zlh artifacts serve'] / medians['nginx']:.2f}x")


if __name__ == "__main__":
    main()
