"""The front's scheduling policy (setting ``front_scheduling``): ``batch`` against ``normal``,
in alternating turns of one run, with the harness's nginx run both ways beside them.

    .venv/bin/python bench/proxy_sched.py          # ROUNDS=5 DURATION=5 HOGS=2

Four servers route ``/dev/100/ide/`` to one upstream, the shared proxy harness's
``servers/upstream.js`` in ``$BENCH_DIR`` (``../shared/bench/proxy/``, outside this repository,
copied there by a run of bench/proxy.py: run that once first), on a free port:

* the front as ``zlh up --workers 2`` runs it (``bench/proxy.py --serve``, ``WORKERS=2``: the
  process that stands for the API's and one child worker), once with ``front_scheduling``
  ``batch`` (as shipped) and once ``normal``;
* nginx with the harness's configuration (``servers/nginx-proxy.conf.tmpl``: two workers), once
  as the harness runs it and once with its workers moved to ``SCHED_BATCH`` (``chrt -b``), to
  show what the policy is worth to a proxy that is not ours.

Each round runs, on every server in turn (order reversed every other round), two ``wrk -t1``
turns of DURATION seconds on the small GET (223 B JSON):

* ``load``: 32 connections on an otherwise quiet box, as the harness's ``small`` test: req/s,
  the server's CPU µs per request (its process tree's user+system time), p50 and p99;
* ``busy``: one connection while HOGS processes spin on the CPU (a host whose containers build):
  what one customer's request waits, p50 and p99.

Prints every turn, the medians per server and test, and each policy's batch/normal ratios.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from statistics import median

from proxy import BENCH_DIR, bench_session, free_port, start_upstream, wait_for_port
from proxy_floor import cpu_seconds

ROUNDS = int(os.environ.get("ROUNDS", "5"))
DURATION = int(os.environ.get("DURATION", "5"))
HOGS = int(os.environ.get("HOGS", "2"))
PATH = "/dev/100/ide/small.json"
SERVERS = ("front batch", "front normal", "nginx", "nginx batch")
TESTS = {"load": 32, "busy": 1}
WRK = ("wrk", "-t1", "--latency")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children[current])
    return found


def milliseconds(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def turn(pid: int, url: str, cookie: str, connections: int) -> dict[str, float]:
    pids = descendants(pid)
    before = sum(cpu_seconds(pid) for pid in pids)
    out = subprocess.run(
        [*WRK, f"-c{connections}", f"-d{DURATION}s", "-H", f"Cookie: {cookie}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    used = sum(cpu_seconds(pid) for pid in pids) - before
    if "Non-2xx or 3xx responses" in out:
        raise SystemExit(f"{url} answered errors under load:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return {
        "req/s": rate,
        "cpu µs/req": used / (rate * DURATION) * 1e6,
        "p50 ms": milliseconds(latency["50"]),
        "p99 ms": milliseconds(latency["99"]),
    }


def start_nginx(port: int, upstream_port: int, name: str) -> subprocess.Popen[bytes]:
    run_dir = BENCH_DIR / "run"
    (run_dir / "nginx-tmp").mkdir(parents=True, exist_ok=True)
    conf = (BENCH_DIR / "servers" / "nginx-proxy.conf.tmpl").read_text()
    conf = conf.replace("@PORT@", str(port)).replace("@UPSTREAM_PORT@", str(upstream_port))
    conf = conf.replace("@RUN@", str(run_dir)).replace("nginx-proxy.pid", f"{name}.pid")
    path = run_dir / f"{name}.conf"
    path.write_text(conf)
    return subprocess.Popen(["nginx", "-p", str(run_dir), "-c", str(path), "-g", "daemon off;"])


def main() -> int:
    if not (BENCH_DIR / "servers" / "nginx-proxy.conf.tmpl").is_file():
        raise SystemExit(f"{BENCH_DIR} is not set up: run bench/proxy.py once first")
    cookie, env = bench_session()
    upstream_port = free_port()
    procs = [start_upstream(upstream_port)]
    hogs: list[subprocess.Popen[bytes]] = []
    servers: dict[str, tuple[int, int]] = {}  # name -> (pid, port)
    try:
        wait_for_port(upstream_port, procs[0])
        for name in SERVERS:
            port = free_port()
            if name.startswith("front"):
                policy = name.split()[1]
                served = dict(env, WORKERS="2", BASE_PORT=str(upstream_port))
                served["FRONT_SCHEDULING"] = policy
                serve = [sys.executable, str(Path(__file__).with_name("proxy.py")), "--serve"]
                proc = subprocess.Popen([*serve, str(port)], env=served)
            else:
                proc = start_nginx(port, upstream_port, name.replace(" ", "-"))
            procs.append(proc)
            wait_for_port(port, proc)
            servers[name] = (proc.pid, port)
        for name, (pid, port) in servers.items():
            url = f"http://127.0.0.1:{port}{PATH}"
            workers = [p for p in descendants(pid) if p != pid or name.startswith("front")]
            if len(workers) < 2:
                raise SystemExit(f"{name} runs {len(workers)} worker process(es), not 2")
            if name == "nginx batch":
                for worker in workers:
                    os.sched_setscheduler(worker, os.SCHED_BATCH, os.sched_param(0))
            turn(pid, url, cookie, 32)  # warm-up, and the check that it answers 2xx
        results: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
        for round_ in range(ROUNDS):
            order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
            for test, connections in TESTS.items():
                if test == "busy":
                    spin = ["sh", "-c", "while :; do :; done"]
                    hogs = [subprocess.Popen(spin) for _ in range(HOGS)]
                for name in order:
                    pid, port = servers[name]
                    got = turn(pid, f"http://127.0.0.1:{port}{PATH}", cookie, connections)
                    results[(name, test)].append(got)
                    shown = "  ".join(f"{k} {v:,.2f}" for k, v in got.items())
                    print(f"round {round_ + 1} {test:<4} {name:<12} {shown}", flush=True)
                for hog in hogs:
                    hog.kill()
                    hog.wait()
                hogs = []
        print(f"\n# medians of {ROUNDS} rounds of {DURATION} s (busy: {HOGS} spinning processes)")
        for test in TESTS:
            for name in SERVERS:
                runs = results[(name, test)]
                shown = "  ".join(f"{k} {median(r[k] for r in runs):,.2f}" for k in runs[0])
                print(f"{test:<4} {name:<12} {shown}")
        print("\n# batch / normal (medians)")
        for test in TESTS:
            for server, batch, normal in (
                ("front", "front batch", "front normal"),
                ("nginx", "nginx batch", "nginx"),
            ):
                ratios = []
                for key in results[(batch, test)][0]:
                    b = median(r[key] for r in results[(batch, test)])
                    n = median(r[key] for r in results[(normal, test)])
                    ratios.append(f"{key} {b / n:.2f}x")
                print(f"{test:<4} {server:<6} " + "  ".join(ratios))
        front = median(r["req/s"] for r in results[("front batch", "load")])
        nginx = median(r["req/s"] for r in results[("nginx", "load")])
        print(
            f"\n# load req/s, front (batch, as shipped) / nginx (as the harness runs it): "
            f"{front / nginx:.2f}x"
        )
    finally:
        for hog in hogs:
            hog.kill()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
