"""Proxmox: request -> agent ready from the plain template (the agent installs node and
code-server itself) vs from a baked template (the layers inside; the agent's guard skips), for
the first container (template baked and uploaded) and the next ones. Prints numbers, asserts
nothing.

The cluster is the test suite's PVE stand-in (tests/proxmox_server.py) with its timings model;
the backend, the baking, the upload (multipart over HTTPS) and the layer builds are the real
code. The model's constants:

- extraction rate (create = ``--create-s`` + template size / rate): measured here, GNU tar
  unpacking the baked template (``tar -x --zstd``), as PVE's ``vzcreate`` does;
- agent install of node + code-server: measured here, the layer store building both layers in
  parallel with the agent's own installer from ``zlh artifacts serve`` on loopback;
- upload: ``--upload-mb-s`` (default 117 MB/s: 1 Gbit/s to the node, an assumption);
- the start task, to the agent up: ``--start-s`` (default 0.72 s: bench/backend_lxc.py's
  clone+start to agent ready, docs/performance.md);
- the agent's guard on a preinstalled payload: ``--guard-s`` (default 6.0 ms:
  bench/agent_install.py's guarded second provisioning);
- ``--create-s``, create's fixed part (volume, filesystem, config; default 1.0 s): an
  assumption, the same on both paths.

Request -> agent ready is the backend's create and start against the model (waiting on each
task as it does on a real cluster: polls 0.1 s apart, doubling to 2 s), plus the agent's
install (plain) or its guard (baked).

    .venv/bin/python bench/proxmox_templates.py --base debian-12-zlh_<v>_amd64.tar.zst [--count 3]

``--base`` is ``zlh template export``'s tarball; the artifacts come from ``zlh artifacts build``
(cached in --cache-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from proxmox_server import (  # noqa: E402
    TEMPLATE,
    ProxmoxServer,
    Timings,
    backend_for,
    self_signed_cert,
)
from support import CACHE_DIR, serve_store, zlh  # noqa: E402
from zlh.api.db import AddonPin, Pins  # noqa: E402
from zlh.api.layers import mounts_for  # noqa: E402
from zlh.backends import ContainerSpec, LayerMount  # noqa: E402
from zlh.backends.proxmox import ProxmoxBackend  # noqa: E402
from zlh.backends.proxmox_templates import TemplateBaker  # noqa: E402
from zlh.layers import LayerStore  # noqa: E402
from zlh.schemas import ArtifactKind, Catalog  # noqa: E402


def artifacts(data: Path, cache: Path) -> tuple[Path, Pins]:
    """A store with node 22 and code-server (``zlh artifacts build``), and their pins."""
    store = data / "store"
    zlh("artifacts", "build", "node", "--version", "22", "--store", str(store),
        "--cache-dir", str(cache))  # fmt: skip
    zlh("artifacts", "build", "code-server", "--store", str(store), "--cache-dir", str(cache))
    catalog = Catalog.model_validate_json((store / "catalog.json").read_bytes())
    runtimes = catalog.section(ArtifactKind.RUNTIME)["node"].versions
    node = next(v for v in runtimes if v.version == "22")
    code_server = catalog.section(ArtifactKind.ADDON)["code-server"].versions[-1]
    addon = AddonPin(version=code_server.version, artifact=code_server.artifact)
    return store, Pins(runtime=node.artifact, addons={"code-server": addon})


def install(root: Path, pins: Pins, base_url: str) -> tuple[tuple[LayerMount, ...], float]:
    """Both layers built afresh under ``root`` in parallel (the agent's installer, as the agent
    runs it for a payload), and how long that took."""
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    layer_store = LayerStore(root)

    async def build() -> tuple[LayerMount, ...]:
        try:
            return await mounts_for(layer_store, "node", "22", pins, base_url=base_url)
        finally:
            await layer_store.close()

    started = time.monotonic()
    layers = asyncio.run(build())
    return layers, time.monotonic() - started


def extraction_s(template: Path) -> float:
    target = Path(tempfile.mkdtemp(prefix="pve-extract-"))
    try:
        subprocess.run(["sync"], check=True)
        started = time.monotonic()
        subprocess.run(
            ["tar", "-x", "--zstd", "--numeric-owner", "-f", str(template), "-C", str(target)],
            check=True,
        )
        return time.monotonic() - started
    finally:
        shutil.rmtree(target, ignore_errors=True)


def request_to_running(backend: ProxmoxBackend, vmid: int, layers: tuple[LayerMount, ...]) -> float:
    started = time.monotonic()
    asyncio.run(backend.create(ContainerSpec(vmid=vmid, agent_secret="s", layers=layers)))
    asyncio.run(backend.start(vmid))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="zlh template export's tarball")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--count", type=int, default=3, help="containers per path")
    parser.add_argument("--runs", type=int, default=3, help="installs and extractions measured")
    parser.add_argument("--upload-mb-s", type=float, default=117.0)
    parser.add_argument("--create-s", type=float, default=1.0, help="create's fixed part")
    parser.add_argument("--start-s", type=float, default=0.72)
    parser.add_argument("--guard-s", type=float, default=0.006)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pve-bench-"))
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path) -> None:
    data = work / "data"
    base = work / args.base.name
    shutil.copyfile(args.base, base)
    baker = TemplateBaker(base, data / "proxmox-templates")
    store, pins = artifacts(data, args.cache_dir)
    installs, extractions = [], []
    with contextlib.contextmanager(serve_store)(store) as base_url:
        for _ in range(args.runs):  # alternating, so both see the same foreign load
            layers, seconds = install(data / "layers", pins, base_url)
            installs.append(seconds)
            baked = baker.bake(layers)
            extractions.append(extraction_s(baker.path(baked.name)))
    install_s, extract_s = statistics.median(installs), statistics.median(extractions)
    rate = baked.size / extract_s
    print(f"agent install of node 22 + code-server (in parallel): {install_s:.2f} s median "
          f"(runs {' '.join(f'{t:.2f}' for t in installs)})")  # fmt: skip
    print(f"tar -x of the baked template: {extract_s:.2f} s median "
          f"(runs {' '.join(f'{t:.2f}' for t in extractions)}), {rate / 1e6:.0f} MB/s")  # fmt: skip
    print(f"base template {base.stat().st_size / 1e6:.0f} MB, baked {baked.size / 1e6:.0f} MB")
    baker.remove_local(baked)  # the first container bakes it again
    cert = self_signed_cert(work)
    with ProxmoxServer(*cert) as pve:
        pve.state.nodes = {"pve1": {"status": "online", "cpu": 0.1, "mem": 1e9, "maxmem": 8e9}}
        pve.state.templates[(None, TEMPLATE)]["size"] = base.stat().st_size
        baked_backend = backend_for(pve, cert, data_dir=data, template_file=base, ostemplate=None)
        pve.state.timings = Timings(
            create_s=args.create_s,
            extract_bytes_per_s=rate,
            upload_bytes_per_s=args.upload_mb_s * 1e6,
            start_s=args.start_s,
        )
        plain_backend = backend_for(pve, cert)
        plain = [
            request_to_running(plain_backend, 200 + i, ()) + install_s for i in range(args.count)
        ]
        baked_times = [
            request_to_running(baked_backend, 300 + i, layers) + args.guard_s
            for i in range(args.count)
        ]
    first, rest = baked_times[0], baked_times[1:]
    guard_ms = args.guard_s * 1e3
    print(f"model: create {args.create_s:.2f} s + size / {rate / 1e6:.0f} MB/s, upload "
          f"{args.upload_mb_s:.0f} MB/s, start {args.start_s:.2f} s, guard {guard_ms:.1f} ms"
          f" (load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    print("request -> agent ready, per container:")
    print(f"  plain template, agent installs: {' '.join(f'{t:.2f}' for t in plain)} s")
    print(f"  baked, first (bake + upload):   {first:.2f} s")
    print(f"  baked, next ones:               {' '.join(f'{t:.2f}' for t in rest)} s")
    plain_median = statistics.median(plain)
    if rest:
        print(f"  next ones: {statistics.median(rest) / plain_median:.2f}x of the plain median")
    print(f"  first: {first / plain_median:.2f}x of the plain median")


if __name__ == "__main__":
    main()
