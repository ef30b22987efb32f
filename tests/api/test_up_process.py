"""`zlh up` for real: process backend, the built-in store with a real Node runtime, real agents.

Two users: alice's node request goes 202 → ready (runtimeInstalled) over SSE; bob gets 404 on
every route of her container and cannot list it; an admin can. Then the API is SIGKILLed in
the middle of provisioning and restarted: the container still reaches ready, exactly once.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_kit import PASSWORD, add_cli_users, login, sse_events, up_env, wait_for, zlh_up
from support import free_port_pair, zlh

pytestmark = pytest.mark.slow


def _agents(data_dir: Path) -> list[str]:
    base = data_dir / "process"
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.exists() else []


def test_node_request_reaches_ready_and_only_its_owner_and_admins_see_it(
    node_store: Path, tmp_path: Path
) -> None:
    add_cli_users(tmp_path)
    # The test client stands in for a reverse proxy in front of the public port.
    (tmp_path / "api.toml").write_text('trusted_proxies = ["127.0.0.1"]\n')
    port = free_port_pair()
    with (
        zlh_up(tmp_path, node_store, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        alice, bob, root = (login(client, n) for n in ("alice", "bob", "root"))
        # Front → unix socket → API: the client behind the trusted proxy reaches the audit log.
        wrong = {"username": "alice", "password": "not it"}
        via_proxy = {"X-Forwarded-For": "203.0.113.7"}
        assert client.post("/api/auth/login", json=wrong, headers=via_proxy).status_code == 401
        audit = client.get("/api/audit", headers=root).json()
        assert [(e["action"], e["address"]) for e in audit[:2]] == [
            ("login-failed", "203.0.113.7"),
            ("login", "127.0.0.1"),
        ]
        created = client.post("/api/dev", json={"runtime": "node"}, headers=alice)
        assert created.status_code == 202, created.text
        vmid = created.json()["vmid"]
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "ready", events[-1]
        assert events[-1]["runtimeInstalled"] is True
        record = client.get(f"/api/dev/{vmid}", headers=alice).json()
        assert record["status"]["runtimeInstalled"] is True
        assert record["status"]["runtimeInstallPath"].endswith(f"/node/{record['version']}")

        for method, path in [
            ("GET", f"/api/dev/{vmid}"),
            ("GET", f"/api/dev/{vmid}/events"),
            ("DELETE", f"/api/dev/{vmid}"),
        ]:
            assert client.request(method, path, headers=bob).status_code == 404, path
        assert client.get("/api/dev", headers=bob).json() == []
        assert [c["vmid"] for c in client.get("/api/dev", headers=root).json()] == [vmid]
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
        assert _agents(tmp_path) == []


def test_sigkill_mid_provisioning_then_restart_reaches_ready_exactly_once(
    node_store: Path, tmp_path: Path
) -> None:
    add_cli_users(tmp_path)
    port = free_port_pair()
    base_url = f"http://127.0.0.1:{port}"
    with (
        zlh_up(tmp_path, node_store, port) as proc,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        alice = login(client, "alice")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]

        def provisioning() -> bool:
            state = client.get(f"/api/dev/{vmid}", headers=alice).json()["state"]
            assert state != "ready", "too late to interrupt: already ready"
            return bool(state in {"creating", "provisioning"})

        wait_for(provisioning, timeout_s=60, what="provisioning to begin")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    with zlh_up(tmp_path, node_store, port), httpx.Client(base_url=base_url, timeout=30) as client:
        alice = login(client, "alice")
        events = sse_events(client, f"/api/dev/{vmid}/events", alice)
        assert events[-1]["state"] == "ready", events[-1]
        listed: Any = client.get("/api/dev", headers=alice).json()
        assert [c["vmid"] for c in listed] == [vmid]
        assert _agents(tmp_path) == [str(vmid)]
        state = json.loads((tmp_path / "process" / str(vmid) / "state.json").read_text())
        assert state  # the backend's own record of the one container
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_shuts_down_in_order_and_exits_zero(
    stop: signal.Signals, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    port = free_port_pair()
    with zlh_up(tmp_path, store, port) as proc:
        socket_file = tmp_path / "run" / "api.sock"
        assert socket_file.exists()
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
        proc.send_signal(stop)
        assert proc.wait(timeout=30) == 0, (tmp_path / "up.log").read_text()[-2000:]
    assert not socket_file.exists()  # removed by the shutdown, not left for the next start
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)


def test_doctor_reports_a_running_platform_on_its_port_and_anything_else_there_as_in_use(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    port = free_port_pair()
    doctor = ["doctor", "--backend", "process", "--store", str(store)]
    with zlh_up(tmp_path, store, port):
        ours = zlh(*doctor, "--listen", f"127.0.0.1:{port}", env=up_env(tmp_path), check=False)
    line = next(x for x in ours.stdout.splitlines() if "] port:" in x)
    assert line == f"[ok  ] port: zlh is running on 127.0.0.1:{port} (health ok, database ok)"
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = f"127.0.0.1:{other.getsockname()[1]}"
        theirs = zlh(*doctor, "--listen", taken, env=up_env(tmp_path), check=False)
    line = next(x for x in theirs.stdout.splitlines() if "] port:" in x)
    assert line.startswith(f"[FAIL] port: cannot listen on {taken}")
    assert theirs.returncode == 1


def _agent_pids(data_dir: Path, vmid: int) -> list[int]:
    """Processes of this container's agent (its token file is on its command line)."""
    token = str(data_dir / "process" / str(vmid) / "agent-token").encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and token in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return pids


