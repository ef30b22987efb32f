"""``/metrics`` of a real ``zlh up`` (process backend, real agents, a real Node runtime),
scraped through the front and on the separate ``metrics_listen`` address."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api_kit import add_cli_users, login, sse_events, wait_for, zlh_up
from support import free_port, free_port_pair

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, from /proc (its sockets' inodes)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed since the listing: not a listening socket
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_metrics_through_the_front_follow_a_real_container(
    node_store: Path, tmp_path: Path
) -> None:
    add_cli_users(tmp_path)
    port, metrics_port = free_port_pair(), free_port()
    # One front process: the counts below are exact at once, where a child front worker's
    # reach /metrics within a second (tests/api/test_up_workers.py sums them).
    (tmp_path / "api.toml").write_text(
        f'metrics_listen = "127.0.0.1:{metrics_port}"\nfront_workers = 1\n'
    )
    with (
        zlh_up(tmp_path, node_store, port) as proc,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        assert listening_ports(proc.pid) == {port, port + 1, metrics_port}
        alice, root = login(client, "alice"), login(client, "root")

        def scrape() -> Samples:
            response = client.get("/metrics", headers=root)
            assert response.status_code == 200, response.text
            return parse(response.text)

        assert client.get("/metrics", headers=alice).status_code == 403
        assert client.get("/metrics").status_code == 401
        created = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"

        ready = scrape()
        assert value(ready, "zlh_containers", state="ready", runtime="node") == 1
        assert value(ready, "zlh_provision_seconds_count") == 1
        timed = {
            dict(labels)["step"]
            for (name, labels), n in ready.items()
            if name == "zlh_provision_step_seconds_count" and n
        }
        assert "container-start" in timed
        assert timed & {"runtime-download", "runtime-extract", "addon-install", "addon-start"}
        assert value(ready, "zlh_artifact_downloads_total", artifact="runtime/node/22") >= 1

        # A request to the IDE through the front (this store has no code-server: the front
        # answers 503 itself) counts as an ide request; the scrapes count as api requests and
        # their bodies as api bytes.
        ide = httpx.get(f"http://127.0.0.1:{port + 1}/dev/{vmid}/ide/", headers=alice, timeout=30)
        assert ide.status_code == 503, ide.text
        after_ide = scrape()
        for route in ("ide", "api"):
            requests = value(after_ide, "zlh_front_requests_total", route=route)
            assert requests == value(ready, "zlh_front_requests_total", route=route) + 1
        sent = value(after_ide, "zlh_front_sent_bytes_total", route="api")
        assert sent > value(ready, "zlh_front_sent_bytes_total", route="api") + 1000

        # The agent's process tree, measured for real.
        def used() -> Samples | None:
            samples = scrape()
            memory = value(samples, "zlh_container_memory_bytes", vmid=str(vmid))
            return samples if memory > 10_000_000 else None

        measured = wait_for(used, timeout_s=15, what="the container's figures")
        assert value(measured, "zlh_container_cpu_seconds_total", vmid=str(vmid)) > 0

        # The private address: the same metrics, no session, nothing else served there.
        private = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert private.status_code == 200
        assert value(parse(private.text), "zlh_containers", state="ready", runtime="node") == 1
        other = httpx.get(f"http://127.0.0.1:{metrics_port}/api/dev", headers=root, timeout=10)
        assert other.status_code == 404 and other.json()["message"] == "not found"
        posted = httpx.post(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
        assert posted.json()["message"] == "method not allowed"

        assert client.post(f"/api/dev/{vmid}/stop", headers=alice).status_code == 202
        wait_for(
            lambda: value(scrape(), "zlh_containers", state="stopped", runtime="node") == 1,
            timeout_s=30,
            what="the stopped count",
        )
        assert value(scrape(), "zlh_containers", state="ready", runtime="node") == 0


def test_zlh_up_opens_no_metrics_address_unless_told(node_store: Path, tmp_path: Path) -> None:
    add_cli_users(tmp_path)
    port = free_port_pair()
    with zlh_up(tmp_path, node_store, port) as proc:
        assert listening_ports(proc.pid) == {port, port + 1}
