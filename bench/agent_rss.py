"""Agent memory benchmark: prints numbers, asserts nothing.

1. The idle agent: a fresh ``python -OO -m zlh.cli agent`` (as the LXC template's unit runs
   it) after one authenticated ``GET /status`` and a second of idling: ``VmRSS`` and
   ``Pss`` (``/proc/PID/smaps_rollup``), median of N fresh agents (goal <= 45 MB RSS).
2. The same after one provisioning: a runtime-shaped artifact served by
   ``zlh artifacts serve`` (bench/agent_install.py builds and serves it), installed through
   ``POST /provision`` until ``/status`` says ready, then a second of idling.
3. The baseline in the same run: bare interpreters that only ``import asyncio, ssl`` and
   ``import aiohttp.web`` (the agent without its aiohttp cannot be had any more), and the ratio
   agent / baseline.
4. Where the idle agent's memory goes: the RSS each step of its import path adds (CLI, aiohttp,
   pydantic, the wire schemas, the agent's modules), in one interpreter; with ``--imports``, also
   the 15 modules whose own code adds most.
5. With ``--parsers``: what the pure-Python aio-libs cost in time, on an aiohttp server like the
   agent's: a 256 MB upload (``curl -T``), a 256 MB download and 200 small GETs (one curl,
   one connection), with and without the switches, alternating, medians of 3.

Every process runs from compiled bytecode, as the agent does in a container (pip compiles
it at install): a cache in a temporary ``PYTHONPYCACHEPREFIX``, warmed by one start that is not
counted. Compiling the sources at every start instead adds ~2.7 MB of RSS.

    .venv/bin/python bench/agent_rss.py [--runs 5] [--artifact-mb 105] [--imports] [--parsers]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from agent_install import (
    provision,
    rss_mb,
    runtime_payload,
    served_artifact,
    start_agent,
    synthetic_tarball,
)
from zlh.agent.main import PURE_PYTHON_SWITCHES
from zlh.schemas import Artifact

# As the LXC template's unit runs it (src/zlh/backends/lxc/template.py, AGENT_UNIT).
ZLH_SCRIPT = [sys.executable, "-OO", "-m", "zlh.cli"]
GOAL_MB = 45.0

BASELINES = {
    "python + asyncio, ssl": "import asyncio, ssl",
    "python + aiohttp.web": "import aiohttp.web",
}

# Run in a child interpreter: the RSS each step of the agent's import path adds, in the order
# ``zlh agent`` imports them (the CLI first, then the handler with aio-libs in pure Python).
STEPS = """
import importlib, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
last = rss()
print(f"  {'interpreter':38} {last:5.1f} MB")
def step(name, run):
    global last
    run()
    now = rss()
    print(f"  {name:38} {now:5.1f} MB  +{now - last:4.1f}")
    last = now
step("zlh.cli (asyncio, ssl, parser)", lambda: importlib.import_module("zlh.cli").build_parser())
from zlh.agent.main import pure_python_aio_libs
with pure_python_aio_libs():
    for name in ("aiohttp.web", "pydantic", "zlh.schemas", "zlh.agent.provisioner",
                 "zlh.agent.routes", "zlh.agent.app"):
        step(name, lambda: importlib.import_module(name))
"""

# With --imports: each module's own RSS (its import minus the imports it triggered).
OWN = """
import importlib, importlib.machinery as m, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
stack, own = [], {}
def wrap(cls, attr):
    orig = getattr(cls, attr)
    def run(self, arg):
        name = getattr(arg, "name", None) or arg.__spec__.name
        stack.append(0.0)
        before = rss()
        try:
            return orig(self, arg)
        finally:
            total, nested = rss() - before, stack.pop()
            own[name] = own.get(name, 0.0) + total - nested
            if stack:
                stack[-1] += total
    setattr(cls, attr, run)
wrap(m.SourceFileLoader, "exec_module")
wrap(m.SourcelessFileLoader, "exec_module")
wrap(m.ExtensionFileLoader, "create_module")
importlib.import_module("zlh.cli").build_parser()
from zlh.agent.main import pure_python_aio_libs
with pure_python_aio_libs():
    import zlh.agent.app
for name, mb in sorted(own.items(), key=lambda kv: -kv[1])[:15]:
    print(f"  {mb:4.2f} MB  {name}")
"""


# Run in a child with and without the switches: upload, download, small GETs through curl.
PARSERS = """
import asyncio, sys, time
from aiohttp import web
SIZE = 256 * 2**20
async def upload(request):
    n = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        n += len(chunk)
    assert n == SIZE
    return web.Response(text="ok")
