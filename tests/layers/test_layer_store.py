"""The host's shared layers: built once per artifact with the agent's installer, checked before
every use, built again when changed on disk, collected when nothing uses them."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_helpers import (
    ArtifactServer,
    artifact_server,
    directory,
    file,
    runtime_members,
    tarball,
)
from agent_helpers import sha256 as digest
from zlh.install.download import RetryPolicy
from zlh.install.errors import InstallError
from zlh.install.installed import MARKER_NAME
from zlh.install.installer import Installer, InstallRequest
from zlh.install.progress import ProgressTracker
from zlh.layers import LayerStore
from zlh.layers.manifest import scan
from zlh.schemas import Artifact, ArtifactKind

DATA = tarball(runtime_members())


@pytest.fixture
def server() -> Iterator[ArtifactServer]:
    with artifact_server() as served:
        yield served


def _artifact(server: ArtifactServer, data: bytes = DATA, name: str = "node.tar.gz") -> Artifact:
    url = server.add(name, data)
    return Artifact.model_validate(
        {
            "url": url,
            "sha256": digest(data),
            "size": len(data),
            "format": "tar.gz",
            "stripComponents": 1,
            "bin": ["bin"],
        }
    )


def _ensure(
    store: LayerStore, artifact: Artifact, times: int = 1, name: str = "node"
) -> list[Path]:
    async def run() -> list[Path]:
        try:
            jobs = (store.ensure(ArtifactKind.RUNTIME, name, "1", artifact) for _ in range(times))
            return list(await asyncio.gather(*jobs))
        finally:
            await store.close()

    return asyncio.run(run())


def _agent_installs(artifact: Artifact, target: Path) -> None:
    """``artifact`` installed at ``target`` as the agent installs a runtime."""
    request = InstallRequest(ArtifactKind.RUNTIME, "node", "22", artifact, target)

    async def install() -> None:
        installer = Installer(policy=RetryPolicy())
        try:
            await installer.ensure(request, ProgressTracker())
        finally:
            await installer.close()

    asyncio.run(install())


def _tree(top: Path) -> dict[str, str]:
    """Every entry but the marker: path -> kind, mode and content digest or link target."""
    return {
        e.path: f"{e.kind} {e.mode:o} {e.digest}"
        for e in scan(top, "-").entries
        if e.path not in {".", MARKER_NAME}
    }


def test_ten_concurrent_requests_build_a_layer_once(
    tmp_path: Path, server: ArtifactServer, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = _artifact(server)
    with caplog.at_level(logging.INFO, logger="zlh.layers"):
        paths = _ensure(LayerStore(tmp_path / "layers"), artifact, times=10)
    assert set(paths) == {tmp_path / "layers" / artifact.sha256}
    assert len(server.gets("node.tar.gz")) == 1
    built = [r for r in caplog.records if r.getMessage().startswith("built layer")]
    assert len(built) == 1 and artifact.sha256 in built[0].getMessage()
    assert (paths[0] / "bin" / "hello").read_bytes().startswith(b"#!/bin/sh")


def test_a_layer_is_the_tree_the_agent_installs(tmp_path: Path, server: ArtifactServer) -> None:
    artifact = _artifact(server)
    (layer,) = _ensure(LayerStore(tmp_path / "layers"), artifact)
    agent_target = tmp_path / "container" / "opt/zlh/runtimes/node/22"
    _agent_installs(artifact, agent_target)
    assert _tree(layer) == _tree(agent_target)
    assert len(_tree(layer)) > 4


def test_a_layer_built_under_a_private_umask_is_readable_by_every_user(
    tmp_path: Path, server: ArtifactServer
) -> None:
    # The platform runs under umask 077; the archive has no entry for the directory 'share'.
    data = tarball([directory("rt"), file("rt/bin/tool", b"x", 0o755), file("rt/share/a", b"y")])
    artifact = _artifact(server, data, "rt.tar.gz")
    previous = os.umask(0o077)
    try:
        (layer,) = _ensure(LayerStore(tmp_path / "layers"), artifact)
    finally:
        os.umask(previous)
    for directory_path in (layer, layer / "bin", layer / "share"):
        assert directory_path.stat().st_mode & 0o777 == 0o755, directory_path
    assert (layer / "share" / "a").stat().st_mode & 0o777 == 0o644
    assert (layer / MARKER_NAME).stat().st_mode & 0o777 == 0o644  # what the agent's guard reads
    assert (tmp_path / "layers").stat().st_mode & 0o777 == 0o711


def test_a_file_changed_on_disk_is_found_even_with_its_size_and_mtime_put_back(
    tmp_path: Path, server: ArtifactServer, caplog: pytest.LogCaptureFixture
) -> None:
    artifact = _artifact(server)
    store = LayerStore(tmp_path / "layers", recheck_after_s=0)
    (layer,) = _ensure(store, artifact)
    tool = layer / "bin" / "hello"
    before = tool.stat()
    original = tool.read_bytes()
    tampered = b"#!/bin/sh\necho pwned " + b"x" * (len(original) - 21)
    assert len(tampered) == len(original)
    tool.write_bytes(tampered)
    os.utime(tool, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert store.check(artifact.sha256) is not None
    with caplog.at_level(logging.WARNING, logger="zlh.layers"):
        (again,) = _ensure(store, artifact)
    assert again == layer and (layer / "bin" / "hello").read_bytes() == original
    assert len(server.gets("node.tar.gz")) == 2
    assert any("bin/hello was changed" in r.getMessage() for r in caplog.records)
    assert store.check(artifact.sha256) is None
    # The changed tree is kept aside (a running container may still have it mounted).
    (aside,) = store.set_aside_dirs()
    assert (aside / "bin" / "hello").read_bytes() == tampered


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda layer: (layer / "bin" / "planted").write_text("x"), id="added"),
        pytest.param(lambda layer: (layer / "lib" / "data.txt").unlink(), id="removed"),
        pytest.param(lambda layer: (layer / "bin" / "hello").chmod(0o4755), id="setuid"),
        pytest.param(lambda layer: (layer / "bin" / "hi").unlink(), id="link-removed"),
    ],
)
def test_any_change_to_a_layer_makes_it_built_again(
    tmp_path: Path, server: ArtifactServer, tamper: object
) -> None:
    artifact = _artifact(server)
    store = LayerStore(tmp_path / "layers", recheck_after_s=0)
    (layer,) = _ensure(store, artifact)
    expected = _tree(layer)
    tamper(layer)  # type: ignore[operator]
    assert store.check(artifact.sha256) is not None
    _ensure(store, artifact)
    assert _tree(layer) == expected
    assert len(server.gets("node.tar.gz")) == 2


def test_a_layer_whose_build_was_cut_short_is_never_used(
    tmp_path: Path, server: ArtifactServer
) -> None:
    artifact = _artifact(server)
    store = LayerStore(tmp_path / "layers", recheck_after_s=0)
    _ensure(store, artifact)
    store.manifest_path(artifact.sha256).unlink()  # the tree renamed, its manifest not written
    assert store.check(artifact.sha256) == "has no manifest (its build was cut short)"
    _ensure(store, artifact)
    assert store.check(artifact.sha256) is None
    assert len(server.gets("node.tar.gz")) == 2


def test_verify_reads_every_byte(tmp_path: Path, server: ArtifactServer) -> None:
    artifact = _artifact(server)
    store = LayerStore(tmp_path / "layers")
    (layer,) = _ensure(store, artifact)
    assert store.check(artifact.sha256, full=True) is None
    # Forge the manifest's digest of one file: only reading the bytes can tell.
    manifest = store.manifest_path(artifact.sha256)
    text = manifest.read_text()
    real = digest((layer / "bin" / "hello").read_bytes())
    manifest.write_text(text.replace(real, "0" * 64))
    assert store.check(artifact.sha256) is None
    assert store.check(artifact.sha256, full=True) == (
        "changed on disk (bin/hello does not have the bytes it was built with)"
    )


def test_gc_removes_what_nothing_uses_and_keeps_the_rest(
    tmp_path: Path, server: ArtifactServer
) -> None:
    used = _artifact(server)
    other_data = tarball(runtime_members("python-3"))
    unused = _artifact(server, other_data, "python.tar.gz")
    store = LayerStore(tmp_path / "layers")
    _ensure(store, used)
    _ensure(store, unused, name="python")
    assert store.shas() == sorted([used.sha256, unused.sha256])
    assert store.gc({used.sha256}, dry_run=True) == [unused.sha256]
    assert store.shas() == sorted([used.sha256, unused.sha256])
    assert store.gc({used.sha256}) == [unused.sha256]
    assert store.shas() == [used.sha256]
    assert not store.manifest_path(unused.sha256).exists()
    assert store.check(used.sha256) is None


def test_gc_leaves_a_layer_another_process_is_building(
    tmp_path: Path, server: ArtifactServer
) -> None:
    artifact = _artifact(server)
    store = LayerStore(tmp_path / "layers")
    _ensure(store, artifact)
    with store._flock_now(artifact.sha256, wait=True):  # as the platform holds it while building
        assert LayerStore(tmp_path / "layers").gc(set()) == []
    assert store.shas() == [artifact.sha256]


def test_a_layer_path_is_only_ever_a_sha256(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "layers")
    for bad in ("../etc", "a" * 63, "A" * 64, "a" * 64 + "/x"):
        with pytest.raises(ValueError, match="is not a sha256"):
            store.path(bad)


@pytest.mark.root
def test_the_agent_never_installs_over_a_mounted_layer_of_another_artifact(
    tmp_path: Path, server: ArtifactServer
) -> None:
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    (layer,) = _ensure(LayerStore(tmp_path / "layers"), _artifact(server))
    other = _artifact(server, tarball(runtime_members("node-v23")), "node23.tar.gz")
    target = tmp_path / "container" / "opt/zlh/runtimes/node/22"
    target.mkdir(parents=True)
    subprocess.run(["mount", "--bind", "-o", "ro", str(layer), str(target)], check=True)
    try:
        with pytest.raises(
            InstallError, match="is a read-only layer the host mounted, with sha256"
        ):
            _agent_installs(other, target)
        assert server.gets("node23.tar.gz") == []
    finally:
        subprocess.run(["umount", str(target)], check=True)
