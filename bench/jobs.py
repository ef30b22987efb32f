"""Benchmark: what provisioning jobs cost the database (PostgreSQL), per call.

A throwaway PostgreSQL cluster (the tests' ``pg_cluster``: Debian's ``initdb``/``pg_ctl``) holds
``--jobs`` containers, each with its job held by one replica. This process then times a
lease renewal (one ``UPDATE`` by primary key, what a holder does every ``job_lease_s / 3``)
and a scan that finds nothing to take (``SELECT … FOR UPDATE SKIP LOCKED`` over the live jobs,
what every replica does every ``job_lease_s / 3``): the mean of ``--calls`` each, in ms.

    .venv/bin/python bench/jobs.py [--jobs 200] [--calls 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session

from zlh.api import accounts
from zlh.api.containers import ContainerRegistry, Quota
from zlh.api.db import Database, Pins
from zlh.api.events import EventBus
from zlh.api.jobs import Jobs
from zlh.routefeed import RouteFeed
from zlh.schemas import Artifact, ArtifactFormat

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import pg_cluster  # the tests' throwaway cluster

PINS = Pins(
    runtime=Artifact(url="node.tar.gz", sha256="a" * 64, size=1, format=ArtifactFormat.TAR_GZ)
)


def _mean_ms(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    accounts.configure_hashing(time_cost=1, memory_kib=64, parallelism=1)
    with pg_cluster.cluster() as server:
        db = Database(pg_cluster.fresh_database(server))
        db.migrate()
        registry = ContainerRegistry(db, EventBus(), RouteFeed())
        owner = accounts.create_user(db, "bench", "correct horse battery")
        jobs = Jobs(db, holder="a", lease_s=15, max_attempts=3)
        tokens: dict[int, str] = {}

        def hold(session: Session, vmid: int) -> None:
            tokens[vmid] = jobs.hold(session, vmid)

        for _ in range(args.jobs):
            registry.allocate(
                owner=owner,
                runtime="node",
                version="22",
                addons=[],
                pins=PINS,
                quota=Quota(containers=args.jobs, running=args.jobs),
                within=hold,
            )
        vmid, token = next(iter(tokens.items()))
        renew = _mean_ms(lambda: jobs.renew(vmid, token), args.calls)
        scan = _mean_ms(jobs.claim_next, args.calls)
        print(f"{args.jobs} live jobs on PostgreSQL over loopback, mean of {args.calls} calls:")
        print(f"  lease renewal       {renew:.2f} ms")
        print(f"  scan, nothing free  {scan:.2f} ms")
        db.dispose()


if __name__ == "__main__":
    main()
