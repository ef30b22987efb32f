"""Benchmark the LXC platform: shared layers off and on (and the warm pool), and the bare backend.

Run as root from the repository root, on a host with LXC; nothing is downloaded (the artifacts
come from the test build cache, the template from the tests' debootstrapped base):

    .venv/bin/python bench/backend_lxc.py [--modes backend,off,on] [--count 10] [--idle 5]

Every mode runs on a fresh data dir ``<bench dir>/bench-lxc-<mode>``: its artifact store filled
with node and code-server from ``--cache-dir`` (as ``zlh demo`` fills it), its template built
from ``--template-cache``. The bench destroys every container it made and removes the data dir
when the mode ends, fails or is interrupted; the platform's log is kept as
``<bench dir>/bench-lxc-<mode>.log``.

- ``backend``: the lxc backend alone, no platform: clone+start to agent ready (GET /status 200
  over the bridge) for ``--count`` containers one after another, then each one's idle cgroup
  memory.
- ``off``, ``on``: ``zlh up`` (a subprocess) with the setting ``layers`` false or true.
  First ``--count`` concurrent requests on the fresh platform (no layer built yet): each one's
  request → IDE ready; with layers on the platform's log must hold exactly one ``built layer``
  line per layer (node and code-server), with layers off none, else the bench exits 1. Then
  ``--count`` sequential requests: request → IDE ready and, once ready, the container's own
  disk (``du -sx`` of its overlay upper dir); the last ``--idle`` stay up and, after
  ``--settle-s`` seconds idle, give the memory figures: what the cgroup charges (memory.current
  on cgroup v2, memory.usage_in_bytes on v1), its memory.stat file/anon split, and the Pss of
  its code-server processes (``/proc/PID/smaps_rollup``: a page shared by n processes counts
  1/n in each, so one shared copy of code-server's files shows as a smaller Pss_File).
- ``pool``: ``zlh up`` with layers and ``warm_pool`` 1: sequential requests only, each made
  once the pool is full again (the admin listing holds a ready pool container).

Request → IDE ready: from ``POST /api/dev`` (node with code-server) until the front answers
the workbench HTML: the container's events until ``ready``, then ``GET ide-url`` and that URL
through the front, following the ticket's redirect, until a 200 whose body holds "workbench".
Each figure of ``on`` and ``pool`` is also printed as a ratio to ``off`` of the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from zlh.api.commands import prepare_private
from zlh.api.settings import load_settings
from zlh.artifacts.builders import build
from zlh.artifacts.store import ArtifactStore
from zlh.backends import ContainerInfo, ContainerSpec, create_backend
from zlh.backends.lxc import LxcBackend
from zlh.backends.lxc.cgroup import cgroup_version, payload_dirs
from zlh.backends.lxc.idmap import container_idmap
from zlh.backends.lxc.template import build_template
from zlh.demo.admin import ensure_admin
from zlh.demo.platform import UP_LOG, Platform, running_platform
from zlh.dev.client import PlatformClient, api_error

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support import free_port_pair  # noqa: E402

FIRST_VMID = 9201  # the backend mode's containers
ARTIFACTS = ("node", "code-server")
DEV_REQUEST = {"runtime": "node", "addons": ["code-server"]}
PLATFORM_MODES = ("off", "on", "pool")
MODES = ("backend", *PLATFORM_MODES)
READY_TIMEOUT_S = 900.0
POLL_S = 0.02  # between two probes of something that is not there yet
MB = 2**20
BUILT_LAYER = re.compile(r"built layer (?P<sha>[0-9a-f]{64}) \((?P<label>[^)]*)\) in \S+")
GOAL_READY_ON_S = 3.0
GOAL_READY_POOL_S = 1.0
GOAL_DISK_ON_MB = 20.0


class BenchError(Exception):
    """A step of the bench failed: one line saying which."""


@dataclass
class ModeResult:
    """The figures one mode measured (None: not measured in this mode)."""

    mode: str
    ready_s: list[float] = field(default_factory=list)
    state_s: list[float] = field(default_factory=list)  # of ready_s: until the state is ready
    concurrent_s: list[float] = field(default_factory=list)
    disk_mb: list[float] = field(default_factory=list)
    memory_mb: list[float] = field(default_factory=list)
    file_mb: list[float] = field(default_factory=list)
    anon_mb: list[float] = field(default_factory=list)
    pss_mb: list[float] = field(default_factory=list)
    pss_file_mb: list[float] = field(default_factory=list)
    layer_lines: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- figures


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (p95 of 10 values is the largest but none)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def upper_dir(data_dir: Path, vmid: int) -> Path:
    """The clone's own overlay layer: the path after the last ':' of ``lxc.rootfs.path``."""
    config = data_dir / "lxc" / f"zlh-{vmid}" / "config"
    for line in config.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "lxc.rootfs.path":
            return Path(value.strip().rpartition(":")[2])
    raise BenchError(f"{config} has no lxc.rootfs.path")


