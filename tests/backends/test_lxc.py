"""The lxc backend with real containers: isolation, secrets, addresses, restarts.

Needs root and the ``lxc``/``debootstrap``/``nftables`` packages (scripts/bootstrap.sh). The
template is built once per machine by the real ``zlh template build`` into ``.data/test-lxc``
(a few minutes cold, a no-op afterwards) and shared by every test here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxc_kit import (
    DATA_DIR,
    agent_status,
    attach,
    connect_from,
    host_connects,
    host_services,
    lxc_backend,
    running,
    up,
)

from support import descendants, free_port, serve_store, zlh
from zlh.api.commands import container_artifact_url
from zlh.api.settings import ApiSettings
from zlh.backends import (
    BackendUnavailable,
    ContainerExists,
    ContainerInfo,
    ContainerSpec,
    RunState,
    create_backend,
)
from zlh.backends.lxc import LxcBackend
from zlh.backends.lxc.idmap import IdMap
from zlh.backends.lxc.template import template_version

pytestmark = [pytest.mark.root, pytest.mark.slow]

OTHER_DATA_DIR = DATA_DIR.with_name(DATA_DIR.name + "-other")
A, B, C = 9101, 9102, 9103


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(A, B, C)


@pytest.fixture(scope="module")
def other(backend: LxcBackend) -> Iterator[LxcBackend]:
    """A second data dir on the same host, as a second ``zlh up`` would have. Its template is
    built for real, from the first one's debootstrapped base (hard links: no second download)."""
    if not (OTHER_DATA_DIR / "cache").exists():
        OTHER_DATA_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["cp", "-al", str(DATA_DIR / "cache"), str(OTHER_DATA_DIR / "cache")], check=True
        )
    zlh("template", "build", "--data-dir", str(OTHER_DATA_DIR), timeout=1200)
    lxc = LxcBackend(data_dir=OTHER_DATA_DIR)
    asyncio.run(lxc.destroy(A))
    yield lxc
    asyncio.run(lxc.destroy(A))


def test_two_containers_answer_their_own_secret_and_cannot_reach_each_other(
    backend: LxcBackend,
) -> None:
    a, b = up(backend, A), up(backend, B)
    assert a.address and b.address and a.address != b.address
    assert agent_status(a, f"secret-{A}") == 200
    assert agent_status(b, f"secret-{B}") == 200
    assert agent_status(a, f"secret-{B}") == 401
    assert agent_status(b, f"secret-{A}") == 401

    # a stand-in for code-server on B's :6000 (the template does not ship code-server)
    attach(backend, B, "sh", "-c", "setsid python3 -m http.server 6000 >/dev/null 2>&1 &")
    assert host_connects(b.address, 6000)
    assert host_connects(b.address, b.agent_port)
    assert not connect_from(backend, A, b.address, b.agent_port)
    assert not connect_from(backend, A, b.address, 6000)
    # nor by routing through the host (the container is root: it can add routes)
    attach(backend, A, "ip", "route", "add", f"{b.address}/32", "via", backend._network().address)
    assert not connect_from(backend, A, b.address, 6000)


def _listening(host: str) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, 0))
    server.listen()
    return server


@contextlib.contextmanager
def _dns_stand_in(bridge: str) -> Iterator[None]:
    """Something on the bridge's TCP port 53: lxc-net's dnsmasq where it runs, else a listener."""
    if host_connects(bridge, 53, timeout_s=0.5):
        yield
        return
    with socket.socket() as server:
        server.bind((bridge, 53))
        server.listen()
        yield