async def download(request):
    resp = web.StreamResponse()
    resp.content_length = SIZE
    await resp.prepare(request)
    block = bytes(256 * 1024)
    for _ in range(SIZE // len(block)):
        await resp.write(block)
    await resp.write_eof()
    return resp
async def small(request):
    return web.json_response({"state": "idle"})
async def timed(*args):
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("curl", "-sf", "-o", "/dev/null", *args)
    code = await proc.wait()
    assert code == 0
    return time.perf_counter() - start
async def main():
    app = web.Application()
    app.router.add_put("/u", upload)
    app.router.add_get("/d", download)
    app.router.add_get("/s", small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    with open(sys.argv[2], "w") as config:
        config.write(f"url = {url}/s\\noutput = /dev/null\\n" * 200)
    up = await timed("-T", sys.argv[1], url + "/u")
    down = await timed(url + "/d")
    gets = await timed("-K", sys.argv[2])
    print(up, down, gets / 200)
    await runner.cleanup()
asyncio.run(main())
"""


def pss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no Pss")


def cached_env(cache: Path) -> dict[str, str]:
    """The environment with bytecode written to and read from ``cache``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str(cache)}


def idle_agent(root: Path, env: Mapping[str, str], body: dict[str, object] | None) -> list[float]:
    """[RSS, Pss] of a fresh agent after /status and a second idle, then after provisioning."""
    proc, http = start_agent(root, command=ZLH_SCRIPT, env=env)
    try:
        status = http.get("/status")  # outside the assert: the bench also runs under -OO
        assert status.status_code == 200, status.text
        time.sleep(1.0)
        numbers = [rss_mb(proc.pid), pss_mb(proc.pid)]
        if body is not None:
            provision(http, body)
            time.sleep(1.0)
            numbers += [rss_mb(proc.pid), pss_mb(proc.pid)]
        return numbers
    finally:
        http.close()
        proc.terminate()
        proc.wait(30)


def baseline(code: str, env: Mapping[str, str]) -> float:
    """RSS of an interpreter that ran ``code`` and now waits."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('ready', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"ready\n", line
        return rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)


def median_of(runs: int, measure: Callable[[int], list[float]]) -> list[float]:
    results = [measure(i) for i in range(runs)]
    return [statistics.median(column) for column in zip(*results, strict=True)]


def child(code: str, env: Mapping[str, str]) -> str:
    return child_argv([code], env)


def child_argv(argv: list[str], env: Mapping[str, str]) -> str:
    """stdout of ``python -c argv[0] argv[1:]``."""
    return subprocess.run(
        [sys.executable, "-c", *argv], env=env, check=True, capture_output=True, text=True
    ).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description="Agent memory benchmark (docs/performance.md)")
    parser.add_argument("--runs", type=int, default=5, help="fresh agents per figure")
    parser.add_argument("--artifact-mb", type=int, default=105, help="size of the runtime")
    parser.add_argument("--imports", action="store_true", help="list the costliest modules")
    parser.add_argument("--parsers", action="store_true", help="time the pure-Python aio-libs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zlh-bench-rss-"))
    try:
        env = cached_env(work / "pycache")
        tarball = work / "rt.tar.gz"
        synthetic_tarball(tarball, min_bytes=args.artifact_mb * 2**20)
        with served_artifact(tarball, work) as (artifact, url):
            body = runtime_payload(artifact, url)
            idle_agent(work / "warm", env, None)  # fills the bytecode cache
            for code in BASELINES.values():
                baseline(code, env)
            idle = median_of(args.runs, lambda i: idle_agent(work / f"i{i}", env, None))
            provisioned = median_of(args.runs, lambda i: idle_agent(work / f"p{i}", env, body))
        bases = {
            name: statistics.median(baseline(code, env) for _ in range(args.runs))
            for name, code in BASELINES.items()
        }
        report(args, artifact, idle, provisioned[2:], bases)
        print("where the idle agent's memory goes (RSS after each import, one interpreter):")
        print(child(STEPS, env), end="")
        if args.imports:
            print("the modules whose own code adds most RSS:")
            print(child(OWN, env), end="")
        if args.parsers:
            parsers(work, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    artifact: Artifact,
    idle: list[float],
    provisioned: list[float],
    bases: dict[str, float],
) -> None:
    verdict = "ok" if idle[0] <= GOAL_MB else "miss"
    print(f"medians of {args.runs} fresh agents ({' '.join(ZLH_SCRIPT)}), bytecode cached:")
    print(f"  idle:              RSS {idle[0]:.1f} MB  Pss {idle[1]:.1f} MB"
          f"  (goal <= {GOAL_MB:.0f} MB RSS: {verdict})")  # fmt: skip
    print(f"  after provisioning a {artifact.size / 2**20:.0f} MB runtime:"
          f" RSS {provisioned[0]:.1f} MB  Pss {provisioned[1]:.1f} MB")  # fmt: skip
    for name, rss in bases.items():
        print(f"  baseline {name}: RSS {rss:.1f} MB; idle agent / baseline {idle[0] / rss:.2f}x")


def parsers(work: Path, env: Mapping[str, str]) -> None:
    blob = work / "blob"
    with blob.open("wb") as f:
        f.truncate(256 * 2**20)
    pure = dict(env) | dict.fromkeys(PURE_PYTHON_SWITCHES, "1")
    kinds = {"C extensions": dict(env), "pure Python": pure}
    times: dict[str, list[list[float]]] = {kind: [] for kind in kinds}
    for _ in range(3):  # alternating, so load on the machine hits both alike
        for kind, kind_env in kinds.items():
            out = child_argv([PARSERS, str(blob), str(work / "curl.cfg")], kind_env)
            times[kind].append([float(x) for x in out.split()])
    print("aiohttp server, medians of 3 (256 MB up, 256 MB down, a small GET):")
    for kind, rows in times.items():
        up, down, get = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"  {kind:13} upload {up:.2f} s  download {down:.2f} s  GET {get * 1e6:.0f} us")


if __name__ == "__main__":
    main()