def disk_mb(data_dir: Path, vmid: int) -> float:
    du = subprocess.run(
        ["du", "-sxB1", str(upper_dir(data_dir, vmid))], capture_output=True, text=True, check=True
    )
    return int(du.stdout.split()[0]) / MB


def memory_stat(vmid: int) -> tuple[float, float]:
    """The container cgroup's page cache and anonymous memory, MB."""
    version = cgroup_version()
    dirs = payload_dirs(f"zlh-{vmid}", version)
    if dirs is None:
        raise BenchError(f"container {vmid}: no cgroup at LXC's default place")
    stat = dict(line.split() for line in (dirs[1] / "memory.stat").read_text().splitlines())
    file_key, anon_key = ("file", "anon") if version == 2 else ("total_cache", "total_rss")
    return int(stat[file_key]) / MB, int(stat[anon_key]) / MB


def cgroup_pids(vmid: int) -> Iterator[int]:
    """Every process in the container's cgroup and the cgroups below it (systemd's)."""
    dirs = payload_dirs(f"zlh-{vmid}", cgroup_version())
    if dirs is None:
        raise BenchError(f"container {vmid}: no cgroup at LXC's default place")
    for root, _, _ in os.walk(dirs[1]):
        procs = Path(root) / "cgroup.procs"
        if procs.is_file():
            yield from (int(pid) for pid in procs.read_text().split())