def _other_host_address(bridge: str) -> str | None:
    """One of the host's own addresses that is not the bridge's (eth0's, say)."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout
    addresses = [line.split()[3].split("/")[0] for line in out.splitlines()]
    return next((a for a in addresses if a != bridge), None)


def test_a_container_reaches_only_the_host_ports_the_platform_registered(
    backend: LxcBackend,
) -> None:
    running(backend, A)
    bridge = backend._network().address
    with _listening("0.0.0.0") as service, _listening("0.0.0.0") as private:
        port, other = service.getsockname()[1], private.getsockname()[1]
        LxcBackend(data_dir=DATA_DIR, host_ports=[port])  # what `zlh up` does: its artifact port
        try:
            accepted: list[str] = []

            def accept() -> None:
                conn, peer = service.accept()
                accepted.append(peer[0])
                conn.close()

            thread = threading.Thread(target=accept, daemon=True)
            thread.start()
            assert connect_from(backend, A, bridge, port)
            thread.join(timeout=10)
            assert accepted == [running(backend, A).address]
            with _dns_stand_in(bridge):  # lxc-net's dnsmasq, or a stand-in
                assert connect_from(backend, A, bridge, 53)
            # a service of the host nobody registered: refused on every host address
            assert host_connects(bridge, other)
            assert not connect_from(backend, A, bridge, other)
            elsewhere = _other_host_address(bridge)
            if elsewhere is not None:
                assert not connect_from(backend, A, elsewhere, other)
                assert connect_from(backend, A, elsewhere, port)
        finally:
            backend.slots.serve(backend.lxcpath, [])
    assert agent_status(running(backend, A), f"secret-{A}") == 200  # the host still reaches it


def test_zlh_up_tells_lxc_containers_the_bridge_address_and_refuses_a_loopback_listen(
    backend: LxcBackend, tmp_path: Path
) -> None:
    bridge = backend._network().address
    everywhere = ApiSettings(data_dir=tmp_path, backend="lxc", listen="0.0.0.0:8780")
    assert container_artifact_url(everywhere) == f"http://{bridge}:8780/artifacts"
    on_bridge = ApiSettings(data_dir=tmp_path, backend="lxc", listen=f"{bridge}:8780")
    assert container_artifact_url(on_bridge) == f"http://{bridge}:8780/artifacts"
    port = free_port()
    refused = zlh(
        "up",
        "--backend",
        "lxc",
        "--data-dir",
        str(tmp_path / "d"),
        "--listen",
        f"127.0.0.1:{port}",
        check=False,
    )
    out = refused.stdout + refused.stderr
    assert refused.returncode == 2, out
    assert f"bridge address {bridge}" in out and f"0.0.0.0:{port}" in out
    assert "Traceback" not in out and len(out.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "lxc").exists()  # refused before anything was made


def test_doctor_fetches_the_artifacts_from_inside_a_running_container(
    backend: LxcBackend, node_store: Path
) -> None:
    running(backend, A)
    bridge = backend._network().address
    with contextlib.contextmanager(serve_store)(node_store, bridge) as url:
        doctor = ["doctor", "--data-dir", str(DATA_DIR), "--store", str(node_store)]
        env = {**os.environ, "ZLH_ARTIFACT_URL_FOR_CONTAINERS": url}
        with host_services(backend, url):
            reached = zlh(*doctor, env=env, check=False).stdout
        refused = zlh(*doctor, env=env, check=False)
    line = next(x for x in reached.splitlines() if "container reach" in x)
    assert line.startswith("[ok  ] container reach: zlh-") and f"fetches {url}/catalog.json" in line
    line = next(x for x in refused.stdout.splitlines() if "container reach" in x)
    assert line.startswith("[FAIL] container reach: zlh-") and "cannot fetch" in line
    assert refused.returncode == 1


METADATA = "169.254.169.254"


@contextlib.contextmanager
def metadata_service() -> Iterator[int]:
    """An HTTP server at the cloud metadata address, one routed hop from the host (in a
    network namespace of its own, as on a cloud VM); yields its port."""
    netns, host_end = "zlh-test-meta", "zlhmeta0"

    def run(*cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    subprocess.run(["ip", "netns", "delete", netns], capture_output=True)
    subprocess.run(["ip", "link", "delete", host_end], capture_output=True)
    run("ip", "netns", "add", netns)
    try:
        run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "meta", "netns", netns)
        run("ip", "addr", "add", "169.254.169.1/24", "dev", host_end)
        run("ip", "link", "set", host_end, "up")
        inside = ["ip", "netns", "exec", netns]
        run(*inside, "ip", "addr", "add", f"{METADATA}/24", "dev", "meta")
        run(*inside, "ip", "link", "set", "meta", "up")
        run(*inside, "ip", "route", "add", "default", "via", "169.254.169.1")
        server = subprocess.Popen(
            [*inside, "python3", "-m", "http.server", "80", "--bind", METADATA],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield 80
        finally:
            server.terminate()
            server.wait(timeout=10)
    finally:
        subprocess.run(["ip", "link", "delete", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)


def test_a_container_cannot_reach_the_cloud_metadata_service(backend: LxcBackend) -> None:
    running(backend, A)
    with metadata_service() as port:
        assert host_connects(METADATA, port)  # the host reaches it: the route is there
        assert not connect_from(backend, A, METADATA, port)


def test_destroy_removes_both_and_their_addresses_are_reused(backend: LxcBackend) -> None:
    before = {asyncio.run(backend.status(v)).address for v in (A, B)} - {None}
    if len(before) < 2:
        before = {up(backend, v).address for v in (A, B)}
    for vmid in (A, B):
        asyncio.run(backend.destroy(vmid))
        assert asyncio.run(backend.status(vmid)).state is RunState.ABSENT
        assert not (backend.lxcpath / f"zlh-{vmid}").exists()
    asyncio.run(backend.destroy(A))  # idempotent
    assert {c.vmid for c in asyncio.run(backend.list())}.isdisjoint({A, B})
    again = {up(backend, v).address for v in (B, A)}
    assert again == before


def test_a_container_is_found_and_reachable_after_a_backend_restart(backend: LxcBackend) -> None:
    info = up(backend, C, memory_mb=512, pids=300)
    restarted = create_backend("lxc", data_dir=DATA_DIR)  # a new object, as after an API restart
    listed = {c.vmid: c for c in asyncio.run(restarted.list())}
    assert listed[C] == info
    assert agent_status(listed[C], f"secret-{C}") == 200
    # the limits reached the container's cgroup (v1 or v2 keys, whichever this host has)
    assert isinstance(restarted, LxcBackend)
    limit = restarted.memory_limit_bytes(C)
    assert limit == 512 * 1024 * 1024
    asyncio.run(restarted.stop(C, timeout_s=5))
    assert asyncio.run(backend.status(C)).state is RunState.STOPPED


def test_creating_an_existing_vmid_fails_without_touching_it(backend: LxcBackend) -> None:
    if not asyncio.run(backend.status(C)).state.exists:
        up(backend, C)
    config = (backend.lxcpath / f"zlh-{C}" / "config").read_text()
    before = asyncio.run(backend.status(C))
    with pytest.raises(ContainerExists, match=f"container {C} already exists"):
        asyncio.run(backend.create(ContainerSpec(vmid=C, agent_secret="intruder")))
    assert (backend.lxcpath / f"zlh-{C}" / "config").read_text() == config
    assert asyncio.run(backend.status(C)) == before
    token = backend._layers(C)[1] / "etc/zlh/agent-token"
    assert token.read_text() == f"secret-{C}"


def test_a_container_started_from_a_batch_scheduled_thread_runs_under_the_default_policy(
    backend: LxcBackend,
) -> None:
    """The front runs under SCHED_BATCH (zlh.proxy.serving), which children inherit; a
    container the API starts, the tenant's processes, must not."""
    asyncio.run(backend.destroy(C))
    started: list[ContainerInfo] = []
    failures: list[BaseException] = []

    def start_as_the_front_would() -> None:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))  # this thread only
        try:
            started.append(up(backend, C))
        except BaseException as exc:  # reported by the test's thread below
            failures.append(exc)

    starter = threading.Thread(target=start_as_the_front_would)
    starter.start()
    starter.join()
    assert not failures, failures
    assert agent_status(started[0], f"secret-{C}") == 200  # its agent runs: a tenant process
    init = int(backend._lxc("lxc-info", C, "-p", "-H", what="init pid").strip())
    policies: dict[bytes, int] = {}
    for pid in [init, *descendants(init)]:
        with contextlib.suppress(OSError):  # a short-lived process gone meanwhile
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            policies[command] = os.sched_getscheduler(pid)
    assert any(b"agent" in command for command in policies), policies
    assert set(policies.values()) == {os.SCHED_OTHER}, policies


