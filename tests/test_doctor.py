"""``zlh doctor`` names what is missing and how to fix it, and fails when something is."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agent_helpers import artifact_server, runtime_members, sha256, tarball
from support import zlh
from zlh.doctor import Check, Host, Outcome, run_checks
from zlh.layers import LayerStore
from zlh.schemas import Artifact, ArtifactKind

if TYPE_CHECKING:
    from zlh.api.db import Database, User


def _path_without_lxc(tmp_path: Path) -> str:
    """A PATH holding only python (for the CLI itself), so no lxc-* tool is found."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    return str(bin_dir)


def test_doctor_without_lxc_names_the_package_and_fails(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": _path_without_lxc(tmp_path)}
    result = zlh(
        "doctor",
        "--data-dir",
        str(tmp_path / "data"),
        "--listen",
        "127.0.0.1:0",
        check=False,
        env=env,
    )
    assert result.returncode == 1, result.stdout
    assert "apt-get install lxc" in result.stdout
    assert "[FAIL] lxc" in result.stdout


def test_doctor_reports_an_empty_catalog_with_the_build_commands(tmp_path: Path) -> None:
    result = zlh(
        "doctor",
        "--backend",
        "process",
        "--data-dir",
        str(tmp_path),
        "--listen",
        "127.0.0.1:0",
        check=False,
    )
    assert result.returncode == 1
    assert "zlh artifacts build node" in result.stdout
    assert "zlh artifacts build code-server" in result.stdout


def test_doctor_flags_a_corrupted_artifact(tmp_path: Path) -> None:
    store = tmp_path / "artifacts"
    tarball = tmp_path / "node-22.tar.gz"
    shutil.make_archive(str(tmp_path / "node-22"), "gztar", root_dir=tmp_path, base_dir=".")
    zlh("artifacts", "add", "runtime", "node", "22", "--file", str(tarball), "--store", str(store))
    stored = next((store / "runtime" / "node" / "22").iterdir())
    stored.write_bytes(b"corrupted")
    result = zlh(
        "doctor",
        "--backend",
        "process",
        "--store",
        str(store),
        "--data-dir",
        str(tmp_path),
        "--listen",
        "127.0.0.1:0",
        check=False,
    )
    assert result.returncode == 1
    assert "[FAIL] catalog" in result.stdout and "runtime node 22" in result.stdout


def test_doctor_flags_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = zlh(
            "doctor",
            "--backend",
            "process",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            check=False,
        )
    assert "[FAIL] port" in result.stdout


def test_doctor_names_the_missing_lxc_template_and_how_to_build_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ("doctor", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0")
    result = zlh(*args, check=False)
    assert result.returncode == 1
    assert "[FAIL] template" in result.stdout
    assert f"zlh template build --data-dir {data_dir}" in result.stdout
    # A built template is what zlh template build leaves: a config and the version pointer.
    template = data_dir / "lxc" / "zlh-template-0123456789abcdef"
    template.mkdir(parents=True)
    (template / "config").write_text("lxc.uts.name = zlh-template\n")
    (data_dir / "lxc" / "zlh-template.current").write_text("0123456789abcdef\n")
    result = zlh(*args, check=False)
    assert "[ok  ] template: zlh-template-0123456789abcdef" in result.stdout


def test_doctor_says_whether_the_front_runs_compiled(tmp_path: Path) -> None:
    host = Host(data_dir=tmp_path, store=tmp_path, listen="127.0.0.1:0", backend="process")
    (installed,) = [c for c in run_checks(host) if c.name == "front"]
    # Compiled on the platform host (ZLH_COMPILE_FRONT: tests/proxy/test_compiled.py), plain
    # Python in a plain install.
    compiled = (importlib.import_module("zlh.proxy.front").__file__ or "").endswith(".so")
    assert installed.outcome is (Outcome.OK if compiled else Outcome.WARN), installed.detail
    # zlh.proxy.settings is never compiled (a pydantic model): it stands for a pure install.
    pure = replace(host, front_modules=("zlh.proxy.front", "zlh.proxy.settings"))
    (warned,) = [c for c in run_checks(pure) if c.name == "front"]
    assert warned.outcome is Outcome.WARN
    assert "zlh.proxy.settings" in warned.detail and "zlh.proxy.front" not in warned.detail
    assert "make bootstrap" in warned.fix


def test_doctor_reports_who_shares_the_host_and_its_open_ports_and_fails_on_a_bad_registry(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "lxc-slots.json"
    host = Host(
        data_dir=tmp_path / "data",
        store=tmp_path,
        listen="127.0.0.1:0",
        backend="lxc",
        slot_registry=registry,
    )
    (empty,) = [c for c in run_checks(host) if c.name == "slots"]
    assert empty.outcome is Outcome.OK and empty.detail.startswith("no zlh LXC container")
    assert empty.detail.endswith("containers reach the host on DNS, DHCP and TCP port(s) none")
    mine = str((tmp_path / "data" / "lxc").resolve())
    entries = [
        {"number": 100, "lxcpath": mine, "vmid": 100, "bridge": "lxcbr0", "address": "10.0.3.2"},
        {
            "number": 1,
            "lxcpath": "/srv/b/lxc",
            "vmid": 100,
            "bridge": "lxcbr0",
            "address": "10.0.3.3",
        },
    ]
    services = {mine: [8080], "/srv/b/lxc": [8080, 9443]}
    registry.write_text(json.dumps({"slots": entries, "services": services}))
    (shared,) = [c for c in run_checks(host) if c.name == "slots"]
    assert shared.detail == (
        "2 LXC container(s) on this host: 1 of this data dir, 1 of 1 other data dir(s); "
        "containers reach the host on DNS, DHCP and TCP port(s) 8080, 9443"
    )
    assert json.loads(registry.read_text())["slots"] == entries  # a report changes nothing
    registry.write_text("{not json")
    (broken,) = [c for c in run_checks(host) if c.name == "slots"]
    assert broken.outcome is Outcome.FAIL and str(registry) in broken.detail
    assert "move it away only when no zlh LXC container" in broken.fix
    assert [c for c in run_checks(replace(host, backend="process")) if c.name == "slots"] == []


def _data_dir_check(data_dir: Path) -> list[Check]:
    host = Host(data_dir=data_dir, store=data_dir, listen="127.0.0.1:0", backend="process")
    return [c for c in run_checks(host) if c.name == "data dir"]


def test_doctor_fails_on_a_data_dir_others_can_read_with_a_fix_that_works(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    for name, mode in (("zlh.db", 0o644), ("zlh-up.log", 0o640), ("jwt.key", 0o600)):
        (data_dir / name).write_text("x")
        (data_dir / name).chmod(mode)
    [check] = _data_dir_check(data_dir)
    assert check.outcome is Outcome.FAIL
    assert f"{data_dir} is 755" in check.detail
    assert f"{data_dir / 'zlh.db'} (644)" in check.detail
    assert "zlh-up.log (640)" in check.detail and "jwt.key" not in check.detail
    subprocess.run(["sh", "-c", check.fix], check=True)
    [fixed] = _data_dir_check(data_dir)
    assert fixed.outcome is Outcome.OK, fixed
    assert (data_dir / "zlh.db").stat().st_mode & 0o777 == 0o600


def test_doctor_accepts_a_private_data_dir_with_a_group_traverse_grant(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o710)
    (data_dir / "zlh.db").write_text("x")
    (data_dir / "zlh.db").chmod(0o600)
    [check] = _data_dir_check(data_dir)
    assert check.outcome is Outcome.OK and "is 710" in check.detail
    [missing] = _data_dir_check(tmp_path / "absent")
    assert missing.outcome is Outcome.OK and "does not exist yet" in missing.detail


def _lxc_host(tmp_path: Path) -> Host:
    return Host(data_dir=tmp_path, store=tmp_path, listen="127.0.0.1:0", backend="lxc")


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_doctor_reports_unprivileged_mode_the_id_range_and_privileged_leftovers(
    tmp_path: Path,
) -> None:
    lxcpath = tmp_path / "lxc"
    template = lxcpath / "zlh-template-0123456789abcdef"
    template.mkdir(parents=True)
    (template / "config").write_text("lxc.uts.name = zlh-template\n")  # no lxc.idmap
    (lxcpath / "zlh-template.current").write_text("0123456789abcdef\n")
    (lxcpath / "zlh-101").mkdir()
    (lxcpath / "zlh-101" / "config").write_text("lxc.uts.name = zlh-101\n")
    (lxcpath / "zlh-102").mkdir()
    (lxcpath / "zlh-102" / "config").write_text(
        "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n"
    )
    checks = _by_name(run_checks(_lxc_host(tmp_path)))

    assert checks["unprivileged"].outcome is Outcome.OK  # this host has user namespaces
    assert "containers run unprivileged" in checks["unprivileged"].detail
    assert checks["template mode"].outcome is Outcome.FAIL
    assert f"zlh template build --data-dir {tmp_path}" in checks["template mode"].fix
    assert checks["privileged"].outcome is Outcome.WARN
    assert "zlh-101" in checks["privileged"].detail
    assert "zlh-102" not in checks["privileged"].detail

    (template / "config").write_text("lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n")
    (lxcpath / "zlh-101" / "config").unlink()
    checks = _by_name(run_checks(_lxc_host(tmp_path)))
    assert "template mode" not in checks and "privileged" not in checks


def test_doctor_names_the_lsm_and_a_missing_seccomp_profile(tmp_path: Path) -> None:
    security = tmp_path / "security"
    (security / "apparmor").mkdir(parents=True)
    host = replace(
        _lxc_host(tmp_path), security_root=security, seccomp_profile=tmp_path / "none.seccomp"
    )
    checks = _by_name(run_checks(host))
    assert "AppArmor: containers get LXC's generated profile" in checks["apparmor"].detail
    assert checks["seccomp"].outcome is Outcome.WARN
    assert "without a seccomp filter" in checks["seccomp"].detail


def test_doctor_reports_the_shared_layers_and_warns_of_one_changed_on_disk(tmp_path: Path) -> None:
    with artifact_server() as server:
        data = tarball(runtime_members())
        url = server.add("node.tar.gz", data)
        artifact = Artifact.model_validate(
            {
                "url": url,
                "sha256": sha256(data),
                "size": len(data),
                "format": "tar.gz",
                "stripComponents": 1,
                "bin": ["bin"],
            }
        )
        store = LayerStore(tmp_path / "layers")

        async def build() -> Path:
            try:
                return await store.ensure(ArtifactKind.RUNTIME, "node", "22", artifact)
            finally:
                await store.close()

        layer = asyncio.run(build())
    host = Host(
        data_dir=tmp_path, store=tmp_path / "artifacts", listen="127.0.0.1:0", backend="lxc"
    )
    (check,) = [c for c in run_checks(host) if c.name == "layers"]
    assert check.outcome is Outcome.OK and check.detail.startswith("1 shared layer(s)")
    (layer / "bin" / "hello").write_text("#!/bin/sh\necho changed\n")
    (check,) = [c for c in run_checks(host) if c.name == "layers"]
    assert check.outcome is Outcome.WARN
    assert f"{artifact.sha256[:12]} (runtime node 22) changed on disk (bin/hello" in check.detail
    assert check.fix == f"zlh layers verify --data-dir {tmp_path}"


def _database_with(data_dir: Path, owner: User, states: dict[int, str], **fields: Any) -> Database:
    """The data dir's SQLite database, migrated, with ``owner``'s node containers (vmid →
    state)."""
    from api_kit import PINS
    from zlh.api.db import Container, Database

    db = Database(f"sqlite:///{data_dir / 'zlh.db'}")
    db.migrate()
    with db.session() as session:
        session.add(owner)
        session.flush()
        for vmid, state in states.items():
            session.add(
                Container(
                    vmid=vmid,
                    owner_id=owner.id,
                    runtime="node",
                    version="22",
                    pins=PINS,
                    state=state,
                    agent_nonce="n",
                    **{"addons": [], **fields},
                )
            )
    return db


def _warm_pool_line(data_dir: Path, store: Path) -> str:
    host = Host(data_dir=data_dir, store=store, listen="127.0.0.1:0", backend="process")
    [check] = [c for c in run_checks(host) if c.name == "warm pool"]
    assert check.outcome is Outcome.OK, check
    return check.detail


def test_doctor_shows_the_warm_pool_ready_of_wanted_and_its_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api_kit import write_catalog
    from zlh.api.db import User
    from zlh.api.db.models import POOL_USER

    monkeypatch.delenv("ZLH_WARM_POOL")  # the default: one of node, the catalog's first choice
    store = tmp_path / "artifacts"
    write_catalog(store)
    assert _warm_pool_line(tmp_path, store) == "no database yet (zlh up makes it)"
    assert not (tmp_path / "zlh.db").exists()  # the check made none

    db = _database_with(
        tmp_path,
        User(username=POOL_USER, password_hash="!", disabled=True),
        {100: "ready", 101: "provisioning", 102: "failed"},
        addons=["code-server"],
        pool=True,
    )
    db.dispose()
    line = _warm_pool_line(tmp_path, store)
    assert line == "1 ready of 1 wanted, 1 being built, 4096 MB"  # the failed one is not counted
    monkeypatch.setenv("ZLH_WARM_POOL", '{"node": 3}')
    assert _warm_pool_line(tmp_path, store).startswith("1 ready of 3 wanted")


def _jobs_check(data_dir: Path) -> Check:
    host = Host(
        data_dir=data_dir, store=data_dir / "artifacts", listen="127.0.0.1:0", backend="process"
    )
    [check] = [c for c in run_checks(host) if c.name == "jobs"]
    return check


def test_doctor_counts_the_jobs_under_way_and_warns_of_those_no_replica_takes_over(
    tmp_path: Path,
) -> None:
    from datetime import timedelta

    from zlh.api.db import Job, User
    from zlh.api.db.models import utcnow

    check = _jobs_check(tmp_path)
    assert (check.outcome, check.detail) == (Outcome.OK, "no database yet (zlh up makes it)")
    assert not (tmp_path / "zlh.db").exists()  # the check made none

    db = _database_with(
        tmp_path,
        User(username="alice", password_hash="!"),
        {100: "creating", 101: "creating", 102: "stopping"},
    )
    now = utcnow()
    with db.session() as session:
        # Held now, and one whose lease ran out a moment ago (a replica is about to take it).
        for vmid, expires in (
            (100, now + timedelta(seconds=10)),
            (101, now - timedelta(seconds=2)),
        ):
            session.add(
                Job(
                    vmid=vmid,
                    kind="provision",
                    token="t",
                    lease_holder="a",
                    lease_expires_at=expires,
                )
            )
    check = _jobs_check(tmp_path)
    assert (check.outcome, check.detail) == (Outcome.OK, "2 under way (2 provision)")

    with db.session() as session:  # left by a replica that stopped ten minutes ago
        session.add(
            Job(
                vmid=102,
                kind="stop",
                token="t",
                lease_holder="b",
                lease_expires_at=now - timedelta(minutes=10),
            )
        )
    db.dispose()
    check = _jobs_check(tmp_path)
    assert check.outcome is Outcome.WARN
    assert check.detail == (
        "3 under way (2 provision, 1 stop); containers 102: their replica stopped over "
        "job_lease_s (15 s) ago and no replica took them over"
    )
    assert check.fix == "start zlh up on this database (a replica takes them at once)"
