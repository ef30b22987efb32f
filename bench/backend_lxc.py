"""Benchmark the lxc backend: clone+start to agent-ready for 10 containers, idle memory each.

Run as root after `zlh template build --data-dir DIR`:

    .venv/bin/python bench/backend_lxc.py [--data-dir .data/test-lxc] [--count 10]

"Ready" means the container's agent answers GET /status with 200 over the bridge. Memory is
what each idle container's cgroup charges to the host (memory.usage_in_bytes on cgroup v1,
memory.current on v2) once all of them are up and their agents answered.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

import httpx

from zlh.backends import ContainerInfo, ContainerSpec
from zlh.backends.lxc import LxcBackend

FIRST_VMID = 9201


async def until_ready(client: httpx.AsyncClient, info: ContainerInfo, secret: str) -> None:
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
            raise SystemExit(f"container {info.vmid}: agent not ready after 120 s")
        await asyncio.sleep(0.02)


async def run(data_dir: Path, count: int) -> None:
    backend = LxcBackend(data_dir=data_dir)
    vmids = range(FIRST_VMID, FIRST_VMID + count)
    for vmid in vmids:
        await backend.destroy(vmid)
    ready_s: list[float] = []
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for vmid in vmids:
                started = time.monotonic()
                await backend.create(ContainerSpec(vmid=vmid, agent_secret=f"bench-{vmid}"))
                info = await backend.start(vmid)
                await until_ready(client, info, f"bench-{vmid}")
                ready_s.append(time.monotonic() - started)
        memory_mb = [backend.memory_bytes(vmid) / 2**20 for vmid in vmids]
    finally:
        for vmid in vmids:
            await backend.destroy(vmid)
    print(f"containers: {count}")
    print(
        f"clone+start to agent ready: p50 {statistics.median(ready_s):.2f} s, "
        f"max {max(ready_s):.2f} s, min {min(ready_s):.2f} s"
    )
    print(
        f"host memory per idle container: median {statistics.median(memory_mb):.1f} MB, "
        f"max {max(memory_mb):.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".data/test-lxc"))
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.data_dir, args.count))


if __name__ == "__main__":
    main()