def code_server_pss(vmid: int) -> tuple[float, float]:
    """Pss and Pss_File (MB) summed over the container's code-server processes."""
    pss = pss_file = 0
    found = False
    for pid in cgroup_pids(vmid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        if not any(b"code-server" in arg for arg in argv):
            continue
        fields = {
            k: v.split()[0] for k, _, v in (line.partition(":") for line in rollup.splitlines()[1:])
        }
        pss += int(fields["Pss"])
        pss_file += int(fields["Pss_File"])
        found = True
    if not found:
        raise BenchError(f"container {vmid}: no code-server process")
    return pss / 1024, pss_file / 1024


def layer_builds(log: Path) -> list[str]:
    return [
        line for line in log.read_text(errors="replace").splitlines() if BUILT_LAYER.search(line)
    ]


def check_layer_builds(lines: list[str], *, layers: bool) -> str | None:
    """What is wrong with the log's ``built layer`` lines, or None: with layers exactly one
    per layer, for node and code-server; without layers none."""
    found = [m for line in lines if (m := BUILT_LAYER.search(line))]
    if not layers:
        return f"layers off, yet {len(found)} built layer lines" if found else None
    shas = [m["sha"] for m in found]
    twice = sorted({sha for sha in shas if shas.count(sha) > 1})
    if twice:
        return f"layers built more than once: {', '.join(twice)}"
    labels = " | ".join(m["label"] for m in found)
    if len(found) != len(ARTIFACTS) or not all(name in labels for name in ARTIFACTS):
        return f"expected one built layer each of {', '.join(ARTIFACTS)}, got: {labels or 'none'}"
    return None


# ---------------------------------------------------------------- the platform side


def settings_toml(mode: str, count: int) -> str:
    """The mode's ``api.toml``: layers, the pool, and room for the bench's containers."""
    lines = [
        f"layers = {'false' if mode == 'off' else 'true'}",
        f"max_containers_per_user = {count + 1}",
        f"max_running_per_user = {count + 1}",
        "idle_stop_after = 0",
        f"warm_pool = {1 if mode == 'pool' else 0}",  # off and on must not take from a pool
    ]
    return "\n".join(lines) + "\n"


def prepare(data_dir: Path, mode: str, args: argparse.Namespace, listen: str) -> str:
    """The mode's data dir made ready for ``zlh up``; the admin's password."""
    data_dir.mkdir(mode=0o700, parents=True)
    toml = data_dir / "api.toml"
    toml.write_text(settings_toml(mode, args.count))
    toml.chmod(0o600)
    settings = load_settings(data_dir=data_dir, backend="lxc", listen=listen)
    prepare_private(settings)
    template_cache(data_dir, args.template_cache)
    for name in ARTIFACTS:
        build(
            name, version=None, store=ArtifactStore(settings.store_path), cache_dir=args.cache_dir
        )
    build_template(data_dir, idmap=container_idmap(allow_privileged=False))
    return ensure_admin(settings).password


def template_cache(data_dir: Path, cache: Path) -> None:
    """The debootstrapped base is shared (as the tests share it), not made again."""
    if not cache.is_dir():
        raise BenchError(f"no debootstrapped template base at {cache} (run the lxc tests once)")
    (data_dir / "cache").mkdir()
    (data_dir / "cache" / "template").symlink_to(cache.resolve())


def remove_data_dir(data_dir: Path) -> None:
    """Every container in ``data_dir`` destroyed, then the directory removed."""
    if (data_dir / "lxc").is_dir():
        backend = create_backend("lxc", data_dir=data_dir)
        for info in asyncio.run(backend.list()):
            asyncio.run(backend.destroy(info.vmid))
    shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def data_dir_for(bench_dir: Path, mode: str) -> Iterator[Path]:
    data_dir = (bench_dir / f"bench-lxc-{mode}").resolve()
    remove_data_dir(data_dir)  # what an interrupted run left
    try:
        yield data_dir
    finally:
        if (data_dir / UP_LOG).is_file():
            shutil.copyfile(data_dir / UP_LOG, bench_dir / f"bench-lxc-{mode}.log")
        remove_data_dir(data_dir)


def signed_in(platform: Platform, password: str) -> PlatformClient:
    client = PlatformClient(platform.base_url)
    client.sign_in("admin", password)
    return client


def twin(client: PlatformClient) -> PlatformClient:
    """Another HTTP connection with the same session (one per thread)."""
    other = PlatformClient(client.base_url)
    other.http.headers["Authorization"] = client.http.headers["Authorization"]
    return other


def wait_ready(client: PlatformClient, vmid: int, started: float, timeline: list[str]) -> None:
    """Follow the container's events until it is ready; each new state and step goes into
    ``timeline`` with the seconds since ``started``."""
    deadline = started + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        for event in client.events(vmid):
            step = f" {event.progress.step.value}" if event.progress else ""
            entry = f"{event.state}{step}"
            if not timeline or not timeline[-1].startswith(entry + " "):
                timeline.append(f"{entry} {time.monotonic() - started:.2f}")
            if event.state == "ready":
                return
            if event.state == "failed":
                raise BenchError(f"container {vmid} failed: {event.error}")
    raise BenchError(f"container {vmid} not ready within {READY_TIMEOUT_S:.0f} s")


def open_workbench(client: PlatformClient, vmid: int, deadline: float) -> None:
    """The IDE through the front, the way a browser gets in, until it serves the workbench."""
    response = client.http.get(f"/api/dev/{vmid}/ide-url")
    if response.status_code != 200:
        raise BenchError(str(api_error(response, f"ide-url of {vmid}")))
    with httpx.Client(timeout=30.0, follow_redirects=True) as browser:
        page = browser.get(response.json()["url"])  # the ticket, then the IDE with its cookie
        while not (page.status_code == 200 and "workbench" in page.text):
            if page.status_code == 404 or page.url.path == "/_zlh/auth":
                raise BenchError(f"IDE of {vmid}: {page.status_code} at {page.url}")
            if time.monotonic() > deadline:
                raise BenchError(f"IDE of {vmid}: no workbench within {READY_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
            page = browser.get(page.url)


@dataclass(frozen=True)
class Request:
    vmid: int
    state_s: float  # until the container's state was ready
    ide_s: float  # until the front served the workbench
    timeline: list[str]  # each state and step the events said, with its second


def request_ide(client: PlatformClient) -> Request:
    """One dev request until its IDE answers."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT_S
    response = client.http.post("/api/dev", json=DEV_REQUEST)
    if response.status_code != 202:
        raise BenchError(str(api_error(response, "POST /api/dev")))
    vmid = int(response.json()["vmid"])
    timeline = [f"answered {time.monotonic() - started:.2f}"]
    wait_ready(client, vmid, started, timeline)
    state_s = time.monotonic() - started
    open_workbench(client, vmid, deadline)
    return Request(vmid, state_s, time.monotonic() - started, timeline)


def delete(client: PlatformClient, vmid: int) -> None:
    response = client.http.delete(f"/api/dev/{vmid}", timeout=120.0)
    if response.status_code != 204:
        raise BenchError(str(api_error(response, f"deleting {vmid}")))


def wait_pool_full(client: PlatformClient, wanted: int = 1) -> None:
    """Until the admin listing holds ``wanted`` ready pool containers."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        listing = client.http.get("/api/dev").json()
        if sum(1 for c in listing if c.get("pool") and c["state"] == "ready") >= wanted:
            return
        time.sleep(POLL_S * 10)
    raise BenchError(f"the warm pool did not fill within {READY_TIMEOUT_S:.0f} s")


def concurrent_phase(client: PlatformClient, count: int, result: ModeResult) -> None:
    """``count`` requests at once; every container deleted afterwards."""
    clients = [twin(client) for _ in range(count)]
    start = threading.Barrier(count)

    def one(each: PlatformClient) -> Request:
        start.wait()
        return request_ide(each)

    try:
        with ThreadPoolExecutor(count) as pool:
            done = list(pool.map(one, clients))
    finally:
        for each in clients:
            each.close()
    result.concurrent_s = [request.ide_s for request in done]
    for request in done:
        delete(client, request.vmid)


def sequential_phase(
    client: PlatformClient,
    data_dir: Path,
    count: int,
    keep: int,
    result: ModeResult,
    before_each: Callable[[], None],
) -> list[int]:
    """``count`` requests one after another; all but the last ``keep`` deleted at once."""
    kept: list[int] = []
    for index in range(count):
        before_each()
        request = request_ide(client)
        result.ready_s.append(request.ide_s)
        result.state_s.append(request.state_s)
        result.disk_mb.append(disk_mb(data_dir, request.vmid))
        print(
            f"  {result.mode} #{index + 1}: {request.vmid} state ready in {request.state_s:.2f} s,"
            f" IDE in {request.ide_s:.2f} s, disk {result.disk_mb[-1]:.1f} MB\n"
            f"    {', '.join(request.timeline)}",
            flush=True,
        )
        if index < count - keep:
            delete(client, request.vmid)
        else:
            kept.append(request.vmid)
    return kept


def memory_phase(vmids: list[int], data_dir: Path, settle_s: float, result: ModeResult) -> None:
    time.sleep(settle_s)  # the figure is "idle for settle_s", not a synchronisation
    backend = create_backend("lxc", data_dir=data_dir)
    assert isinstance(backend, LxcBackend)
    for vmid in vmids:
        result.memory_mb.append(backend.memory_bytes(vmid) / MB)
        file_mb, anon_mb = memory_stat(vmid)
        result.file_mb.append(file_mb)
        result.anon_mb.append(anon_mb)
        pss, pss_file = code_server_pss(vmid)
        result.pss_mb.append(pss)
        result.pss_file_mb.append(pss_file)


def platform_mode(mode: str, args: argparse.Namespace) -> tuple[ModeResult, str | None]:
    """One platform mode on a fresh data dir; its figures and what failed its check."""
    result = ModeResult(mode)
    problem: str | None = None
    port = free_port_pair("0.0.0.0")  # zlh up listens on every address for the bridge
    listen = f"0.0.0.0:{port}"
    with data_dir_for(args.bench_dir, mode) as data_dir:
        print(f"== {mode}: preparing {data_dir}", flush=True)
        password = prepare(data_dir, mode, args, listen)
        argv = ["up", "--backend", "lxc", "--data-dir", str(data_dir), "--listen", listen]
        with running_platform(
            argv, base_url=f"http://127.0.0.1:{port}", log=data_dir / UP_LOG
        ) as platform:
            platform.wait_until_serving()
            client = signed_in(platform, password)
            try:
                if mode == "pool":
                    sequential_phase(
                        client, data_dir, args.count, 0, result, lambda: wait_pool_full(client)
                    )
                    return result, None
                print(f"== {mode}: {args.count} concurrent requests", flush=True)
                concurrent_phase(client, args.count, result)
                result.layer_lines = layer_builds(data_dir / UP_LOG)
                problem = check_layer_builds(result.layer_lines, layers=mode == "on")
                print(f"== {mode}: {args.count} sequential requests", flush=True)
                kept = sequential_phase(
                    client, data_dir, args.count, args.idle, result, lambda: None
                )
                print(f"== {mode}: {len(kept)} idle containers, {args.settle_s:.0f} s", flush=True)
                memory_phase(kept, data_dir, args.settle_s, result)
                again = layer_builds(data_dir / UP_LOG)
                if again != result.layer_lines:
                    extra = again[len(result.layer_lines) :]
                    problem = f"layers built again after the first requests: {extra}"
            finally:
                client.close()
    return result, problem


# ---------------------------------------------------------------- the backend alone


async def until_agent(client: httpx.AsyncClient, info: ContainerInfo, secret: str) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            response = await client.get(
                f"{info.agent_url}/status", headers={"Authorization": f"Bearer {secret}"}
            )
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"container {info.vmid}: agent not ready after 120 s")
        await asyncio.sleep(POLL_S)


async def clone_start(backend: LxcBackend, count: int, result: ModeResult) -> None:
    vmids = range(FIRST_VMID, FIRST_VMID + count)
    async with httpx.AsyncClient(timeout=2) as client:
        for vmid in vmids:
            started = time.monotonic()
            await backend.create(ContainerSpec(vmid=vmid, agent_secret=f"bench-{vmid}"))
            info = await backend.start(vmid)
            await until_agent(client, info, f"bench-{vmid}")
            result.ready_s.append(time.monotonic() - started)
    result.memory_mb = [backend.memory_bytes(vmid) / MB for vmid in vmids]


def backend_mode(args: argparse.Namespace) -> ModeResult:
    """Clone+start to agent ready, one after another, then idle memory: no platform."""
    result = ModeResult("backend")
    with data_dir_for(args.bench_dir, "backend") as data_dir:
        print(f"== backend: preparing {data_dir}", flush=True)
        data_dir.mkdir(parents=True)
        template_cache(data_dir, args.template_cache)
        build_template(data_dir, idmap=container_idmap(allow_privileged=False))
        print(f"== backend: {args.count} clone+start", flush=True)
        backend = LxcBackend(data_dir=data_dir)
        asyncio.run(clone_start(backend, args.count, result))
    return result


# ---------------------------------------------------------------- the report


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} {unit}" if unit == "s" else f"{value:.1f} {unit}"


