"""A port preview against the IDE path, through one front, in alternating turns of one run.

    .venv/bin/python bench/proxy_preview.py             # ROUNDS=7 DURATION=5

The front is this checkout's ``bench/proxy.py --serve`` (compiled when built so) with vmid 100's
IDE routed to one copy of the harness's upstream (``servers/upstream.js`` in ``$BENCH_DIR``, set
up by a run of bench/proxy.py; the shared proxy harness ``../shared/bench/proxy/`` is outside
this repository) and its preview of port P to a second copy listening on P (a container's
code-server port is never previewed, so the two cannot be one). Both paths are checked first
(200 with the IDE cookie, 4xx without). Each round runs one ``wrk -t1`` turn of DURATION seconds
of the small GET (223 B JSON, 32 connections) on each path, the IDE first in odd rounds and the
preview first in even ones. Prints every turn, the medians of req/s and of the front's CPU µs
per request, and preview/IDE as the ratio of the medians and the median of the per-round
ratios. Goal: a preview within 10 % of the IDE path (ratio >= 0.9).
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from pathlib import Path
from statistics import median

from proxy import bench_session, free_port, start_upstream, wait_for_port
from proxy_floor import turn

ROUNDS = int(os.environ.get("ROUNDS", "7"))
DURATION = int(os.environ.get("DURATION", "5"))
WARMUP = 2
CONNECTIONS = 32
GOAL = 0.9


def check(port: int, path: str, cookie: str) -> None:
    for sent in (cookie, None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path, headers={"Cookie": sent} if sent else {})
        response = conn.getresponse()
        response.read()
        conn.close()
        if sent and response.status != 200:
            raise SystemExit(f"GET {path}: {response.status}")
        if not sent and not 400 <= response.status < 500:
            raise SystemExit(f"GET {path} without a cookie: {response.status}")


def main() -> int:
    cookie, env = bench_session()
    ide_upstream, preview_upstream, port = free_port(), free_port(), free_port()
    paths = {
        "ide": "/dev/100/ide/small.json",
        "preview": f"/dev/100/port/{preview_upstream}/small.json",
    }
    procs: list[subprocess.Popen[bytes]] = []
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    try:
        for upstream_port in (ide_upstream, preview_upstream):
            upstream = start_upstream(upstream_port)
            procs.append(upstream)
            wait_for_port(upstream_port, upstream)
        bench = Path(__file__).with_name("proxy.py")
        front = subprocess.Popen(
            [sys.executable, str(bench), "--serve", str(port)],
            env=dict(env, BASE_PORT=str(ide_upstream)),
        )
        procs.append(front)
        wait_for_port(port, front)
        for path in paths.values():
            check(port, path, cookie)

        def timed(name: str, duration: int) -> tuple[float, float]:
            url = f"http://127.0.0.1:{port}{paths[name]}"
            return turn(front.pid, url, cookie, connections=CONNECTIONS, duration=duration)

        for name in paths:
            timed(name, WARMUP)
        for round_no in range(1, ROUNDS + 1):
            order = list(paths) if round_no % 2 else list(paths)[::-1]
            for name in order:
                rate, us = timed(name, DURATION)
                runs[name].append((rate, us))
                print(f"round {round_no} {name:<7} {rate:9.1f} req/s {us:7.1f} us/req", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    print(f"\n# medians of {ROUNDS} rounds ({DURATION} s each), alternating order")
    for name, values in runs.items():
        rate, us = median(v for v, _ in values), median(u for _, u in values)
        print(f"{name:<7} {rate:9.1f} req/s {us:7.1f} us/req")
    ide, preview = runs["ide"], runs["preview"]
    overall = median(v for v, _ in preview) / median(v for v, _ in ide)
    per_round = sorted(p[0] / i[0] for p, i in zip(preview, ide, strict=True))
    cpu = median(u for _, u in preview) / median(u for _, u in ide)
    verdict = "ok" if overall >= GOAL else "MISS"
    print(
        f"preview/ide req/s: {overall:.3f}x overall (goal >= {GOAL}x: {verdict}), per-round median "
        f"{per_round[len(per_round) // 2]:.3f}x (range {per_round[0]:.2f}-{per_round[-1]:.2f}); "
        f"CPU per request {cpu:.3f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
