"""Shared layers on real LXC containers: the runtime the agent finds already installed is the
host's read-only layer, byte for byte what the agent installs itself, and container root cannot
change it, not even after remounting it read-write.

Needs root and the lxc backend's packages, like the other LXC tests (tests/backends/test_lxc.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxc_api_kit import LxcApi, lxc_api
from lxc_kit import attach, lxc_backend

from agent_helpers import HELLO
from support import zlh
from zlh.artifacts.store import CATALOG_FILE, ArtifactStore
from zlh.backends.lxc import LxcBackend
from zlh.install.installed import MARKER_NAME
from zlh.layers import LayerStore
from zlh.schemas import ArtifactKind, Catalog
from zlh.schemas.payload import MIN_VMID

pytestmark = [pytest.mark.root, pytest.mark.slow]

VMID = MIN_VMID  # the first vmid a fresh API hands out
RUNTIME = "/opt/zlh/runtimes/node/22"
NOBODY = "65534:65534"  # host root's files, as a container that does not map host root sees them

# Every entry of a tree, without following links: path -> kind, mode, sha256 or link target.
TREE = """
import hashlib, json, os, stat, sys
top = sys.argv[1]
out = {}
for here, dirs, files in os.walk(top):
    for name in dirs + files:
        path = os.path.join(here, name)
        info = os.lstat(path)
        rel = os.path.relpath(path, top)
        if stat.S_ISLNK(info.st_mode):
            out[rel] = "l " + os.readlink(path)
        elif stat.S_ISDIR(info.st_mode):
            out[rel] = "d %o" % stat.S_IMODE(info.st_mode)
        else:
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            out[rel] = "f %o %s" % (stat.S_IMODE(info.st_mode), digest)
print(json.dumps(out))
"""


def _runtime_store(store: Path) -> Path:
    """A store whose node 22 has a tree with the usual shapes: nested dirs (one only implied by
    its files), executables, a relative link, a hard link."""
    data = io.BytesIO()
    node = b"#!/bin/sh\necho v22.0.0\n"
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, body, mode, kind, link in (
            ("node-v22", b"", 0o755, tarfile.DIRTYPE, ""),
            ("node-v22/bin", b"", 0o755, tarfile.DIRTYPE, ""),
            ("node-v22/bin/node", node, 0o755, tarfile.REGTYPE, ""),
            ("node-v22/bin/hello", HELLO, 0o755, tarfile.REGTYPE, ""),
            ("node-v22/bin/npm", b"", 0o777, tarfile.SYMTYPE, "../lib/npm/cli.js"),
            ("node-v22/lib/npm/cli.js", b"console.log(1)\n" * 50, 0o644, tarfile.REGTYPE, ""),
            ("node-v22/lib/npm/again.js", b"", 0o644, tarfile.LNKTYPE, "node-v22/lib/npm/cli.js"),
            ("node-v22/share/doc/README", b"docs\n", 0o644, tarfile.REGTYPE, ""),
        ):
            member = tarfile.TarInfo(name)
            member.type, member.mode, member.size, member.linkname = kind, mode, len(body), link
            member.uid = member.gid = 1000
            tar.addfile(member, io.BytesIO(body) if kind == tarfile.REGTYPE else None)
    tarball = store.parent / "node-v22.tar.gz"
    store.mkdir(parents=True, exist_ok=True)
    tarball.write_bytes(data.getvalue())
    ArtifactStore(store).add_file(ArtifactKind.RUNTIME, "node", "22", tarball)
    return store


def _ready(api: LxcApi) -> int:
    answer = api.client.post("/api/dev", json={"runtime": "node"}, headers=api.headers)
    assert answer.status_code == 202, answer.text
    vmid = int(answer.json()["vmid"])
    assert api.follow(vmid, deadline_s=180)[-1].state == "ready"
    return vmid


def _tree(backend: LxcBackend, vmid: int) -> dict[str, str]:
    found: dict[str, str] = json.loads(attach(backend, vmid, "python3", "-c", TREE, RUNTIME))
    return found


def _root_tries(backend: LxcBackend, vmid: int, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["lxc-attach", "-P", str(backend.lxcpath), "-n", f"zlh-{vmid}", "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Layered:
    api: LxcApi
    vmid: int
    store: Path
    without_layers: dict[str, str]  # the runtime tree of a container made without layers


@pytest.fixture(scope="module")
def backend() -> Iterator[LxcBackend]:
    yield from lxc_backend(VMID)


@pytest.fixture(scope="module")
def layered(backend: LxcBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layered]:
    """First a container the agent installs into itself (layers off), its tree kept, then
    deleted; then a layered one, kept for the tests."""
    tmp = tmp_path_factory.mktemp("layers")
    store = _runtime_store(tmp / "store")
    with lxc_api(backend, tmp / "plain", store, layers=False) as plain:
        vmid = _ready(plain)
        assert not backend.mounted_layers()
        tree = _tree(backend, vmid)
        assert plain.client.delete(f"/api/dev/{vmid}", headers=plain.headers).status_code == 204
    with lxc_api(backend, tmp / "api", store) as api:
        yield Layered(api, _ready(api), store, tree)


def test_a_layered_container_has_the_runtime_tree_the_agent_installs(
    backend: LxcBackend, layered: Layered
) -> None:
    (source,) = backend.mounted_layers()[layered.vmid]
    assert source.parent == backend.layers_dir()
    layered_tree = _tree(backend, layered.vmid)
    marker = layered.without_layers.pop(MARKER_NAME)
    assert layered_tree.pop(MARKER_NAME).split()[:2] == marker.split()[:2]
    assert layered_tree == layered.without_layers
    assert {"bin/node", "bin/npm", "lib/npm/again.js", "share/doc"} <= set(layered_tree)
    # The agent's guard read the host's marker through the mount: it installed nothing.
    inside = attach(backend, layered.vmid, "cat", f"{RUNTIME}/{MARKER_NAME}")
    assert inside == (source / MARKER_NAME).read_text()
    assert attach(backend, layered.vmid, "ls", "-A", "/opt/zlh/runtimes/node").split() == [
        "22",
        "current",
    ]
    shell = attach(backend, layered.vmid, "su", "-l", "dev", "-c", "node; hello")
    assert shell == "v22.0.0\nhello from the runtime\n"


def test_container_root_cannot_change_a_byte_of_a_mounted_layer(
    backend: LxcBackend, layered: Layered
) -> None:
    (source,) = backend.mounted_layers()[layered.vmid]
    vmid = layered.vmid
    assert attach(backend, vmid, "stat", "-c", "%u:%g", f"{RUNTIME}/bin/node").strip() == NOBODY
    mounts = attach(backend, vmid, "cat", "/proc/self/mountinfo")
    (line,) = [m for m in mounts.splitlines() if m.split()[4] == RUNTIME]
    assert {"ro", "nosuid", "nodev"} <= set(line.split()[5].split(","))
    attacks = (
        f"echo pwned >> {RUNTIME}/bin/node",
        f"touch {RUNTIME}/planted",
        f"chmod 4755 {RUNTIME}/bin/hello",
        f"chown root {RUNTIME}/bin/hello",
        f"rm -f {RUNTIME}/bin/hello",
        f"mv {RUNTIME}/bin {RUNTIME}/gone",
        f"ln -sf /bin/sh {RUNTIME}/bin/npm",
    )
    for attack in attacks:
        assert _root_tries(backend, vmid, attack).returncode != 0, attack
    # Remounting read-write may be allowed; the files still belong to no uid the container maps.
    _root_tries(backend, vmid, f"mount -o remount,rw,bind {RUNTIME}")
    for attack in attacks:
        assert _root_tries(backend, vmid, attack).returncode != 0, f"after remount: {attack}"
    assert LayerStore(backend.layers_dir()).check(source.name, full=True) is None
    assert attach(backend, vmid, "cat", f"{RUNTIME}/bin/node") == "#!/bin/sh\necho v22.0.0\n"


def test_deleting_the_last_container_of_a_layer_keeps_it_while_the_catalog_pins_it(
    backend: LxcBackend, layered: Layered
) -> None:
    (source,) = backend.mounted_layers()[layered.vmid]
    api = layered.api
    assert api.client.delete(f"/api/dev/{layered.vmid}", headers=api.headers).status_code == 204
    assert layered.vmid not in backend.mounted_layers()
    assert LayerStore(backend.layers_dir()).check(source.name) is None


def test_zlh_layers_lists_verifies_and_collects_them(
    backend: LxcBackend, layered: Layered, tmp_path: Path
) -> None:
    (sha,) = [v.artifact.sha256 for v in _catalog(layered.store).runtimes["node"].versions]  # type: ignore[index]
    where = ["--data-dir", str(backend.data_dir), "--backend", "lxc", "--store"]
    listed = zlh("layers", "list", *where, str(layered.store)).stdout
    (row,) = [line for line in listed.splitlines() if line.startswith(sha[:12])]
    assert "runtime node 22" in row and " ok " in row and "catalog node 22" in row
    assert zlh("layers", "verify", *where, str(layered.store)).returncode == 0
    # Changed on the host: verify finds it, sets it aside, and gc removes it once nothing uses it.
    layer = LayerStore(backend.layers_dir()).path(sha)
    with (layer / "share" / "doc" / "README").open("ab") as handle:
        handle.write(b"changed\n")
    verified = zlh("layers", "verify", *where, str(layered.store), check=False)
    assert verified.returncode == 1
    assert (
        f"{sha[:12]}  changed on disk (share/doc/README was changed): set aside" in verified.stdout
    )
    assert not layer.exists()
    nothing_pinned = tmp_path / "empty-store"
    collected = zlh("layers", "gc", *where, str(nothing_pinned)).stdout
    assert f"removed .bad~{sha}~" in collected
    assert not any(p.name.startswith(f".bad~{sha}") for p in backend.layers_dir().iterdir())


def _catalog(store: Path) -> Catalog:
    return Catalog.model_validate_json((store / CATALOG_FILE).read_bytes())
