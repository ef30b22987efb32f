"""What a scrape of the per-container figures costs with 1,000 running containers: the
Proxmox backend against the test suite's stand-in PVE server (loopback TLS, one process),
through zlh.api.usage's cache, one scrape a second.

    .venv/bin/python bench/metrics_scrape.py [--containers 1000] [--scrapes 12]

Prints each scrape's time and how many containers had figures in it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from proxmox_server import ProxmoxServer, backend_for, self_signed_cert
from zlh.api.metrics import Metrics, UsageCollector
from zlh.api.usage import UsageCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=12)
    args = parser.parse_args()
    vmids = list(range(1000, 1000 + args.containers))
    cert = self_signed_cert(Path(tempfile.mkdtemp(prefix="zlh-bench-pve-")))
    with ProxmoxServer(*cert) as pve:
        pve.state.nodes = {"pve1": {"status": "online"}}
        for vmid in vmids:
            pve.state.cts[vmid] = {
                "node": "pve1",
                "status": "running",
                "name": f"zlh-{vmid}",
                "config": {},
            }
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        cache = UsageCache(backend_for(pve, cert), lambda: vmids)
        cache.bind_loop(loop)
        metrics = Metrics()
        metrics.register(UsageCollector(cache))
        for n in range(args.scrapes):
            started = time.monotonic()
            text = metrics.render()
            took_ms = (time.monotonic() - started) * 1000
            with_figures = text.count(b"zlh_container_memory_bytes{")
            print(f"scrape {n}: {took_ms:.0f} ms, {with_figures} containers with figures")
            time.sleep(1)
        loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
