"""deploy/haproxy-zlh.cfg, for real: HAProxy checks it, then runs it in front of two `zlh up`
replicas sharing one PostgreSQL database and key files.

A replica stopped with SIGTERM drains (its readiness says so) and goes; HAProxy sends every
request to the other, a session signed in through one replica keeps working on the other, and
no client sees an error.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pg_cluster
import pytest

from api_kit import PASSWORD, add_cli_users, login, wait_for, zlh_up
from support import free_port_pair, wait_for_port

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy-zlh.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_env(lb: int, a: int, b: int) -> dict[str, str]:
    """The example's addresses: HAProxy on ``lb`` (and ``lb``+1 for IDEs), replicas on ``a``
    and ``b`` (and their IDE ports, +1)."""
    return {
        **os.environ,
        "ZLH_LB_BIND": f"127.0.0.1:{lb}",
        "ZLH_LB_IDE_BIND": f"127.0.0.1:{lb + 1}",
        "ZLH_REPLICA_A": f"127.0.0.1:{a}",
        "ZLH_REPLICA_B": f"127.0.0.1:{b}",
        "ZLH_REPLICA_A_IDE": f"127.0.0.1:{a + 1}",
        "ZLH_REPLICA_B_IDE": f"127.0.0.1:{b + 1}",
    }


def test_haproxy_accepts_the_example_config() -> None:
    checked = subprocess.run(
        [HAPROXY, "-c", "-f", str(CONFIG)],
        env=haproxy_env(free_port_pair(), free_port_pair(), free_port_pair()),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Configuration file is valid" in checked.stdout


@contextmanager
def haproxy(lb: int, a: int, b: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(CONFIG)],
        env=haproxy_env(lb, a, b),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", lb, proc=proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def replica_dir(base: Path, name: str, database_url: str, keys: Path) -> Path:
    data = base / name
    data.mkdir()
    (data / "api.toml").write_text(
        f'database_url = "{database_url}"\nreplica = "{name}"\nfront_workers = 1\n'
        f'jwt_key_file = "{keys / "jwt.key"}"\nagent_key_file = "{keys / "agent.key"}"\n'
        'trusted_proxies = ["127.0.0.1"]\n'
    )
    return data


class Traffic:
    """GETs through the load balancer, each on a new connection, until stopped."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        while not self._stop.is_set():
            try:
                self.statuses.append(httpx.get(url, headers=headers, timeout=10).status_code)
            except httpx.HTTPError as exc:
                self.statuses.append(type(exc).__name__)

    def stop(self) -> list[int | str]:
        self._stop.set()
        self._thread.join(timeout=20)
        return self.statuses


def test_haproxy_moves_clients_off_a_draining_replica_without_an_error(
    postgres_server: str, tmp_path: Path
) -> None:
    database_url = pg_cluster.fresh_database(postgres_server)
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    store = tmp_path / "store"
    store.mkdir()
    a_dir = replica_dir(tmp_path, "a", database_url, keys)
    b_dir = replica_dir(tmp_path, "b", database_url, keys)
    a, b, lb = free_port_pair(), free_port_pair(), free_port_pair()
    with zlh_up(a_dir, store, a) as replica_a:
        add_cli_users(a_dir)
        with zlh_up(b_dir, store, b), haproxy(lb, a, b):
            base = f"http://127.0.0.1:{lb}"
            with httpx.Client(base_url=base, timeout=10) as client:
                wait_for(
                    lambda: client.get("/api/health/ready").status_code == 200,
                    timeout_s=20,
                    what="HAProxy to see a ready replica",
                )
                alice = login(client, "alice")
            traffic = Traffic(f"{base}/api/dev", alice)
            wait_for(lambda: len(traffic.statuses) >= 20, timeout_s=20, what="traffic")
            replica_a.send_signal(signal.SIGTERM)
            assert replica_a.wait(timeout=30) == 0
            seen = len(traffic.statuses)
            wait_for(lambda: len(traffic.statuses) >= seen + 50, timeout_s=30, what="more")
            statuses = traffic.stop()
            assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
            # Replica a is gone: b serves the session a signed in, and new sign-ins.
            assert httpx.get(f"http://127.0.0.1:{b}/api/dev", headers=alice).status_code == 200
            response = httpx.post(
                f"{base}/api/auth/login", json={"username": "bob", "password": PASSWORD}
            )
            assert response.status_code == 200
