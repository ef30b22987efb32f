"""Container root is not host root: the lxc backend's containers are unprivileged.

Real containers from the real template (root, ``lxc``): the id map seen from inside, what
container root can no longer do to the host, the host's other local users kept away from the
containers' ports and from the data dir, and a privileged container of an older install
migrated with its files. Probes run inside the container with ``lxc-attach``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxc_kit import DATA_DIR, agent_status, attach, host_connects, lxc_backend, running, up

from zlh.backends import BackendUnavailable, RunState
from zlh.backends.lxc import LxcBackend
from zlh.backends.lxc.idmap import IdMap
from zlh.backends.lxc.template import build_template, current_template

pytestmark = [pytest.mark.root, pytest.mark.slow]

VMID = 9111
MIGRATED = 9112
NOBODY = 65534

# Each probe tries one thing only real host root could do and prints whether it worked.
PROBES = r"""
import ctypes, json, os, subprocess
result = {}
def attempt(name, action):
    try:
        action()
        result[name] = "done"
    except OSError as exc:
        result[name] = f"refused: {exc.strerror}"
def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)
result["uid_map"] = open("/proc/self/uid_map").read().split()
attempt("drop_caches", lambda: write("/proc/sys/vm/drop_caches", "1"))
remount = subprocess.run(["mount", "-o", "remount,rw", "/proc/sys"], capture_output=True)
result["remount_proc_sys"] = remount.returncode
attempt("drop_caches_after_remount", lambda: write("/proc/sys/vm/drop_caches", "1"))
attempt("mknod", lambda: os.mknod("/tmp/zlh-null", 0o20600, os.makedev(1, 3)))
attempt("sys_write", lambda: write("/sys/kernel/mm/transparent_hugepage/enabled", "never"))
libc = ctypes.CDLL(None, use_errno=True)
image = ctypes.create_string_buffer(b"\0" * 64)
code = libc.init_module(image, ctypes.c_ulong(64), b"")
result["init_module_errno"] = 0 if code == 0 else ctypes.get_errno()
with open("/root/made-by-container-root", "w") as handle:
    handle.write("x")
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(VMID)


def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    """``command`` run on the host as an unprivileged local user."""
    ids = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        ["setpriv", *ids, *command], capture_output=True, text=True, timeout=30, check=False
    )


CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close()
    print("connected")
except OSError as exc:
    print("refused:", exc)