def write_wheel(path: Path, content: bytes, *, year: int) -> None:
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(zipfile.ZipInfo("zlh/agent/app.py", (year, 1, 1, 0, 0, 0)), content)


def test_template_version_changes_with_the_agent_wheel_and_the_id_map_only(tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    wheelhouse.mkdir()
    wheel = wheelhouse / "zlh-0.1.0-py3-none-any.whl"
    write_wheel(wheel, b"v1", year=2020)
    idmap = IdMap(100_000, 100_000)
    first = template_version(wheelhouse, idmap)
    write_wheel(wheel, b"v1", year=2021)  # rebuilt: same contents, other timestamps
    assert template_version(wheelhouse, idmap) == first
    assert template_version(wheelhouse, IdMap(165_536, 165_536)) != first
    assert template_version(wheelhouse, None) != first
    write_wheel(wheel, b"v2", year=2021)
    assert template_version(wheelhouse, idmap) != first


def test_selecting_lxc_without_root_says_what_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BackendUnavailable, match="needs root"):
        create_backend("lxc", data_dir=tmp_path)


SEND_UDP = """
import socket, sys
for source in sys.argv[3:]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.sendto(b"hello", (sys.argv[1], int(sys.argv[2])))
"""
COUNTING = "zlh_test_counting"