# Per mode: the goal's words and its test on (this mode's value, off's value).
Goals = dict[str, tuple[str, Callable[[float, float | None], bool | None]]]


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    value: Callable[[ModeResult], float | None]
    goals: Goals = field(default_factory=dict)


def no_worse(value: float, off: float | None) -> bool | None:
    return None if off is None else value <= off


NO_WORSE_THAN_OFF: Goals = {"on": ("≤ off", no_worse)}

FIGURES = (
    Figure(
        "request → IDE ready p50, sequential",
        "s",
        lambda r: median(r.ready_s),
        {
            "on": (f"≤ {GOAL_READY_ON_S:g} s", lambda v, _: v <= GOAL_READY_ON_S),
            "pool": (f"≤ {GOAL_READY_POOL_S:g} s", lambda v, _: v <= GOAL_READY_POOL_S),
        },
    ),
    Figure("  of it until the state is ready, p50", "s", lambda r: median(r.state_s)),
    Figure("request → IDE ready p50, concurrent", "s", lambda r: median(r.concurrent_s)),
    Figure(
        "request → IDE ready p95, concurrent",
        "s",
        lambda r: percentile(r.concurrent_s, 0.95) if r.concurrent_s else None,
    ),
    Figure(
        "disk per container (overlay upper), median",
        "MB",
        lambda r: median(r.disk_mb),
        {"on": (f"≤ {GOAL_DISK_ON_MB:g} MB", lambda v, _: v <= GOAL_DISK_ON_MB)},
    ),
    Figure(
        "host memory per idle container (cgroup), median",
        "MB",
        lambda r: median(r.memory_mb),
        NO_WORSE_THAN_OFF,
    ),
    Figure("  of it page cache (memory.stat file), median", "MB", lambda r: median(r.file_mb)),
    Figure("  of it anonymous (memory.stat anon), median", "MB", lambda r: median(r.anon_mb)),
    Figure(
        "code-server processes' Pss, median",
        "MB",
        lambda r: median(r.pss_mb),
        NO_WORSE_THAN_OFF,
    ),
    Figure("  of it Pss_File (shared files counted 1/n)", "MB", lambda r: median(r.pss_file_mb)),
)