def test_zlh_dev_stops_starts_restarts_rebuilds_and_shares_a_container_that_keeps_its_files(
    node_store: Path, tmp_path: Path
) -> None:
    add_cli_users(tmp_path)
    port = free_port_pair()
    base_url = f"http://127.0.0.1:{port}"
    dev = ["--url", base_url, "--user", "alice", "--data-dir", str(tmp_path)]
    env = {**up_env(tmp_path), "ZLH_PASSWORD": PASSWORD}
    with zlh_up(tmp_path, node_store, port), httpx.Client(base_url=base_url, timeout=30) as client:
        alice = login(client, "alice")
        vmid = client.post("/api/dev", json={"runtime": "node"}, headers=alice).json()["vmid"]
        assert sse_events(client, f"/api/dev/{vmid}/events", alice)[-1]["state"] == "ready"
        kept, content = {"path": "kept.txt"}, f"/api/dev/{vmid}/files/content"
        put = client.put(content, params=kept, content=b"mine\n", headers=alice)
        assert put.status_code in (200, 201), put.text
        assert _agent_pids(tmp_path, vmid) != []

        stopped = zlh("dev", "stop", str(vmid), *dev, env=env)
        assert stopped.stdout.splitlines() == [
            f"container {vmid}: stopping (stopped by user alice)",
            f"container {vmid}: stopped",
        ]
        assert _agent_pids(tmp_path, vmid) == []  # no process, no memory
        assert zlh("dev", "stop", str(vmid), *dev, env=env, check=False).returncode == 1

        started = zlh("dev", "start", str(vmid), *dev, env=env)
        assert started.stdout.splitlines()[-1] == f"container {vmid}: ready"
        read = client.get(content, params=kept, headers=alice)
        assert read.text == "mine\n"
        record = client.get(f"/api/dev/{vmid}", headers=alice).json()
        assert record["status"]["runtimeInstalled"] is True

        restarted = zlh("dev", "restart", str(vmid), *dev, env=env)
        assert restarted.stdout.splitlines()[-1] == f"container {vmid}: ready"
        listed = zlh("dev", "list", *dev, env=env).stdout
        assert f"{vmid}  " in listed and "restarted by user alice" in listed

        # A rebuild: a fresh system provisioned again, the home (an extension too) kept.
        root = tmp_path / "process" / str(vmid) / "root"
        extension = root / "home/dev/.local/share/code-server/extensions/acme.tool-1.0.0"
        extension.mkdir(parents=True)
        (extension / "package.json").write_text('{"name": "tool"}\n')
        (root / "opt" / "marker").write_text("outside the home\n")
        rebuilt = zlh("dev", "rebuild", str(vmid), *dev, env=env)
        lines = rebuilt.stdout.splitlines()
        assert lines[0] == f"container {vmid}: rebuilding (rebuilt by user alice)"
        assert lines[-1] == f"container {vmid}: ready"
        assert client.get(content, params=kept, headers=alice).text == "mine\n"
        assert (extension / "package.json").read_text() == '{"name": "tool"}\n'
        assert not (root / "opt" / "marker").exists()
        record = client.get(f"/api/dev/{vmid}", headers=alice).json()
        assert record["status"]["runtimeInstalled"] is True  # installed again

        # Sharing: bob reads alice's file while it is shared with him, not after.
        bob = login(client, "bob")
        shared = zlh("dev", "share", str(vmid), "bob", *dev, env=env)
        assert shared.stdout.strip() == f"container {vmid}: shared with bob (use)"
        assert client.get(content, params=kept, headers=bob).text == "mine\n"
        unshared = zlh("dev", "unshare", str(vmid), "bob", *dev, env=env)
        assert unshared.stdout.strip() == f"container {vmid}: no longer shared with bob"
        assert client.get(content, params=kept, headers=bob).status_code == 404
        again = zlh("dev", "unshare", str(vmid), "bob", *dev, env=env, check=False)
        assert again.returncode == 1
        assert again.stderr.strip().endswith(f"container {vmid} is not shared with 'bob'")
        assert client.delete(f"/api/dev/{vmid}", headers=alice).status_code == 204
