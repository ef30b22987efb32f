"""The proxmox backend against an in-test Proxmox VE API server (real HTTPS on loopback)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from proxmox_server import (
    TEMPLATE,
    TOKEN,
    ProxmoxServer,
    backend_for,
    volume_of,
)
from zlh.backends import (
    BackendError,
    BackendUnavailable,
    ContainerExists,
    ContainerSpec,
    RunState,
    Usage,
)
from zlh.backends.proxmox import ProxmoxBackend, ProxmoxSettings


def test_create_waits_for_the_task_then_starts_reports_the_address_and_destroys(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    created = asyncio.run(backend.create(ContainerSpec(vmid=105, agent_secret="s3cret")))
    assert created.state is RunState.STOPPED
    assert created.node == "pve2"  # the least loaded online node
    config = server.state.cts[105]["config"]
    assert config["ostemplate"] == TEMPLATE
    assert config["ssh-public-keys"] == "# zlh-agent-token s3cret\n"
    assert config["rootfs"] == "local-lvm:vm-105-disk-0,size=8G" and config["memory"] == "2048"
    polls = [r for r in server.state.requests if "/tasks/" in r[1]]
    assert len(polls) >= 2  # it waited while the task said "running"

    info = asyncio.run(backend.start(105))
    assert info.state is RunState.RUNNING
    assert info.address == "192.0.2.105" and info.agent_url == "http://192.0.2.105:7100"
    assert [c.vmid for c in asyncio.run(backend.list())] == [105]

    asyncio.run(backend.destroy(105))
    assert 105 not in server.state.cts
    assert ("POST", "/nodes/pve2/lxc/105/status/shutdown") in [r[:2] for r in server.state.requests]
    assert asyncio.run(backend.status(105)).state is RunState.ABSENT
    asyncio.run(backend.destroy(105))  # idempotent


def _home(server: ProxmoxServer, vmid: int) -> dict[str, Any]:
    """The volume mounted at /home/dev in CT ``vmid``."""
    config = server.state.cts[vmid]["config"]
    assert config["mp0"].split(",")[1] == "mp=/home/dev", config["mp0"]
    volume: dict[str, Any] = server.state.volumes[volume_of(config["mp0"])]
    return volume


def _holders(server: ProxmoxServer) -> list[int]:
    return [v for v, ct in server.state.cts.items() if ct["name"].startswith("zlh-home-")]


def test_a_container_gets_its_home_on_a_volume_of_its_own(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert, home_gb=12)
    asyncio.run(backend.create(ContainerSpec(vmid=106, agent_secret="s")))
    config = server.state.cts[106]["config"]
    assert config["mp0"] == "local-lvm:vm-106-disk-1,mp=/home/dev,backup=1,size=12G"
    assert volume_of(config["rootfs"]) != volume_of(config["mp0"])
    asyncio.run(backend.destroy(106))
    assert server.state.volumes == {}  # the home goes with the container


def test_a_rebuild_makes_a_new_system_under_the_same_vmid_and_keeps_the_home_volume(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    asyncio.run(backend.create(ContainerSpec(vmid=107, agent_secret="old")))
    _home(server, 107)["files"]["workspace/notes.md"] = "kept"
    before = dict(server.state.cts[107]["config"])
    server.state.volumes[volume_of(before["rootfs"])]["files"]["etc/old-system"] = "old"
    before["net0"] += ",hwaddr=BC:24:11:AA:BB:CC"  # PVE records the MAC it generated
    server.state.cts[107]["config"]["net0"] = before["net0"]

    rebuilt = asyncio.run(backend.rebuild(ContainerSpec(vmid=107, agent_secret="new")))

    assert rebuilt.state is RunState.STOPPED and rebuilt.vmid == 107
    after = server.state.cts[107]["config"]
    assert server.state.volumes[volume_of(after["rootfs"])]["files"] == {}  # a fresh system
    assert _home(server, 107)["files"] == {"workspace/notes.md": "kept"}
    assert after["ssh-public-keys"] == "# zlh-agent-token new\n"
    assert after["net0"] == before["net0"]  # same MAC: the same DHCP lease
    assert after["unprivileged"] == "1" and after["tags"] == "zlh"
    assert _holders(server) == []
    assert [c.vmid for c in asyncio.run(backend.list())] == [107]
    assert len(server.state.volumes) == 2  # rootfs and home, nothing left behind


# The rebuild's tasks in order: create the holder, home out, destroy the old CT, create the
# new one, home back, destroy the holder.
REBUILD_TASKS = 6


@pytest.mark.parametrize("failing", range(REBUILD_TASKS))
def test_a_rebuild_cut_short_at_any_step_loses_nothing_and_finishes_when_asked_again(
    server: ProxmoxServer, cert: tuple[Path, Path], failing: int
) -> None:
    backend = backend_for(server, cert)
    asyncio.run(backend.create(ContainerSpec(vmid=108, agent_secret="old")))
    _home(server, 108)["files"]["workspace/notes.md"] = "kept"
    server.state.fail_next_task, server.state.tasks_before_failure = "ERROR: disk full", failing

    with pytest.raises(BackendError, match="disk full"):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=108, agent_secret="new")))
    homes = [v for v in server.state.volumes.values() if v["files"]]
    assert [h["files"] for h in homes] == [{"workspace/notes.md": "kept"}]  # still there, once

    asyncio.run(backend.rebuild(ContainerSpec(vmid=108, agent_secret="new")))
    assert _home(server, 108)["files"] == {"workspace/notes.md": "kept"}
    assert server.state.cts[108]["config"]["ssh-public-keys"] == "# zlh-agent-token new\n"
    assert sorted(server.state.cts) == [108]
    assert len(server.state.volumes) == 2


def test_deleting_a_container_whose_rebuild_was_cut_short_removes_its_holder_too(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    asyncio.run(backend.create(ContainerSpec(vmid=109, agent_secret="s")))
    server.state.fail_next_task, server.state.tasks_before_failure = "ERROR: node lost", 2
    with pytest.raises(BackendError):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=109, agent_secret="t")))
    assert _holders(server)
    assert asyncio.run(backend.list())[0].vmid == 109  # the holder is not a container

    asyncio.run(backend.destroy(109))
    assert server.state.cts == {} and server.state.volumes == {}


def test_a_rebuild_is_refused_for_a_running_ct_and_for_one_without_a_home_volume(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    asyncio.run(backend.create(ContainerSpec(vmid=110, agent_secret="s")))
    asyncio.run(backend.start(110))
    with pytest.raises(BackendError, match="container 110 is running: stop it"):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=110, agent_secret="t")))

    # A CT made before homes had their own volume: its home is on the rootfs.
    asyncio.run(backend.create(ContainerSpec(vmid=111, agent_secret="s")))
    server.state.cts[111]["config"].pop("mp0")
    config, asked = dict(server.state.cts[111]["config"]), len(server.state.requests)
    with pytest.raises(BackendError, match=r"keeps /home/dev on its rootfs .* unchanged"):
        asyncio.run(backend.rebuild(ContainerSpec(vmid=111, agent_secret="t")))
    assert server.state.cts[111]["config"] == config
    changes = [r for r in server.state.requests[asked:] if r[0] != "GET"]
    assert changes == []  # nothing was changed on the cluster
    assert _holders(server) == []


def test_the_stand_in_refuses_what_pve_refuses_when_moving_a_volume(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    for vmid in (112, 113):
        asyncio.run(backend.create(ContainerSpec(vmid=vmid, agent_secret="s")))

    def move(source: int, **params: object) -> None:
        backend._call("post", f"nodes/pve2/lxc/{source}/move_volume", "moving", **params)

    with pytest.raises(BackendError, match="Target volume key 'mp0' is already in use"):
        move(112, volume="mp0", **{"target-vmid": 113, "target-volume": "mp0"})
    with pytest.raises(BackendError, match="Cannot move to/from 'rootfs'"):
        move(112, volume="rootfs", **{"target-vmid": 113, "target-volume": "mp1"})
    with pytest.raises(BackendError, match="volume 'mp5' for container '112' does not exist"):
        move(112, volume="mp5", **{"target-vmid": 113})
    asyncio.run(backend.start(112))
    with pytest.raises(BackendError, match="source CT is running"):
        move(112, volume="mp0", **{"target-vmid": 113, "target-volume": "mp1"})
    server.state.privileges.discard("VM.Config.Disk")
    with pytest.raises(BackendError, match=r"HTTP 403.*VM\.Config\.Disk"):
        move(112, volume="mp0", **{"target-vmid": 113, "target-volume": "mp1"})
    assert "mp1" not in server.state.cts[113]["config"]


def test_a_failing_task_raises_with_its_exitstatus(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert, node="pve1")
    server.state.fail_next_task = "ERROR: storage 'local-lvm' does not exist"
    with pytest.raises(BackendError, match="storage 'local-lvm' does not exist"):
        asyncio.run(backend.create(ContainerSpec(vmid=110, agent_secret="s")))
    assert 110 not in server.state.cts


def test_an_existing_vmid_is_refused_and_left_alone(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    asyncio.run(backend.create(ContainerSpec(vmid=120, agent_secret="first")))
    before = dict(server.state.cts[120])
    with pytest.raises(ContainerExists, match="120 already exists"):
        asyncio.run(backend.create(ContainerSpec(vmid=120, agent_secret="second")))
    assert server.state.cts[120] == before


def test_nextid_collision_is_retried_with_the_next_free_id(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    server.state.steal_next_id = True  # someone takes 100 between nextid and our check
    vmid = backend.suggest_vmid()
    assert vmid == 101 and 100 in server.state.cts
    asyncio.run(backend.create(ContainerSpec(vmid=vmid, agent_secret="s")))
    assert server.state.cts[101]["name"] == "zlh-101"


def test_a_refused_token_says_so(server: ProxmoxServer, cert: tuple[Path, Path]) -> None:
    backend = backend_for(server, cert, token_value="wrong")
    with pytest.raises(BackendUnavailable, match="refused the API token"):
        asyncio.run(backend.create(ContainerSpec(vmid=130, agent_secret="s")))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"node": "pve3"}, r"node unreachable \(HTTP 595"),  # an offline node
        # an ostemplate missing in its storage fails the create task, as pve-container does
        ({"ostemplate": "local:vztmpl/gone.tar.zst"}, r"can't find file 'local:vztmpl/gone\.tar"),
    ],
)
def test_a_create_the_cluster_cannot_do_says_why_and_makes_nothing(
    server: ProxmoxServer, cert: tuple[Path, Path], overrides: dict[str, str], reason: str
) -> None:
    backend = backend_for(server, cert, **overrides)
    with pytest.raises(BackendError, match=reason):
        asyncio.run(backend.create(ContainerSpec(vmid=140, agent_secret="s")))
    assert server.state.cts == {} and server.state.volumes == {}


def test_tls_is_verified_by_default(server: ProxmoxServer, cert: tuple[Path, Path]) -> None:
    backend = backend_for(server, cert, verify_tls=True)  # the system CAs do not know it
    with pytest.raises(BackendError, match="SSL"):
        asyncio.run(backend.list())


def test_missing_settings_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "USER", "TOKEN_NAME", "TOKEN_VALUE"):
        monkeypatch.delenv(f"ZLH_PROXMOX_{name}", raising=False)
    with pytest.raises(BackendUnavailable, match="ZLH_PROXMOX_HOST, ZLH_PROXMOX_USER"):
        ProxmoxSettings.from_env()


def _create_request(server: ProxmoxServer) -> dict[str, str]:
    [params] = [
        p for m, path, p in server.state.requests if (m, path) == ("POST", "/nodes/pve2/lxc")
    ]
    return params


def test_created_cts_are_unprivileged_with_nesting_as_the_only_feature(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    backend = backend_for(server, cert)
    asyncio.run(backend.create(ContainerSpec(vmid=150, agent_secret="s")))
    params = _create_request(server)
    assert params["unprivileged"] == "1"
    assert params["features"] == "nesting=1"
    assert server.state.cts[150]["config"]["unprivileged"] == "1"


def test_the_stand_in_refuses_a_privileged_create_to_a_token_without_sys_modify(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    """What a regression that dropped unprivileged=1 would meet on a real cluster (PVE < 9)."""
    backend = backend_for(server, cert)
    with pytest.raises(BackendError, match=r"HTTP 403.*Sys\.Modify"):
        backend._call("post", "nodes/pve2/lxc", "creating", vmid=151, ostemplate=TEMPLATE)
    with pytest.raises(BackendError, match=r"except nesting\) is only allowed for root@pam"):
        backend._call(
            "post",
            "nodes/pve2/lxc",
            "creating",
            vmid=151,
            ostemplate=TEMPLATE,
            unprivileged=1,
            features="nesting=1,keyctl=1",
        )
    assert 151 not in server.state.cts


def _template_ct(server: ProxmoxServer, vmid: int, *, unprivileged: bool) -> None:
    config = {"hostname": "zlh-template", "template": "1", "memory": "512"}
    if unprivileged:
        config["unprivileged"] = "1"
    server.state.cts[vmid] = {"node": "pve2", "status": "stopped", "name": "tpl", "config": config}


def _cloner(server: ProxmoxServer, cert: tuple[Path, Path], **overrides: object) -> ProxmoxBackend:
    return backend_for(
        server,
        cert,
        ostemplate=None,
        clone_from=9000,
        allow_clone_without_secret=True,
        **overrides,
    )


def test_a_clone_of_an_unprivileged_template_is_unprivileged_and_sized(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    _template_ct(server, 9000, unprivileged=True)
    asyncio.run(_cloner(server, cert).create(ContainerSpec(vmid=160, agent_secret="s")))
    config = server.state.cts[160]["config"]
    assert config["unprivileged"] == "1"
    assert config["memory"] == "2048" and config["tags"] == "zlh"
    assert server.state.cts[160]["name"] == "zlh-160"


def test_a_privileged_clone_template_is_refused_before_anything_is_cloned(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    _template_ct(server, 9000, unprivileged=False)
    with pytest.raises(BackendError, match="template CT 9000 is privileged"):
        asyncio.run(_cloner(server, cert).create(ContainerSpec(vmid=161, agent_secret="s")))
    assert 161 not in server.state.cts
    assert not [r for r in server.state.requests if r[1].endswith("/clone")]


def test_allow_privileged_accepts_a_privileged_template_with_a_warning(
    server: ProxmoxServer, cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _template_ct(server, 9000, unprivileged=False)
    backend = _cloner(server, cert, allow_privileged=True)
    with caplog.at_level(logging.WARNING, logger="zlh.backends.proxmox"):
        asyncio.run(backend.create(ContainerSpec(vmid=162, agent_secret="s")))
    assert 162 in server.state.cts
    assert "template CT 9000 is privileged" in caplog.text
    assert "allow_privileged" in caplog.text


def test_the_allow_privileged_setting_reaches_the_proxmox_backend(
    server: ProxmoxServer, cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from zlh.api.commands import _backend
    from zlh.api.settings import load_settings

    user, _, rest = TOKEN.partition("!")
    token_name, _, token_value = rest.partition("=")
    for name, value in {
        "HOST": server.host,
        "USER": user,
        "TOKEN_NAME": token_name,
        "TOKEN_VALUE": token_value,
        "OSTEMPLATE": TEMPLATE,
        "VERIFY_TLS": str(cert[0]),
    }.items():
        monkeypatch.setenv(f"ZLH_PROXMOX_{name}", value)
    data_dir = Path("/nonexistent")
    artifacts = "http://127.0.0.1:9/artifacts"
    default = _backend(load_settings(None, data_dir=data_dir, backend="proxmox"), artifacts)
    assert default.settings.allow_privileged is False
    monkeypatch.setenv("ZLH_ALLOW_PRIVILEGED", "true")
    allowed = _backend(load_settings(None, data_dir=data_dir, backend="proxmox"), artifacts)
    assert allowed.settings.allow_privileged is True


# -- usage: the per-container figures of the metrics ------------------------------------

MIB = 1024 * 1024


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
