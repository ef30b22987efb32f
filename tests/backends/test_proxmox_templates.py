"""Baked CT templates: the proxmox backend's form of the shared layers, against the in-test PVE
API server (real HTTPS, real multipart uploads), with layers built by the real LayerStore from
a real ``zlh artifacts serve``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import logging
import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from proxmox_server import TEMPLATE, ProxmoxServer, backend_for, connection
from support import serve_store, zlh
from zlh.artifacts.store import ArtifactStore
from zlh.backends import BackendError, ContainerSpec, LayerMount
from zlh.backends.proxmox import ProxmoxBackend
from zlh.install.installed import MARKER_NAME
from zlh.layers import LayerStore
from zlh.schemas import ArtifactKind

RUNTIME = "/opt/zlh/runtimes/node/22"
CODE_SERVER = "/opt/zlh/services/code-server"
BASE_NAME = "debian-12-zlh_v1_amd64.tar.zst"


def _artifact(path: Path, top: str, files: dict[str, bytes]) -> Path:
    """A tar.gz with a directory tree, an executable, a relative link and a hard link."""
    with tarfile.open(path, "w:gz") as tar:
        for name, kind, body, mode, link in (
            (top, tarfile.DIRTYPE, b"", 0o755, ""),
            (f"{top}/bin", tarfile.DIRTYPE, b"", 0o755, ""),
            *((f"{top}/{n}", tarfile.REGTYPE, b, 0o755, "") for n, b in files.items()),
            (f"{top}/bin/link", tarfile.SYMTYPE, b"", 0o777, "../lib/x.js"),
            (f"{top}/lib/x.js", tarfile.REGTYPE, b"console.log(1)\n" * 40, 0o640, ""),
            (f"{top}/lib/again.js", tarfile.LNKTYPE, b"", 0o640, f"{top}/lib/x.js"),
        ):
            member = tarfile.TarInfo(name)
            member.type, member.mode, member.size, member.linkname = kind, mode, len(body), link
            member.uid = member.gid = 1000
            tar.addfile(member, io.BytesIO(body) if kind == tarfile.REGTYPE else None)
    return path


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LayerMount]:
    """node 22, node 24 and code-server, each a layer built by the LayerStore."""
    tmp = tmp_path_factory.mktemp("pve-layers")
    store = ArtifactStore(tmp / "store")
    for version in ("22", "24"):
        tarball = _artifact(tmp / f"node-{version}.tar.gz", "node", {"bin/node": version.encode()})
        store.add_file(ArtifactKind.RUNTIME, "node", version, tarball)
    tarball = _artifact(tmp / "cs.tar.gz", "cs", {"bin/code-server": b"#!/bin/sh\n"})
    store.add_file(ArtifactKind.ADDON, "code-server", "4.0.0", tarball)
    catalog = store.catalog()
    (tmp / "data").mkdir()
    layer_store = LayerStore(tmp / "data" / "layers")

    async def build() -> dict[str, LayerMount]:
        found = {}
        for (kind, name, version), target in {
            (ArtifactKind.RUNTIME, "node", "22"): RUNTIME,
            (ArtifactKind.RUNTIME, "node", "24"): "/opt/zlh/runtimes/node/24",
            (ArtifactKind.ADDON, "code-server", "4.0.0"): CODE_SERVER,
        }.items():
            entry = catalog.section(kind)[name]
            artifact = next(v.artifact for v in entry.versions if v.version == version)
            artifact = artifact.model_copy(update={"url": artifact.resolved_url(base)})
            path = await layer_store.ensure(kind, name, version, artifact)
            found[f"{name}{version}"] = LayerMount(source=path, target=target)
        await layer_store.close()
        return found

    with contextlib.contextmanager(serve_store)(store.root) as base:
        return asyncio.run(build())


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A base CT template as ``zlh template export`` writes it (``./`` names, zstd)."""
    tree = tmp_path / "rootfs"
    (tree / "etc").mkdir(parents=True)
    (tree / "opt").mkdir()
    (tree / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    out = tmp_path / BASE_NAME
    subprocess.run(
        ["tar", "--numeric-owner", "--owner=0", "--group=0", "-I", "zstd", "-C", str(tree),
         "-cf", str(out), "."],
        check=True,
    )  # fmt: skip
    return out


def _backend(server: ProxmoxServer, cert: tuple[Path, Path], base: Path) -> ProxmoxBackend:
    return backend_for(
        server, cert, data_dir=base.parent / "data", template_file=base, ostemplate=None
    )


def _members(path: Path) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    """Every member of a .tar.zst by name without ``./``, with the bytes of files."""
    found: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    with zstandard.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isreg() else None
            found[member.name.removeprefix("./")] = (member, data.read() if data else None)
    return found


def _uploaded(server: ProxmoxServer, volid: str) -> Path:
    (info,) = [i for (_, v), i in server.state.templates.items() if v == volid]
    path: Path = info["path"]
    return path


def _uploads(server: ProxmoxServer) -> list[str]:
    return [r[1] for r in server.state.requests if r[:1] == ("POST",) and "/upload" in r[1]]


def test_a_baked_template_holds_each_layer_tree_and_marker_at_its_target(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, layers: dict[str, LayerMount]
) -> None:
    backend = _backend(server, cert, base)
    assert backend.layers_dir() == base.parent / "data" / "layers"
    chosen = (layers["node22"], layers["code-server4.0.0"])
    asyncio.run(backend.create(ContainerSpec(vmid=120, agent_secret="s", layers=chosen)))

    config = server.state.cts[120]["config"]
    volid = config["ostemplate"]
    assert volid.startswith("local:vztmpl/debian-12-zlh_v1-") and volid.endswith("_amd64.tar.zst")
    digest = volid.removeprefix("local:vztmpl/debian-12-zlh_v1-").removesuffix("_amd64.tar.zst")
    assert len(digest) == 12 and config["tags"] == f"zlh;zlh-layers-{digest}"
    members = _members(_uploaded(server, volid))
    assert members["etc/os-release"][1] == b'ID=debian\nVERSION_ID="12"\n'  # the base is kept
    for layer in chosen:
        top = layer.target.lstrip("/")
        for directory, dirs, files in os.walk(layer.source):
            for name in ["", *dirs, *files]:
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, layer.source)
                member, data = members[top if rel == "." else f"{top}/{rel}"]
                info = os.lstat(path)
                assert (member.uid, member.gid) == (0, 0), member.name
                assert member.mode == stat.S_IMODE(info.st_mode), member.name
                if member.issym():
                    assert member.linkname == os.readlink(path)
                elif member.isreg():
                    assert data == Path(path).read_bytes()
                elif not member.islnk():  # a hard link names the file it shares
                    assert member.isdir() and stat.S_ISDIR(info.st_mode), member.name
        marker = members[f"{top}/{MARKER_NAME}"][1]
        assert marker is not None and layer.source.name in marker.decode()
    for parent in ("opt/zlh", "opt/zlh/runtimes", "opt/zlh/runtimes/node", "opt/zlh/services"):
        assert members[parent][0].isdir() and members[parent][0].mode == 0o755
    root = base.parent / "data" / "layers"  # the API host's layers, whose sets gc keeps
    assert {k: sorted(v) for k, v in backend.mounted_layers().items()} == {
        120: sorted(root / m.source.name for m in chosen)
    }


