"""The front of two checkouts of this repo (before and after a change) on the same workloads,
in alternating turns of one run, so that drift on a shared, noisy machine falls on both alike.

    .venv/bin/python bench/proxy_ab.py --before /tmp/zlh-front-before --after /tmp/zlh-front-after
    ROUNDS=9 DURATION=5 TESTS=small,big .venv/bin/python bench/proxy_ab.py --before ... --after ...

Each tree is a checkout with its front compiled in place, built the same way for both, e.g.
with a Python that has setup.py's build requirements (pyproject.toml's ``[build-system]``):

    git worktree add --detach /tmp/zlh-front-before <rev>
    cd /tmp/zlh-front-before && ZLH_COMPILE_FRONT=1 <that python> setup.py build_ext --inplace

Each front runs as that tree's own ``bench/proxy.py --serve PORT`` (``PYTHONPATH=<tree>/src``),
with the key and Cookie header of that tree's own ``bench_session()``: a tree's bench knows
which of its listeners serves IDEs and with which cookie. Both fronts route vmid 100 to one
upstream, the harness's ``servers/upstream.js`` in ``$BENCH_DIR`` (the shared proxy harness
``../shared/bench/proxy/``, outside this repository, copied there by a run of bench/proxy.py)
on a free port (or ``$BASE_PORT``).

Every front is checked first (200 and the upstream's body with its cookie, 4xx without), then
warmed up. Each round runs, per test, one ``wrk -t1`` turn of DURATION seconds on each front,
before then after in odd rounds and the other way round in even ones: ``small`` is the 223 B
JSON with 32 connections (req/s), ``big`` the 500 KB body with 8 connections (MB/s), as in the
harness. CPU is the front process's user+system time over its turn. Prints every turn, then per
test and tree the medians of the rate and of CPU µs per request, and after/before as the ratio
of the medians and as the median (and range) of the ratios of the two turns of each round.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from proxy import free_port, start_upstream, wait_for_port
from proxy_floor import turn

ROUNDS = int(os.environ.get("ROUNDS", "9"))
DURATION = int(os.environ.get("DURATION", "5"))
TESTS = os.environ.get("TESTS", "small,big").split(",")
WARMUP = 2
BIG = 500 * 1024  # the upstream's big.js


@dataclass(frozen=True)
class Test:
    path: str
    connections: int
    unit: str
    per_request: float  # unit per request: 1 for req/s, the body in MB for MB/s


WORKLOADS = {
    "small": Test("/dev/100/ide/small.json", 32, "req/s", 1.0),
    "big": Test("/dev/100/ide/big.js", 8, "MB/s", BIG / 1e6),
}

PROBE = """
import json, proxy, zlh.proxy.front as front
cookie, env = proxy.bench_session()
print(json.dumps({"cookie": cookie, "key": env["ZLH_BENCH_KEY"], "front": front.__file__}))
"""


@dataclass
class Tree:
    name: str
    root: Path
    revision: str = ""
    cookie: str = ""
    key: str = ""
    port: int = 0
    pid: int = 0
    runs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def probe(self) -> None:
        """The tree's revision and its bench's cookie and key; refuses an uncompiled or stale
        front."""
        if not (self.root / "bench" / "proxy.py").is_file():
            raise SystemExit(f"{self.root} is not a checkout of this repo")
        git = ["git", "-C", str(self.root)]
        rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
        self.revision = (rev.stdout.strip() or "?") + (" (+changes)" if changed.stdout else "")
        out = subprocess.run(
            [sys.executable, "-c", PROBE],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found = json.loads(out.strip().splitlines()[-1])
        self.cookie, self.key = found["cookie"], found["key"]
        front = Path(found["front"])
        if front.suffix != ".so" or not front.is_relative_to(self.root):
            raise SystemExit(f"{self.name}: zlh.proxy.front is {front}, not built in {self.root}")
        proxy_dir = front.parent
        for compiled in proxy_dir.glob("*.so"):
            source = proxy_dir / (compiled.name.split(".", 1)[0] + ".py")
            if source.exists() and source.stat().st_mtime > compiled.stat().st_mtime:
                raise SystemExit(f"{self.name}: {compiled} is older than {source}: rebuild")

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=f"{self.root / 'src'}{os.pathsep}{self.root / 'bench'}")
        env.pop("ZLH_BENCH_LLHTTP_ONLY", None)
        return dict(env, **extra)

    def serve(self, upstream_port: int) -> subprocess.Popen[bytes]:
        self.port = free_port()
        cmd = [sys.executable, str(self.root / "bench" / "proxy.py"), "--serve", str(self.port)]
        env = self.env(ZLH_BENCH_KEY=self.key, BASE_PORT=str(upstream_port))
        env["PYTHONPATH"] = str(self.root / "src")
        return subprocess.Popen(cmd, env=env, cwd=self.root)

    def check(self) -> None:
        """200 and the upstream's body for every workload with the cookie, 4xx without."""
        for name in TESTS:
            path = WORKLOADS[name].path
            for cookie in (self.cookie, None):
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
                response = conn.getresponse()
                body = response.read()
                conn.close()
                if cookie and (response.status != 200 or (name == "big" and len(body) != BIG)):
                    raise SystemExit(f"{self.name}: GET {path}: {response.status}, {len(body)} B")
                if not cookie and not 400 <= response.status < 500:
                    raise SystemExit(f"{self.name}: GET {path} without a cookie: {response.status}")


