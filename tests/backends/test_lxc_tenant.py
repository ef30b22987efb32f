"""A root-curious tenant inside a real container cannot make the agent work for it.

As ``dev`` in a provisioned LXC container (real node and code-server artifacts, served on the
bridge address), plant symlinks at the paths the agent touches in the dev home, pointing at
``/etc``, ``/root`` and ``/etc/ld.so.preload``; then restart the agent (restart recovery
re-runs the last payload) and provision again. Nothing outside ``/home/dev`` changes owner,
mode or content, ``/status`` names the refused path, and a clean container still provisions.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxc_kit import Agent, attach, host_services, lxc_backend, settled, up

from support import serve_store
from zlh.artifacts.store import ArtifactStore
from zlh.backends.lxc import LxcBackend
from zlh.schemas import ArtifactKind

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.e2e]

ATTACKED = 9121
CLEAN = 9122
HOME = "/home/dev"
# Where dev plants what, and the root-owned place each link points at.
PLANTS = {
    ".config/code-server": "/etc",
    ".local/share/code-server/User/settings.json": "/root/secret.json",
    ".cache": "/root",
    ".local/state": "/etc/ld.so.preload",
}
WATCHED = ("/etc", "/etc/passwd", "/etc/shadow", "/etc/ld.so.preload", "/root", "/root/secret.json")
# stat + sha256 of each watched path, from inside the container (as root).
FINGERPRINT = r"""
import hashlib, json, os, sys
out = {}
for path in sys.argv[1:]:
    info = os.lstat(path)
    digest = ""
    if os.path.isfile(path):
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    elif os.path.isdir(path):
        digest = hashlib.sha256("\0".join(sorted(os.listdir(path))).encode()).hexdigest()
    out[path] = [info.st_uid, info.st_gid, info.st_mode, digest]
print(json.dumps(out))
"""


serve = contextlib.contextmanager(serve_store)


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(ATTACKED, CLEAN)


@pytest.fixture(scope="module")
def body(backend: LxcBackend, node_store: Path, code_server_store: Path) -> Iterator[Any]:
    """A provisioning payload (node + code-server) whose artifacts the containers can fetch."""
    bridge = backend._network().address
    with (
        serve(node_store, bridge) as node_url,
        serve(code_server_store, bridge) as cs_url,
        host_services(backend, node_url, cs_url),
    ):
        yield payload(node_store, node_url, code_server_store, cs_url)


def payload(node_store: Path, node_url: str, cs_store: Path, cs_url: str) -> dict[str, Any]:
    version, node = ArtifactStore(node_store).catalog().resolve(ArtifactKind.RUNTIME, "node")
    cs_version, cs = ArtifactStore(cs_store).catalog().resolve(ArtifactKind.ADDON, "code-server")
    return {
        "vmid": ATTACKED,
        "runtime": {
            "name": "node",
            "version": version,
            "artifact": node.model_dump(mode="json") | {"url": node.resolved_url(node_url)},
        },
        "addons": [
            {
                "name": "code-server",
                "version": cs_version,
                "artifact": cs.model_dump(mode="json") | {"url": cs.resolved_url(cs_url)},
                "options": {"basePath": f"/dev/{ATTACKED}/ide", "port": 6000},
            }
        ],
        "devUser": {"name": "dev", "home": HOME, "workspace": f"{HOME}/workspace"},
    }


def as_dev(backend: LxcBackend, vmid: int, script: str) -> str:
    return attach(backend, vmid, "su", "-s", "/bin/sh", "dev", "-c", script)


def fingerprint(backend: LxcBackend, vmid: int) -> dict[str, Any]:
    return dict(json.loads(attach(backend, vmid, "python3", "-c", FINGERPRINT, *WATCHED)))


def test_planted_links_in_the_dev_home_never_reach_outside_it_through_the_agent(
    backend: LxcBackend, body: dict[str, Any]
) -> None:
    with Agent(up(backend, ATTACKED), f"secret-{ATTACKED}") as agent:
        attack(backend, agent, body)


def attack(backend: LxcBackend, agent: Agent, body: dict[str, Any]) -> None:
    agent.provision(body)
    ready = agent.wait_for(settled, timeout_s=900)
    assert ready["state"] == "ready" and ready["codeServerRunning"], ready

    secret = 'umask 077; echo \'{"leak": "root only"}\' > /root/secret.json'
    attach(backend, ATTACKED, "sh", "-c", f"{secret}; : > /etc/ld.so.preload")
    before = fingerprint(backend, ATTACKED)
    plant = " && ".join(
        f"rm -rf {HOME}/{rel} && mkdir -p $(dirname {HOME}/{rel}) && ln -s {target} {HOME}/{rel}"
        for rel, target in PLANTS.items()
    )
    as_dev(backend, ATTACKED, plant)
    assert as_dev(backend, ATTACKED, f"readlink {HOME}/.config/code-server").strip() == "/etc"

    # Restart recovery: the agent re-runs the last payload when it starts.
    attach(backend, ATTACKED, "systemctl", "restart", "zlh-agent")
    restored = agent.wait_for(settled, timeout_s=300)
    assert restored["state"] == "failed", restored
    assert restored["error"]["code"] == "unsafe-dev-home"
    named = [
        rel for rel in PLANTS if f"{HOME}/{rel} is a symbolic link" in restored["error"]["message"]
    ]
    assert named, restored["error"]
    assert fingerprint(backend, ATTACKED) == before

    # Provisioning again (the API's path for an idle agent) is refused the same way.
    agent.provision(body)
    again = agent.wait_for(lambda s: settled(s) and s["state"] == "failed", timeout_s=300)
    assert again["error"]["code"] == "unsafe-dev-home"
    assert fingerprint(backend, ATTACKED) == before
    leaked = as_dev(backend, ATTACKED, f"cat {HOME}/.local/share/code-server/User/* 2>&1 || :")
    assert "root only" not in leaked

    # dev removes its links: the next provision succeeds, in the same container.
    as_dev(backend, ATTACKED, " && ".join(f"rm {HOME}/{rel}" for rel in PLANTS))
    agent.provision(body)
    healed = agent.wait_for(lambda s: s["state"] == "ready", timeout_s=300)
    assert healed["codeServerRunning"], healed
    owner = attach(backend, ATTACKED, "stat", "-c", "%U", f"{HOME}/.config/code-server")
    assert owner.strip() == "dev"


def test_a_clean_container_provisions_beside_an_attacked_one(
    backend: LxcBackend, body: dict[str, Any]
) -> None:
    with Agent(up(backend, CLEAN), f"secret-{CLEAN}") as agent:
        agent.provision(body | {"vmid": CLEAN})
        status = agent.wait_for(settled, timeout_s=900)
    assert status["state"] == "ready" and status["codeServerRunning"], status
    owner = attach(backend, CLEAN, "stat", "-c", "%U %a", f"{HOME}/workspace")
    assert owner.split()[0] == "dev"
