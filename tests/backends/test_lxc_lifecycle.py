"""Stop, start and restart through the API on a real LXC container: a stopped container holds
no memory on the host and gets no polls (and shows no usage), and its files are there again
once it is started.

Needs root and the lxc backend's packages, like the other LXC tests (tests/backends/test_lxc.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxc_api_kit import lxc_api, tiny_runtime_store
from lxc_kit import lxc_backend

from api_kit import wait_for
from zlh.backends.lxc import LxcBackend
from zlh.backends.lxc.backend import NAME_PREFIX
from zlh.schemas.payload import MIN_VMID

pytestmark = [pytest.mark.root, pytest.mark.slow]

VMID = MIN_VMID  # the first vmid a fresh API hands out
CGROUPS = Path("/sys/fs/cgroup")
MEMORY_LEFT_BYTES = 5 * 2**20


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(VMID)


def _charged_bytes(vmid: int) -> int:
    """What the container's memory cgroup charges to the host now (0 once it is gone)."""
    name = f"lxc.payload.{NAME_PREFIX}{vmid}"
    for path in (CGROUPS / "memory" / name, CGROUPS / "unified" / name, CGROUPS / name):
        for key in ("memory.usage_in_bytes", "memory.current"):
            if (path / key).exists():
                return int((path / key).read_text())
    return 0


def test_a_stopped_container_holds_no_memory_and_starts_again_with_its_files(
    backend: LxcBackend, tmp_path: Path
) -> None:
    store = tiny_runtime_store(tmp_path / "store")
    with lxc_api(backend, tmp_path / "api", store, poll_interval_s=0.5) as api:
        client, alice = api.client, api.headers
        answer = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        assert answer.status_code == 202, answer.text
        vmid = int(answer.json()["vmid"])
        assert api.follow(vmid, deadline_s=120)[-1].state == "ready"
        kept = {"path": "kept.txt"}
        content = f"/api/dev/{vmid}/files/content"
        assert client.put(content, params=kept, content=b"mine\n", headers=alice).is_success
        running = _charged_bytes(vmid)
        assert running > MEMORY_LEFT_BYTES  # systemd, journald and the agent
        # What /metrics shows of it: the same cgroup's figures, and the CPU it has used.
        used = asyncio.run(backend.usage([vmid]))[vmid]
        assert running / 2 < used.memory_bytes < running * 2
        assert used.cpu_seconds is not None and used.cpu_seconds > 0

        assert client.post(f"/api/dev/{vmid}/stop", headers=alice).status_code == 202
        assert [s.state for s in api.follow(vmid, deadline_s=60)][-1] == "stopped"
        assert _charged_bytes(vmid) < MEMORY_LEFT_BYTES
        assert asyncio.run(backend.usage([vmid])) == {}  # a stopped container uses nothing
        wait_for(lambda: vmid not in api.polled(), what="the poller to let go of it")

        assert client.post(f"/api/dev/{vmid}/start", headers=alice).status_code == 202
        started = api.follow(vmid, deadline_s=120)
        assert [s.state for s in started][-1] == "ready", started
        assert "unreachable" not in [s.state for s in started]
        assert client.get(content, params=kept, headers=alice).text == "mine\n"

        assert client.post(f"/api/dev/{vmid}/restart", headers=alice).status_code == 202
        # The stream ends once it is stopped; the start that follows is read anew.
        restarted = api.follow(vmid, deadline_s=60)
        if restarted[-1].state == "stopped":
            restarted += api.follow(vmid, deadline_s=120)
        assert restarted[-1].state == "ready", restarted
        assert client.get(content, params=kept, headers=alice).text == "mine\n"
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