"""


def test_container_root_is_an_unprivileged_user_on_the_host(backend: LxcBackend) -> None:
    running(backend, VMID)
    idmap = backend.idmap
    assert idmap is not None
    probe = json.loads(attach(backend, VMID, "python3", "-c", PROBES))

    assert probe["uid_map"] == ["0", str(idmap.uid_start), str(idmap.count)]
    assert probe["drop_caches"].startswith("refused")
    # Remounting /proc/sys read-write succeeds in a user namespace; the sysctl stays closed.
    assert probe["drop_caches_after_remount"].startswith("refused")
    assert probe["mknod"].startswith("refused")
    assert probe["sys_write"].startswith("refused")
    assert probe["init_module_errno"] == 1  # EPERM: no module loading, whatever the image
    made = backend._layers(VMID)[1] / "root" / "made-by-container-root"
    assert (made.stat().st_uid, made.stat().st_gid) == (idmap.root_uid, idmap.root_gid)


def test_the_agent_secret_belongs_to_container_root_and_etc_keeps_its_mode(
    backend: LxcBackend,
) -> None:
    info = running(backend, VMID)
    assert agent_status(info, f"secret-{VMID}") == 200  # the agent could read its secret
    listing = attach(backend, VMID, "stat", "-c", "%U %a %n", "/etc", "/etc/zlh")
    assert listing.split("\n")[:2] == ["root 755 /etc", "root 700 /etc/zlh"]
    assert attach(backend, VMID, "su", "-s", "/bin/sh", "nobody", "-c", "cat /etc/hostname")


def test_local_users_of_the_host_cannot_reach_container_ports(backend: LxcBackend) -> None:
    info = running(backend, VMID)
    address = info.address or ""
    # Something listens on :6000 inside, so a refusal is the host's rule, not a closed port.
    server = subprocess.Popen(
        ["lxc-attach", "-P", str(backend.lxcpath), "-n", f"zlh-{VMID}", "--",
         "python3", "-m", "http.server", "--bind", "0.0.0.0", "6000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for port in (info.agent_port, 6000):
            assert host_connects(address, port), port  # the platform's user (root) gets in
            other = as_nobody("/usr/bin/python3", "-c", CONNECT, address, str(port))
            assert other.stdout.startswith("refused"), (port, other.stdout, other.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_local_users_of_the_host_cannot_read_the_data_dir(backend: LxcBackend) -> None:
    running(backend, VMID)
    config = backend.lxcpath / f"zlh-{VMID}" / "config"
    upper = backend._layers(VMID)[1]
    for command in (
        ("ls", str(backend.data_dir)),
        ("ls", str(backend.lxcpath)),
        ("cat", str(config)),
        ("ls", str(upper / "etc")),
    ):
        result = as_nobody(*command)
        assert result.returncode != 0 and "Permission denied" in result.stderr, command
    assert backend.data_dir.stat().st_mode & 0o007 == 0


def test_a_data_dir_the_containers_root_cannot_reach_is_refused_with_the_reason() -> None:
    if os.geteuid() != 0:
        pytest.skip("real LXC containers need root")
    closed = DATA_DIR.with_name("closed-to-containers")  # pytest's own temp root is 0700 too
    shutil.rmtree(closed, ignore_errors=True)
    closed.mkdir(mode=0o700)
    try:
        with pytest.raises(BackendUnavailable, match=f"{closed} \\(mode 700\\) is closed to"):
            LxcBackend(data_dir=closed / "data")
        assert not (closed / "data").exists()
        closed.chmod(0o711)
        assert LxcBackend(data_dir=closed / "data").data_dir.stat().st_mode & 0o777 == 0o710
    finally:
        shutil.rmtree(closed)


def test_a_privileged_container_of_an_older_install_is_migrated_with_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("real LXC containers need root")
    data_dir = DATA_DIR.with_name(DATA_DIR.name + "-migrate")
    if not (data_dir / "cache").exists():  # the debootstrapped base, as hard links
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(DATA_DIR / "cache"), str(data_dir / "cache")], check=True)
    build_template(data_dir, idmap=None)
    import zlh.backends.lxc.backend as lxc_module

    # The older install: a host where the operator ran privileged containers.
    monkeypatch.setattr(lxc_module, "container_idmap", lambda allow_privileged: None)
    old = LxcBackend(data_dir=data_dir)
    asyncio.run(old.destroy(MIGRATED))
    try:
        up(old, MIGRATED)
        attach(old, MIGRATED, "sh", "-c", "echo kept > /root/note && chown 1000:1000 /root/note")
        assert attach(old, MIGRATED, "cat", "/proc/self/uid_map").split() == [
            "0", "0", "4294967295"
        ]  # fmt: skip
        monkeypatch.undo()

        new = LxcBackend(data_dir=data_dir)  # the upgrade: migrates on start
        assert new.idmap is not None
        info = asyncio.run(new.status(MIGRATED))
        assert info.state is RunState.RUNNING  # it ran before, so it runs again
        assert agent_status(info, f"secret-{MIGRATED}") == 200
        config = new.lxcpath / f"zlh-{MIGRATED}" / "config"
        assert IdMap.from_config(config.read_text()) == new.idmap
        inside = attach(new, MIGRATED, "stat", "-c", "%u:%g %n", "/root/note", "/etc/passwd")
        assert inside.split("\n")[:2] == ["1000:1000 /root/note", "0:0 /etc/passwd"]
        assert attach(new, MIGRATED, "cat", "/root/note") == "kept\n"
        assert attach(new, MIGRATED, "cat", "/proc/self/uid_map").split()[1] == str(
            new.idmap.uid_start
        )
        # New containers come from a template built for the new mode.
        template = current_template(new.lxcpath)
        assert template is not None and IdMap.from_config(template.config.read_text()) is None
        with pytest.raises(Exception, match="zlh template build"):
            new._template()
    finally:
        asyncio.run(LxcBackend(data_dir=data_dir).destroy(MIGRATED))