def run_turn(tree: Tree, test: str, duration: int) -> tuple[float, float]:
    work = WORKLOADS[test]
    url = f"http://127.0.0.1:{tree.port}{work.path}"
    rate, us = turn(tree.pid, url, tree.cookie, connections=work.connections, duration=duration)
    return rate * work.per_request, us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="checkout, front compiled")
    parser.add_argument("--after", type=Path, required=True, help="checkout, front compiled")
    args = parser.parse_args()
    if unknown := set(TESTS) - set(WORKLOADS):
        raise SystemExit(f"unknown TESTS {sorted(unknown)}: pick from {sorted(WORKLOADS)}")
    trees = [Tree("before", args.before.resolve()), Tree("after", args.after.resolve())]
    for tree in trees:
        tree.probe()
        cookie_name = tree.cookie.split("=", 1)[0]
        print(f"# {tree.name:<6} {tree.root} at {tree.revision}, cookie {cookie_name}")
    upstream_port = int(os.environ.get("BASE_PORT", "0")) or free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream = start_upstream(upstream_port)
        procs.append(upstream)
        wait_for_port(upstream_port, upstream)
        for tree in trees:
            proc = tree.serve(upstream_port)
            procs.append(proc)
            wait_for_port(tree.port, proc)
            tree.pid = proc.pid
            tree.check()
            tree.runs = {test: [] for test in TESTS}
        for test in TESTS:
            for tree in trees:
                run_turn(tree, test, WARMUP)
        for round_no in range(1, ROUNDS + 1):
            order = trees if round_no % 2 else trees[::-1]
            for test in TESTS:
                unit = WORKLOADS[test].unit
                for tree in order:
                    value, us = run_turn(tree, test, DURATION)
                    tree.runs[test].append((value, us))
                    print(
                        f"round {round_no} {test:<5} {tree.name:<6} {value:9.1f} {unit:<5} "
                        f"{us:7.1f} us/req",
                        flush=True,
                    )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    before, after = trees
    print(f"\n# medians of {ROUNDS} rounds ({DURATION} s each), alternating order")
    for test in TESTS:
        unit = WORKLOADS[test].unit
        for tree in trees:
            values = tree.runs[test]
            print(
                f"{test:<5} {tree.name:<12} {median(v for v, _ in values):9.1f} {unit:<5} "
                f"{median(u for _, u in values):7.1f} us/req"
            )
        b, a = before.runs[test], after.runs[test]
        rate_ratio = median(v for v, _ in a) / median(v for v, _ in b)
        us_ratio = median(u for _, u in a) / median(u for _, u in b)
        paired_rate = [x[0] / y[0] for x, y in zip(a, b, strict=True)]
        paired_us = [x[1] / y[1] for x, y in zip(a, b, strict=True)]
        print(
            f"{test:<5} after/before {rate_ratio:9.3f}x {unit:<5} {us_ratio:6.3f}x us/req"
            f"  (per round: {unit} {median(paired_rate):.3f}x, "
            f"{min(paired_rate):.3f}-{max(paired_rate):.3f}; "
            f"us/req {median(paired_us):.3f}x, {min(paired_us):.3f}-{max(paired_us):.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