def print_report(results: list[ModeResult]) -> None:
    by_mode = {r.mode: r for r in results}
    for result in results:
        if result.ready_s:
            runs = ", ".join(f"{s:.2f}" for s in result.ready_s)
            print(f"{result.mode}: sequential request → ready, each run (s): {runs}")
        if result.concurrent_s:
            runs = ", ".join(f"{s:.2f}" for s in sorted(result.concurrent_s))
            print(f"{result.mode}: concurrent request → ready, sorted (s): {runs}")
        for line in result.layer_lines:
            print(f"{result.mode}: log: {line}")
    backend = by_mode.get("backend")
    if backend is not None:
        print(
            f"backend alone, clone+start to agent ready: p50 {fmt(median(backend.ready_s), 's')}, "
            f"max {fmt(max(backend.ready_s), 's')}; idle memory per container: median "
            f"{fmt(median(backend.memory_mb), 'MB')}"
        )
    modes = [m for m in PLATFORM_MODES if m in by_mode]
    if not modes:
        return
    off = by_mode.get("off")
    header = ["figure", *[f"layers {m}" if m != "pool" else "pool" for m in modes]]
    header += [f"{m}/off" for m in modes if m != "off" and off is not None] + ["goal", "ok/miss"]
    rows = [header]
    for figure in FIGURES:
        values = {m: figure.value(by_mode[m]) for m in modes}
        off_value = values.get("off")
        row = [figure.name, *[fmt(values[m], figure.unit) for m in modes]]
        for m in modes:
            if m != "off" and off is not None:
                v = values[m]
                row.append(f"{v / off_value:.2f}" if v is not None and off_value else "-")
        goals = [(m, *figure.goals[m]) for m in modes if m in figure.goals]
        row.append("; ".join(f"{m} {words}" for m, words, _ in goals) or "")
        verdicts = []
        for m, _, test in goals:
            v = values[m]
            verdict = None if v is None else test(v, off_value)
            if verdict is not None:
                verdicts.append(f"{m} {'ok' if verdict else 'miss'}")
        row.append("; ".join(verdicts))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


