"""The warm pool for real: `zlh up` with the process backend, real agents, real code-server.

With the default setting (one of node), a pool container is built ahead of demand and is
nobody's: no user lists or opens it, its agent holds no home and runs no code-server. Two users
request at the same moment: one gets the pool container, the other one built fresh. The one
handed out holds no trace of the pool (the pool-time secret refused, the home and code-server
made after the hand-out), counts against its new owner's quota, and never goes back: the pool
builds another, once the hand-out is ready. A restart adopts the pool as it stands; a bigger
``warm_pool`` builds only what is missing, and ``0`` deletes it.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_kit import add_cli_users, login, sse_events, wait_for, zlh_up
from support import free_port_pair, zlh

pytestmark = pytest.mark.slow

BUILD_S = 300.0  # a pool container's build: runtime and code-server installed from the store
DEFAULT_REQUEST = {"runtime": "node", "addons": ["code-server"]}
Auth = dict[str, str]


def _pool(client: httpx.Client, admin: Auth) -> list[dict[str, Any]]:
    return [c for c in client.get("/api/dev", headers=admin).json() if c["pool"]]


def _ready_pool(client: httpx.Client, admin: Auth, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        pool = _pool(client, admin)
        done = len(pool) == count and all(c["state"] == "ready" for c in pool)
        return pool if done else None

    found: list[dict[str, Any]] = wait_for(ready, timeout_s=BUILD_S, what=f"{count} ready")
    return found


def _agent_url(data_dir: Path, vmid: int) -> str:
    state = json.loads((data_dir / "process" / str(vmid) / "state.json").read_text())
    return f"http://127.0.0.1:{state['agent_port']}"


def _started_at(pid: int) -> float:
    """When process ``pid`` started, in seconds since boot (CLOCK_BOOTTIME's scale)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    return ticks / os.sysconf("SC_CLK_TCK")


def _request_at_once(client: httpx.Client, *auths: Auth) -> list[httpx.Response]:
    def post(auth: Auth) -> httpx.Response:
        return client.post("/api/dev", json=DEFAULT_REQUEST, headers=auth)

    with ThreadPoolExecutor(len(auths)) as pool:
        return list(pool.map(post, auths))


def test_the_pool_is_built_ahead_taken_once_without_a_trace_and_refilled(
    ide_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ZLH_WARM_POOL")  # the platform's own default: one node container
    monkeypatch.setenv("ZLH_MAX_CONTAINERS_PER_USER", "1")
    add_cli_users(tmp_path)
    port = free_port_pair()
    base_url = f"http://127.0.0.1:{port}"
    with zlh_up(tmp_path, ide_store, port), httpx.Client(base_url=base_url, timeout=30) as client:
        alice, bob, root = (login(client, n) for n in ("alice", "bob", "root"))
        [pooled] = _ready_pool(client, root, 1)
        vmid = pooled["vmid"]
        assert (pooled["owner"], pooled["runtime"], pooled["addons"]) == (
            "(pool)",
            "node",
            ["code-server"],
        )
        summary = client.get("/api/pool", headers=root).json()
        assert summary == {"wanted": 1, "ready": 1, "building": 0, "memoryMb": 2048}
        assert client.get("/api/pool", headers=bob).status_code == 403
        # Nobody's: not listed to users, not openable by anyone (admins included).
        assert client.get("/api/dev", headers=bob).json() == []
        for method, path in [
            ("GET", f"/api/dev/{vmid}"),
            ("GET", f"/api/dev/{vmid}/events"),
            ("GET", f"/api/dev/{vmid}/ide-url"),
            ("GET", f"/api/dev/{vmid}/files/list?path=."),
            ("POST", f"/api/dev/{vmid}/stop"),
            ("DELETE", f"/api/dev/{vmid}"),
        ]:
            for who in (bob, root):
                assert client.request(method, path, headers=who).status_code == 404, path
        # Nothing personal in it: no home, no code-server running.
        container_dir = tmp_path / "process" / str(vmid)
        root_dir = container_dir / "root"
        assert not (root_dir / "home").exists()
        assert not (root_dir / "var/lib/zlh-agent/run/code-server.pid").exists()
        pool_secret = (container_dir / "agent-token").read_text()
        agent = _agent_url(tmp_path, vmid)
        pool_auth = {"Authorization": f"Bearer {pool_secret}"}
        assert httpx.get(f"{agent}/status", headers=pool_auth).json()["pool"] is True

        # Only the pool's own request matches: without code-server, one is built as usual.
        plain = client.post("/api/dev", json={"runtime": "node"}, headers=root)
        assert plain.status_code == 202 and plain.json()["vmid"] != vmid, plain.text
        assert [(c["vmid"], c["state"]) for c in _pool(client, root)] == [(vmid, "ready")]
        assert client.delete(f"/api/dev/{plain.json()['vmid']}", headers=root).status_code == 204

        handed_out_after, since_boot = time.time(), time.clock_gettime(time.CLOCK_BOOTTIME)
        answers = _request_at_once(client, alice, bob)
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        vmids = [a.json()["vmid"] for a in answers]
        assert vmid in vmids and len(set(vmids)) == 2  # one from the pool, one built fresh
        taker, other = (alice, bob) if vmids[0] == vmid else (bob, alice)
        fresh = vmids[1 - vmids.index(vmid)]

        events = sse_events(client, f"/api/dev/{vmid}/events", taker)
        assert events[-1]["state"] == "ready", events[-1]
        record = client.get(f"/api/dev/{vmid}", headers=taker).json()
        assert record["pool"] is False and record["status"]["codeServerRunning"] is True
        assert record["owner"] == ("alice" if taker is alice else "bob")
        ready_at = datetime.fromisoformat(record["stateChangedAt"])
        # The pool-time secret is refused; the container's file holds the new one.
        assert httpx.get(f"{agent}/status", headers=pool_auth).status_code == 401
        new_secret = (container_dir / "agent-token").read_text()
        assert new_secret != pool_secret
        status = httpx.get(f"{agent}/status", headers={"Authorization": f"Bearer {new_secret}"})
        assert status.json()["pool"] is False
        # dev's home and code-server's session were made after the hand-out.
        home = root_dir / "home" / "dev"
        made = [home, *home.rglob("*")]
        assert min(p.lstat().st_ctime for p in made) >= handed_out_after - 0.01
        assert sorted(p.name for p in (home / "workspace").iterdir()) == ["README.md"]
        pid = json.loads((root_dir / "var/lib/zlh-agent/run/code-server.pid").read_text())["pid"]
        assert _started_at(pid) >= since_boot - 0.02
        assert (home / ".local/share/code-server").stat().st_ctime >= handed_out_after - 0.01
        # The other user cannot reach it; the taker's quota counts it.
        assert client.get(f"/api/dev/{vmid}", headers=other).status_code == 404
        again = client.post("/api/dev", json=DEFAULT_REQUEST, headers=taker)
        assert again.status_code == 429, again.text
        assert "quota" in again.json()["message"]

        # Never back to the pool: another is built in its place.
        [refill] = _ready_pool(client, root, 1)
        assert refill["vmid"] not in (vmid, fresh)
        # Built once the hand-out was ready, not beside it (the customer's wait comes first).
        assert _pool_creates(client, root, pooled["version"])[-1] >= ready_at
        assert sse_events(client, f"/api/dev/{fresh}/events", other)[-1]["state"] == "ready"
        for auth, own in ((taker, vmid), (other, fresh)):
            assert client.delete(f"/api/dev/{own}", headers=auth).status_code == 204

    # A restart adopts the pool; a bigger warm_pool builds only what is missing.
    monkeypatch.setenv("ZLH_WARM_POOL", '{"node": 2}')
    with zlh_up(tmp_path, ide_store, port), httpx.Client(base_url=base_url, timeout=30) as client:
        root = login(client, "root")
        pool = _ready_pool(client, root, 2)
        assert refill["vmid"] in [c["vmid"] for c in pool]
        kept = sorted(p.name for p in (tmp_path / "process").iterdir())
        assert kept == sorted(str(c["vmid"]) for c in pool)

    # 0 turns it off: the pool's containers are deleted.
    monkeypatch.setenv("ZLH_WARM_POOL", "0")
    with zlh_up(tmp_path, ide_store, port), httpx.Client(base_url=base_url, timeout=30) as client:
        root = login(client, "root")
        wait_for(lambda: _pool(client, root) == [], timeout_s=60, what="the pool deleted")
        assert list((tmp_path / "process").iterdir()) == []


def _pool_creates(client: httpx.Client, admin: Auth, version: str) -> list[datetime]:
    """When the pool started building containers of node ``version``, oldest first."""
    entries = client.get("/api/audit", params={"actor": "system"}, headers=admin).json()
    mark = f"warm pool: node {version} "
    return sorted(
        datetime.fromisoformat(e["at"])
        for e in entries
        if e["action"] == "create" and e["detail"].startswith(mark)
    )


def test_a_new_default_version_replaces_the_pool_and_failing_builds_back_off(
    ide_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    shutil.copytree(ide_store, store)
    monkeypatch.setenv("ZLH_WARM_POOL", '{"node": 1}')
    add_cli_users(tmp_path)
    port = free_port_pair()
    with (
        zlh_up(tmp_path, store, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        root = login(client, "root")
        [old] = _ready_pool(client, root, 1)
        assert old["version"] == "22"
        # A new default version whose artifact cannot install (no bin dir): the 22 goes, and
        # every 23 the pool builds fails.
        broken = tmp_path / "node-23.tar.gz"
        with tarfile.open(broken, "w:gz") as tar:
            info = tarfile.TarInfo("node-23/README")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
        zlh(
            *("artifacts", "add", "runtime", "node", "23", "--file", str(broken)),
            *("--store", str(store), "--default", "--bin", "bin", "--strip-components", "1"),
        )
        creates = wait_for(
            lambda: (found := _pool_creates(client, root, "23")) and len(found) >= 4 and found,
            timeout_s=60,
            what="four builds of 23",
        )
        assert old["vmid"] not in [c["vmid"] for c in client.get("/api/dev", headers=root).json()]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(creates)]
        # poll_interval_s 0.5: waits of at least 1, 2 and 4 s after the failures in a row
        # (each gap also holds the build until it failed).
        assert all(gap >= 0.5 * 2 ** (i + 1) for i, gap in enumerate(gaps[:3])), gaps
        assert gaps[2] > gaps[0] + 2.0, gaps
        pool = _pool(client, root)
        assert len(pool) <= 1 and all(c["version"] == "23" for c in pool)
        monkeypatch.setenv("ZLH_WARM_POOL", "0")
    # Restarted without a pool: nothing of it is left.
    with (
        zlh_up(tmp_path, store, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        root = login(client, "root")
        wait_for(lambda: _pool(client, root) == [], timeout_s=60, what="the pool deleted")
        assert list((tmp_path / "process").iterdir()) == []
