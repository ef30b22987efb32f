"""Fixtures of the proxmox backend's tests: a TLS certificate and the in-test PVE API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxmox_server import ProxmoxServer, self_signed_cert


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("pve-tls"))


@pytest.fixture
def server(cert: tuple[Path, Path]) -> Iterator[ProxmoxServer]:
    """Three nodes: pve1 busy, pve2 the least loaded, pve3 offline."""
    with ProxmoxServer(*cert) as pve:
        pve.state.nodes = {
            "pve1": {"status": "online", "cpu": 0.70, "mem": 6e9, "maxmem": 8e9},
            "pve2": {"status": "online", "cpu": 0.05, "mem": 1e9, "maxmem": 8e9},
            "pve3": {"status": "offline"},
        }
        yield pve