@contextlib.contextmanager
def ip_layer_counts(port: int, sources: list[str]) -> Iterator[Callable[[], dict[str, int]]]:
    """Datagrams from each of ``sources`` to the host's UDP ``port``, as the host's IP layer
    gets them: what the bridge's filter let through, before the isolation table's input chain
    (a counter per source in a table of its own, at an earlier priority)."""
    rules = "\n".join(f'ip saddr {a} udp dport {port} counter comment "{a}"' for a in sources)
    script = f"""table inet {COUNTING} {{
        chain input {{
            type filter hook input priority -10; policy accept;
            {rules}
        }}
    }}"""
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)

    def counts() -> dict[str, int]:
        listed = subprocess.run(
            ["nft", "-j", "list", "table", "inet", COUNTING],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {
            item["rule"]["comment"]: next(
                e["counter"]["packets"] for e in item["rule"]["expr"] if "counter" in e
            )
            for item in json.loads(listed)["nftables"]
            if "rule" in item
        }

    try:
        yield counts
    finally:
        subprocess.run(["nft", "delete", "table", "inet", COUNTING], check=False)


def received_from(backend: LxcBackend, vmid: int, sources: list[str], host: str) -> dict[str, int]:
    """Datagrams the host's IP layer got per source after container ``vmid`` sent one from
    each of ``sources``, in that order, over its one bridge port (so once the last one has
    arrived, the earlier ones have arrived or been dropped)."""
    port = 40999
    with ip_layer_counts(port, sources) as counts:
        attach(backend, vmid, "python3", "-c", SEND_UDP, host, str(port), *sources)
        deadline = time.monotonic() + 10
        while not counts()[sources[-1]] and time.monotonic() < deadline:
            time.sleep(0.05)
        return counts()


def test_a_container_cannot_speak_with_its_neighbours_address(backend: LxcBackend) -> None:
    infos = {v: asyncio.run(backend.status(v)) for v in (A, B)}
    for vmid, info in infos.items():
        if info.state is not RunState.RUNNING:
            infos[vmid] = (
                asyncio.run(backend.start(vmid)) if info.state.exists else up(backend, vmid)
            )
    own, neighbour = infos[A].address, infos[B].address
    assert own and neighbour
    bridge = backend._network().address
    attach(backend, A, "ip", "addr", "add", f"{neighbour}/32", "dev", "eth0")
    try:
        # the last datagram, from its own address, arrives after the spoofed one would have
        heard = received_from(backend, A, [neighbour, own], bridge)
    finally:
        attach(backend, A, "ip", "addr", "del", f"{neighbour}/32", "dev", "eth0")
    assert heard == {neighbour: 0, own: 1}
    assert agent_status(infos[B], f"secret-{B}") == 200  # B still answers as itself


def test_two_data_dirs_run_the_same_vmid_side_by_side(
    backend: LxcBackend, other: LxcBackend
) -> None:
    mine = running(backend, A)
    theirs = up(other, A, secret="their-secret")
    my_slot, their_slot = backend.slots.get(backend.lxcpath, A), other.slots.get(other.lxcpath, A)
    assert my_slot and their_slot
    assert my_slot.veth != their_slot.veth and my_slot.mac != their_slot.mac
    assert mine.address != theirs.address
    assert agent_status(mine, f"secret-{A}") == 200
    assert agent_status(theirs, "their-secret") == 200
    assert agent_status(theirs, f"secret-{A}") == 401
    assert not connect_from(other, A, mine.address or "", mine.agent_port)

    # One instance restarting reloads the host's isolation table: the other's container stays.
    LxcBackend(data_dir=DATA_DIR)._network()
    assert agent_status(theirs, "their-secret") == 200
    # A start clears a leftover bridge port of the container's own name, never another's.
    asyncio.run(backend.stop(A, timeout_s=5))
    asyncio.run(backend.start(A))
    assert agent_status(theirs, "their-secret") == 200
    assert agent_status(mine, f"secret-{A}") == 200

    asyncio.run(other.destroy(A))
    assert other.slots.get(other.lxcpath, A) is None
    assert agent_status(mine, f"secret-{A}") == 200


def test_a_container_from_before_the_slot_registry_is_adopted_with_its_names(
    backend: LxcBackend,
) -> None:
    info = running(backend, C)
    slot = backend.slots.release(backend.lxcpath, C)  # as if created by an older version
    assert slot is not None
    restarted = LxcBackend(data_dir=DATA_DIR)
    restarted._network()
    assert restarted.slots.get(restarted.lxcpath, C) == slot
    assert agent_status(info, f"secret-{C}") == 200


def test_an_adopted_container_whose_names_are_taken_gets_new_ones_at_its_next_start(
    backend: LxcBackend, other: LxcBackend
) -> None:
    info = running(backend, C)
    slot = backend.slots.release(backend.lxcpath, C)  # as if created by an older version...
    assert slot is not None and info.address == slot.address
    squatter = other.lxcpath / "zlh-9199"  # ...while another data dir took its names since
    squatter.mkdir(parents=True, exist_ok=True)
    (squatter / "config").write_text("# stands for a container of the other data dir\n")
    try:
        other.slots.claim(
            other.lxcpath, 9199, backend._network(), number=slot.number, address=slot.address
        )
        restarted = LxcBackend(data_dir=DATA_DIR)
        restarted._network()
        adopted = restarted.slots.get(restarted.lxcpath, C)
        assert adopted is not None
        assert adopted.number != slot.number and adopted.address != slot.address
        asyncio.run(restarted.stop(C, timeout_s=5))
        moved = asyncio.run(restarted.start(C))
        assert moved.address == adopted.address
        assert agent_status(moved, f"secret-{C}") == 200
    finally:
        other.slots.release(other.lxcpath, 9199)
        shutil.rmtree(squatter)
