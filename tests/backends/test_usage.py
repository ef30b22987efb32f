"""``Backend.usage``: Proxmox's ``status/current`` through the stand-in server, and the cgroup
files the lxc backend reads, on this very test process's cgroup.

The process backend's figures are checked on real agents in tests/api/test_metrics_up.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxmox_server import ProxmoxServer, backend_for, self_signed_cert
from zlh.backends import BackendError, Usage
from zlh.backends.lxc.cgroup import cgroup_version, dirs_of_pid, payload_dirs, read_usage

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("pve-tls"))


@pytest.fixture
def server(cert: tuple[Path, Path]) -> Iterator[ProxmoxServer]:
    with ProxmoxServer(*cert) as pve:
        pve.state.nodes = {"pve1": {"status": "online"}, "pve3": {"status": "offline"}}
        yield pve


def _ct(server: ProxmoxServer, vmid: int, node: str, status: str, **fields: object) -> None:
    server.state.cts[vmid] = {
        "node": node,
        "status": status,
        "name": f"zlh-{vmid}",
        "config": {},
        **fields,
    }


def test_proxmox_reports_running_cts_and_leaves_out_the_rest(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    _ct(server, 101, "pve1", "running", cpu=0.5, mem=300 * MIB)
    _ct(server, 102, "pve1", "stopped")
    _ct(server, 103, "pve3", "running")  # its node does not answer: 595
    _ct(server, 104, "pve1", "running", cpu=0.0, mem=40 * MIB)
    server.state.cts[105] = {"node": "pve1", "status": "running", "name": "not-ours", "config": {}}
    backend = backend_for(server, cert)
    found = asyncio.run(backend.usage([101, 102, 103, 104, 105, 999]))
    assert found == {
        101: Usage(cpu_cores=0.5, memory_bytes=300 * MIB),
        104: Usage(cpu_cores=0.0, memory_bytes=40 * MIB),
    }
    current = [path for method, path, _ in server.state.requests if path.endswith("/current")]
    assert sorted(current) == [
        "/nodes/pve1/lxc/101/status/current",
        "/nodes/pve1/lxc/104/status/current",
        "/nodes/pve3/lxc/103/status/current",
    ]


def test_proxmox_status_current_errors_of_the_stand_in(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    """The stand-in answers like PVE: an unknown CT or one on another node is a 500."""
    _ct(server, 101, "pve1", "running")
    server.state.nodes["pve2"] = {"status": "online"}
    backend = backend_for(server, cert)
    for path in ("nodes/pve1/lxc/777/status/current", "nodes/pve2/lxc/101/status/current"):
        with pytest.raises(BackendError, match="does not exist"):
            backend._call("get", path, "reading")
    with pytest.raises(BackendError, match="node unreachable"):
        backend._call("get", "nodes/pve3/lxc/101/status/current", "reading")


@pytest.mark.slow
def test_proxmox_usage_of_a_thousand_cts_stays_within_seconds(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    for vmid in range(1000, 2000):
        _ct(server, vmid, "pve1", "running", cpu=0.01, mem=64 * MIB)
    backend = backend_for(server, cert)
    started = time.monotonic()
    found = asyncio.run(backend.usage(range(1000, 2000)))
    took = time.monotonic() - started
    assert len(found) == 1000
    print(f"proxmox usage of 1000 CTs: {took:.2f} s")
    assert took < 30  # the scrape itself waits at most zlh.api.usage.WAIT_S for it


def test_cgroup_figures_of_this_process_are_real() -> None:
    version = cgroup_version()
    dirs = dirs_of_pid(os.getpid(), version)
    assert dirs is not None
    before = read_usage(dirs, version)
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn CPU the cgroup is charged for
        pass
    after = read_usage(dirs, version)
    assert before.cpu_seconds is not None and after.cpu_seconds is not None
    assert after.cpu_seconds >= before.cpu_seconds + 0.15
    assert after.memory_bytes > 10 * MIB


def test_a_container_not_running_has_no_cgroup(tmp_path: Path) -> None:
    assert payload_dirs("zlh-424242", cgroup_version()) is None
    (tmp_path / "cpuacct" / "lxc.payload.zlh-7").mkdir(parents=True)
    assert payload_dirs("zlh-7", 1, tmp_path) is None  # memory's half is missing
    (tmp_path / "memory" / "lxc.payload.zlh-7").mkdir(parents=True)
    assert payload_dirs("zlh-7", 1, tmp_path) == (
        tmp_path / "cpuacct" / "lxc.payload.zlh-7",
        tmp_path / "memory" / "lxc.payload.zlh-7",
    )
    assert dirs_of_pid(2**22 + 1, 1) is None  # no such process
