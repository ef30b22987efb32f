"""`zlh up` with two front workers, for real: the process backend, real HTTP, real signals.

Both workers take connections on the one public port (per-worker counters in /metrics), no
worker outlives a SIGKILLed API, and SIGTERM drains: /api/health/ready says so, new WebSockets
are refused, an open one runs on until it ends, then the process exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from api_kit import add_cli_users, login, sse_events, wait_for, zlh_up
from support import ConsoleClient, descendants, free_port, free_port_pair

pytestmark = pytest.mark.slow


def worker_requests(metrics_port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return {
        s.labels["worker"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "zlh_front_worker_requests_total"
    }


def front_workers(pid: int) -> list[int]:
    """The child front workers of process ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in children:
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"zlh.proxy.worker" in cmdline:
            found.append(int(child))
    return found


@dataclass
class ReadyUp:
    proc: subprocess.Popen[bytes]
    client: httpx.Client
    alice: dict[str, str]
    vmid: int
    port: int


@contextmanager
def alices_ready_container(node_store: Path, tmp_path: Path, config: str) -> Iterator[ReadyUp]:
    """``zlh up`` with ``config`` as its api.toml, and a node container of alice's, ready."""
    add_cli_users(tmp_path)
    port = free_port_pair()
    (tmp_path / "api.toml").write_text(config)
    base = f"http://127.0.0.1:{port}"
    with zlh_up(tmp_path, node_store, port) as proc, httpx.Client(base_url=base) as client:
        alice = login(client, "alice")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"
        yield ReadyUp(proc, client, alice, vmid, port)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def test_two_front_workers_share_the_public_port(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    port, metrics_port = free_port_pair(), free_port()
    (tmp_path / "api.toml").write_text(
        f'front_workers = 2\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
    )
    with zlh_up(tmp_path, store, port) as proc:
        wait_for(lambda: len(front_workers(proc.pid)) == 1, timeout_s=30, what="a child worker")
        wait_for(lambda: "1" in worker_requests(metrics_port), timeout_s=30, what="its report")
        for _ in range(200):  # a new connection each: the kernel picks a worker for each
            assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200

        def spread() -> dict[str, float] | None:
            counts = worker_requests(metrics_port)
            return counts if sum(counts.values()) >= 200 else None

        counts = wait_for(spread, timeout_s=10, what="every request counted")
        assert counts["0"] > 0 and counts["1"] > 0, counts


def test_the_front_runs_batch_scheduled_and_the_agents_it_starts_do_not(
    node_store: Path, tmp_path: Path
) -> None:
    """SCHED_BATCH (front_scheduling) is inherited by every child: an agent, and the
    customer's processes it starts, must still run under the default policy."""
    with alices_ready_container(node_store, tmp_path, "front_workers = 2\n") as up:
        proc = up.proc
        workers = front_workers(proc.pid)
        agents = [
            pid
            for pid in descendants(proc.pid)
            if pid not in workers and b"agent" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 1 and len(agents) == 1, (workers, agents)
        assert os.sched_getscheduler(proc.pid) == os.SCHED_BATCH
        assert os.sched_getscheduler(workers[0]) == os.SCHED_BATCH
        tenant = [agents[0], *descendants(agents[0])]
        policies = {pid: os.sched_getscheduler(pid) for pid in tenant}
        assert set(policies.values()) == {os.SCHED_OTHER}, policies


def test_no_front_worker_outlives_a_sigkilled_api(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    port = free_port_pair()
    (tmp_path / "api.toml").write_text("front_workers = 3\n")
    with zlh_up(tmp_path, store, port) as proc:
        children = wait_for(
            lambda: front_workers(proc.pid) if len(front_workers(proc.pid)) == 2 else None,
            timeout_s=30,
            what="two child workers",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in children), timeout_s=10, what="workers gone")


def test_sigterm_drains_readiness_says_so_and_an_open_websocket_runs_to_its_end(
    node_store: Path, tmp_path: Path
) -> None:
    config = "front_workers = 2\ndrain_timeout_s = 120\n"
    with alices_ready_container(node_store, tmp_path, config) as up:
        proc, client, alice, vmid, port = up.proc, up.client, up.alice, up.vmid, up.port
        base = f"http://127.0.0.1:{port}"
        assert client.get("/api/health/ready").json() == {"ready": True}
        url = f"ws://127.0.0.1:{port}/api/dev/{vmid}/console"
        with connect(url, additional_headers=alice, open_timeout=10) as ws:
            term = ConsoleClient(ws)
            assert term.ask("$((6*7))") == "42"
            proc.send_signal(signal.SIGTERM)
            ready = wait_for(
                lambda: (r := httpx.get(f"{base}/api/health/ready")).status_code == 503 and r,
                timeout_s=10,
                what="readiness to say draining",
            )
            assert ready.json() == {"ready": False, "reason": "draining"}
            for _ in range(4):  # whichever worker takes it, a new WebSocket is refused
                with (
                    pytest.raises(InvalidStatus) as refused,
                    connect(url, additional_headers=alice),
                ):
                    pass
                assert refused.value.response.status_code == 503
                assert json.loads(refused.value.response.body or b"{}")["message"] == "draining"
            assert term.ask("$((6*8))") == "48"  # the open one still works
            assert proc.poll() is None
        assert proc.wait(timeout=30) == 0, (tmp_path / "up.log").read_text()[-2000:]
    assert not os.path.exists(tmp_path / "run" / "feed.sock")
