"""Two ``zlh api --backend process --replica …`` processes on one real PostgreSQL database:
replica A is SIGKILLed in the middle of a provisioning, replica B finishes it (one container,
``ready``, its job gone). Real agents install a real Node runtime from a real artifact server.

The replicas share one data dir (their keys, and the process backend's record of its
containers, as replicas on one host share them), each with its own socket between its front
and its API; each is launched here with ``subprocess``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pg_cluster
import pytest

from api_kit import PASSWORD, login, up_env, wait_for
from support import ZLH, free_port_pair, wait_for_port, zlh
from zlh.api.db import Database, Job

pytestmark = pytest.mark.slow

LEASE_S = "3"


@contextmanager
def api_replica(
    name: str, env: dict[str, str], data_dir: Path, artifacts: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``zlh api --replica name`` on a free port; yields the process and its base URL."""
    port = free_port_pair()
    log = (data_dir / f"api-{name}.log").open("ab")
    proc = subprocess.Popen(
        [
            *ZLH,
            "api",
            "--backend",
            "process",
            "--replica",
            name,
            "--listen",
            f"127.0.0.1:{port}",
            "--artifact-server",
            artifacts,
            # Its own socket between its front and its API (the default is in the data dir).
            "--unix-socket",
            str(data_dir / f"api-{name}.sock"),
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        wait_for_port("127.0.0.1", port, proc=proc)
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        log.close()


def _containers(data_dir: Path) -> list[str]:
    base = data_dir / "process"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.exists() else []


def test_kill_9_of_a_replica_mid_provisioning_and_the_other_finishes_it_once(
    node_server: str, postgres_server: str, tmp_path: Path
) -> None:
    database_url = pg_cluster.fresh_database(postgres_server)
    env = {**up_env(tmp_path), "ZLH_DATABASE_URL": database_url, "ZLH_JOB_LEASE_S": LEASE_S}
    add = ["user", "add", "alice", "--password-stdin", "--data-dir", str(tmp_path)]
    zlh(*add, input=PASSWORD + "\n", env=env)
    with (
        api_replica("a", env, tmp_path, node_server) as (a, a_url),
        api_replica("b", env, tmp_path, node_server) as (_, b_url),
        httpx.Client(base_url=a_url, timeout=30) as on_a,
        httpx.Client(base_url=b_url, timeout=30) as on_b,
    ):
        alice_a = login(on_a, "alice")
        created = on_a.post("/api/dev", json={"runtime": "node"}, headers=alice_a)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]

        def provisioning() -> bool:
            state = on_a.get(f"/api/dev/{vmid}", headers=alice_a).json()["state"]
            assert state != "ready", "too late to interrupt: already ready"
            return bool(state in {"creating", "provisioning"})

        wait_for(provisioning, timeout_s=60, what="provisioning to begin on a")
        a.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.wait(timeout=10)

        db = Database(database_url)
        try:
            with db.session() as session:
                job = session.get(Job, vmid)
                assert job is not None and job.lease_holder == "a"  # left behind by the kill

            def taken_by_b() -> bool:
                with db.session() as session:
                    job = session.get(Job, vmid)
                    return job is None or job.lease_holder == "b"

            wait_for(taken_by_b, timeout_s=60, what="b to take the job")
            # At most a lease after a's last renewal, plus b's scan interval (a third of it).
            took = time.monotonic() - killed
            print(f"job taken over {took:.1f} s after the kill (job_lease_s={LEASE_S})")
            assert took < 2 * float(LEASE_S), took
            alice_b = login(on_b, "alice")
            wait_for(
                lambda: on_b.get(f"/api/dev/{vmid}", headers=alice_b).json()["state"] == "ready",
                timeout_s=120,
                what="b to finish the provisioning",
            )
            record = on_b.get(f"/api/dev/{vmid}", headers=alice_b).json()
            assert record["status"]["runtimeInstalled"] is True
            listed = on_b.get("/api/dev", headers=alice_b).json()
            assert [c["vmid"] for c in listed] == [vmid]
            assert _containers(tmp_path) == [str(vmid)]  # one container on the backend

            def job_gone() -> bool:
                with db.session() as session:
                    return session.get(Job, vmid) is None

            wait_for(job_gone, what="the job to end")
        finally:
            db.dispose()
        assert on_b.delete(f"/api/dev/{vmid}", headers=alice_b).status_code == 204
        assert _containers(tmp_path) == []