# ---------------------------------------------------------------- main


def print_load(when: str) -> None:
    print("load average at {}: {:.2f} {:.2f} {:.2f}".format(when, *os.getloadavg()), flush=True)


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--modes",
        default="backend,off,on",
        help=f"comma-separated, in order, from {', '.join(MODES)} (default backend,off,on)",
    )
    parser.add_argument("--count", type=int, default=10, help="requests per phase (default 10)")
    parser.add_argument("--idle", type=int, default=5, help="idle containers measured (default 5)")
    parser.add_argument(
        "--settle-s", type=float, default=20.0, help="how long they idle first (default 20)"
    )
    parser.add_argument("--bench-dir", type=Path, default=Path(".data"))
    parser.add_argument("--cache-dir", type=Path, default=Path(".data/test-cache"))
    parser.add_argument(
        "--template-cache", type=Path, default=Path(".data/test-lxc/cache/template")
    )
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(MODES)})")
    if args.count < 1 or not 0 <= args.idle <= args.count:
        parser.error("--count must be 1 or more and --idle between 0 and --count")
    args.bench_dir = args.bench_dir.resolve()
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("bench/backend_lxc.py runs as root (LXC, the template build)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)  # cleanup runs on SIGTERM as on Ctrl-C
    print_load("start")
    results: list[ModeResult] = []
    problems: list[str] = []
    try:
        for mode in args.modes:
            if mode == "backend":
                results.append(backend_mode(args))
                continue
            result, problem = platform_mode(mode, args)
            results.append(result)
            if problem is not None:
                problems.append(f"{mode}: {problem}")
    except BenchError as exc:
        problems.append(str(exc))
    print_load("end")
    print_report(results)
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