def test_two_creates_with_one_layer_set_bake_and_upload_once_a_new_set_makes_a_second(
    server: ProxmoxServer,
    cert: tuple[Path, Path],
    base: Path,
    layers: dict[str, LayerMount],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = _backend(server, cert, base)
    same = (layers["node22"], layers["code-server4.0.0"])

    async def two() -> None:
        await asyncio.gather(
            backend.create(ContainerSpec(vmid=121, agent_secret="a", layers=same)),
            backend.create(ContainerSpec(vmid=122, agent_secret="b", layers=same[::-1])),
        )

    with caplog.at_level(logging.INFO, logger="zlh.backends.proxmox_templates"):
        asyncio.run(two())
    assert len(_uploads(server)) == 1
    assert len([r for r in caplog.records if "baked CT template" in r.message]) == 1
    first = server.state.cts[121]["config"]["ostemplate"]
    assert server.state.cts[122]["config"]["ostemplate"] == first

    newer = (layers["node24"], layers["code-server4.0.0"])
    asyncio.run(backend.create(ContainerSpec(vmid=123, agent_secret="c", layers=newer)))
    second = server.state.cts[123]["config"]["ostemplate"]
    assert second != first and len(_uploads(server)) == 2
    assert "node/24" in str(_members(_uploaded(server, second)).keys())
    # Another node has its own `local` storage: the template is uploaded there too, once.
    server.state.nodes["pve1"]["cpu"] = 0.0
    server.state.nodes["pve2"]["cpu"] = 0.9
    asyncio.run(backend.create(ContainerSpec(vmid=124, agent_secret="d", layers=same)))
    assert server.state.cts[124]["node"] == "pve1" and len(_uploads(server)) == 3


def test_without_template_file_nothing_is_baked_nor_uploaded(
    server: ProxmoxServer, cert: tuple[Path, Path], tmp_path: Path, layers: dict[str, LayerMount]
) -> None:
    backend = backend_for(server, cert, data_dir=tmp_path)
    assert backend.layers_dir() is None and backend.mounted_layers() == {}
    asyncio.run(backend.create(ContainerSpec(vmid=125, agent_secret="s")))
    assert server.state.cts[125]["config"]["ostemplate"] == TEMPLATE
    assert not [r for r in server.state.requests if "/storage/" in r[1]]
    assert backend.collect_baked_templates(set()) == []
    with pytest.raises(BackendError, match="template_file"):
        spec = ContainerSpec(vmid=126, agent_secret="s", layers=(layers["node22"],))
        asyncio.run(backend.create(spec))
    assert 126 not in server.state.cts


def test_an_upload_refused_without_allocate_template_names_it_and_leaves_nothing(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, layers: dict[str, LayerMount]
) -> None:
    backend = _backend(server, cert, base)
    server.state.privileges.discard("Datastore.AllocateTemplate")
    spec = ContainerSpec(vmid=127, agent_secret="s", layers=(layers["node22"],))
    with pytest.raises(BackendError, match=r"/storage/local, Datastore.AllocateTemplate"):
        asyncio.run(backend.create(spec))
    assert server.state.cts == {} and server.state.volumes == {}
    assert list(server.state.templates) == [(None, TEMPLATE)]  # no partial template
    assert [p.name for p in server.state.upload_dir.rglob("*") if p.is_file()] == []


def test_a_template_storage_without_vztmpl_content_is_refused_as_pve_does(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, layers: dict[str, LayerMount]
) -> None:
    backend = _backend(server, cert, base)
    server.state.storages["local"]["content"] = {"iso", "backup"}
    spec = ContainerSpec(vmid=128, agent_secret="s", layers=(layers["node22"],))
    with pytest.raises(BackendError, match="storage 'local' does not support 'vztmpl' content"):
        asyncio.run(backend.create(spec))
    assert server.state.cts == {}


def test_a_symlink_in_a_layer_that_points_outside_is_baked_as_the_link_never_followed(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, tmp_path: Path
) -> None:
    """A layer tree (changed on disk after its check) with links out of it: to a host file,
    to a host directory, and up past its top. Each is stored as a link; nothing of the host
    is read into the template."""
    secret = tmp_path / "host-secret"
    secret.write_text("host only\n")
    (tmp_path / "host-dir").mkdir()
    (tmp_path / "host-dir" / "inner").write_text("host dir file\n")
    layer = tmp_path / "data" / "layers" / ("ab" * 32)
    layer.mkdir(parents=True)
    (layer / "bin").mkdir()
    (layer / "bin" / "secret").symlink_to(secret)
    (layer / "dir").symlink_to(tmp_path / "host-dir")
    (layer / "up").symlink_to("../../../../../../etc/shadow")
    backend = _backend(server, cert, base)
    spec = ContainerSpec(vmid=130, agent_secret="s", layers=(LayerMount(layer, RUNTIME),))
    asyncio.run(backend.create(spec))

    members = _members(_uploaded(server, server.state.cts[130]["config"]["ostemplate"]))
    top = RUNTIME.lstrip("/")
    ours = {name: m for name, (m, _) in members.items() if name.startswith(top + "/")}
    assert sorted(ours) == [f"{top}/bin", f"{top}/bin/secret", f"{top}/dir", f"{top}/up"]
    assert ours[f"{top}/bin/secret"].issym() and ours[f"{top}/bin/secret"].linkname == str(secret)
    assert ours[f"{top}/dir"].issym() and ours[f"{top}/up"].issym()
    contents = b"".join(data or b"" for _, data in members.values())
    assert b"host only" not in contents and b"host dir file" not in contents


def _two_sets(
    server: ProxmoxServer, backend: ProxmoxBackend, layers: dict[str, LayerMount], vmid: int
) -> tuple[tuple[LayerMount, ...], str, str]:
    """CTs ``vmid`` (node 22 + code-server) and ``vmid + 1`` (node 24 + code-server): the
    first set, and both templates' volids."""
    first = (layers["node22"], layers["code-server4.0.0"])
    second = (layers["node24"], layers["code-server4.0.0"])
    for one, chosen in ((vmid, first), (vmid + 1, second)):
        asyncio.run(backend.create(ContainerSpec(vmid=one, agent_secret="s", layers=chosen)))
    cts = server.state.cts
    return first, cts[vmid]["config"]["ostemplate"], cts[vmid + 1]["config"]["ostemplate"]


def test_gc_removes_the_templates_of_unused_layer_sets_and_keeps_the_used_ones(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, layers: dict[str, LayerMount]
) -> None:
    backend = _backend(server, cert, base)
    kept, keep_volid, drop_volid = _two_sets(server, backend, layers, 131)
    used = {m.source.name for m in kept}
    local = base.parent / "data" / "proxmox-templates"

    assert backend.collect_baked_templates(used, dry_run=True) == [drop_volid.split("/")[1]]
    assert server.state.template("pve2", drop_volid) is not None  # a dry run removes nothing

    server.state.privileges.discard("Datastore.Allocate")
    with pytest.raises(BackendError, match=r"/storage/local, Datastore.Allocate"):
        backend.collect_baked_templates(used)
    server.state.privileges.add("Datastore.Allocate")
    assert backend.collect_baked_templates(used) == [drop_volid.split("/")[1]]
    assert server.state.template("pve2", drop_volid) is None
    assert server.state.template("pve2", keep_volid) is not None
    assert sorted(p.name for p in local.glob("*.tar.zst")) == [keep_volid.split("/")[1]]

    # A set whose template a create is using right now stays, whatever gc is told.
    baker = backend.baker
    assert baker is not None
    with baker.using(baker.read(baker.digest(kept))):  # type: ignore[arg-type]
        assert backend.collect_baked_templates(set()) == []
    assert server.state.template("pve2", keep_volid) is not None


def test_a_rebuild_takes_the_baked_template_and_parks_the_home_on_a_ct_from_the_base(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, layers: dict[str, LayerMount]
) -> None:
    backend = _backend(server, cert, base)
    asyncio.run(backend.create(ContainerSpec(vmid=133, agent_secret="old")))
    assert server.state.cts[133]["config"]["ostemplate"] == f"local:vztmpl/{BASE_NAME}"
    chosen = (layers["node22"],)
    asyncio.run(backend.rebuild(ContainerSpec(vmid=133, agent_secret="new", layers=chosen)))
    config = server.state.cts[133]["config"]
    assert config["ostemplate"].startswith("local:vztmpl/debian-12-zlh_v1-")
    assert config["ssh-public-keys"] == "# zlh-agent-token new\n"
    assert len(_uploads(server)) == 2  # the base once (create, holder), the baked one once


def test_the_timings_model_keeps_a_task_running_for_its_modelled_time(
    server: ProxmoxServer, cert: tuple[Path, Path]
) -> None:
    server.state.templates[(None, TEMPLATE)]["size"] = 50_000_000
    server.state.timings.extract_bytes_per_s = 200_000_000  # 0.25 s
    server.state.timings.create_s = 0.1
    backend = backend_for(server, cert)
    started = time.monotonic()
    asyncio.run(backend.create(ContainerSpec(vmid=134, agent_secret="s")))
    assert time.monotonic() - started >= 0.35


def test_a_baked_template_changed_on_the_host_is_never_uploaded_and_is_baked_again(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, layers: dict[str, LayerMount]
) -> None:
    """Someone on the API host appends to a baked template (its record names the sha256 it
    was baked with): the create fails without uploading it, and the next one bakes it anew."""
    backend = _backend(server, cert, base)
    baker = backend.baker
    assert baker is not None
    baked = baker.bake((layers["node22"],))
    with baker.path(baked.name).open("ab") as f:
        f.write(b"tampered")
    spec = ContainerSpec(vmid=135, agent_secret="s", layers=(layers["node22"],))
    with pytest.raises(BackendError, match="changed on this host since it was baked"):
        asyncio.run(backend.create(spec))
    assert server.state.cts == {} and list(server.state.templates) == [(None, TEMPLATE)]
    assert _uploads(server) == []

    asyncio.run(backend.create(spec))
    members = _members(_uploaded(server, server.state.cts[135]["config"]["ostemplate"]))
    assert f"{RUNTIME.lstrip('/')}/{MARKER_NAME}" in members
    assert hashlib.sha256(baker.path(baked.name).read_bytes()).hexdigest() == baked.sha256


def test_zlh_layers_gc_keeps_a_set_a_container_uses_and_removes_it_once_none_does(
    server: ProxmoxServer, cert: tuple[Path, Path], base: Path, layers: dict[str, LayerMount]
) -> None:
    """The operator's command, against the cluster: a catalog that no longer pins node 24
    (a new catalog), one container still made from node 24's set, then none."""
    backend = _backend(server, cert, base)
    _, kept_volid, old_volid = _two_sets(server, backend, layers, 140)
    store = base.parent / "store"  # the catalog of today: node 22 and code-server
    store.mkdir()
    catalog = ArtifactStore(layers["node22"].source.parents[2] / "store").catalog()
    data = json.loads(catalog.model_dump_json())
    node = data["runtimes"]["node"]
    node["default"], node["versions"] = "22", [v for v in node["versions"] if v["version"] == "22"]
    (store / "catalog.json").write_text(json.dumps(data))
    env = {f"ZLH_PROXMOX_{k.upper()}": v for k, v in connection(server, cert).items()}
    env = {**os.environ, **env, "ZLH_PROXMOX_TEMPLATE_FILE": str(base)}
    args = ("layers", "gc", "--backend", "proxmox", "--data-dir", str(base.parent / "data"))
    args += ("--store", str(store))

    first = zlh(*args, env=env)
    assert "CT template" not in first.stdout  # container 141 was made from it
    assert server.state.template("pve2", old_volid) is not None

    asyncio.run(backend.destroy(141))
    second = zlh(*args, env=env)
    assert f"removed CT template {old_volid.split('/')[1]}" in second.stdout, second.stdout
    assert server.state.template("pve2", old_volid) is None
    assert server.state.template("pve2", kept_volid) is not None


def test_the_stand_in_fails_an_upload_whose_sha256_differs_and_keeps_nothing(
    server: ProxmoxServer, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """PVE checks the checksum the backend sends (a transfer that changed the bytes)."""
    backend = backend_for(server, cert)
    upload = tmp_path / "debian-12-zlh_v1-000000000000_amd64.tar.zst"
    upload.write_bytes(b"not what was baked")
    with upload.open("rb") as data:
        upid = backend._call(
            "post",
            "nodes/pve2/storage/local/upload",
            "uploading",
            content="vztmpl",
            filename=data,
            checksum="0" * 64,
            **{"checksum-algorithm": "sha256"},
        )
    with pytest.raises(BackendError, match=r"checksum mismatch: got '[0-9a-f]{64}' != expect"):
        backend._wait_task("pve2", upid, "uploading")
    assert list(server.state.templates) == [(None, TEMPLATE)]
    assert [p for p in server.state.upload_dir.rglob("*") if p.is_file()] == []
