"""What the build tests share: build into a store through the CLI, unpack like the agent."""

from __future__ import annotations

import tarfile
from pathlib import Path

from support import CACHE_DIR, zlh
from zlh.artifacts.store import ArtifactStore
from zlh.install.extract import MemberGuard
from zlh.schemas import Artifact, ArtifactKind


def build(what: str, store: Path, *args: str) -> str:
    """``zlh artifacts build`` into ``store`` with the shared download cache; its stderr."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    result = zlh(
        "artifacts", "build", what, "--store", str(store), "--cache-dir", str(CACHE_DIR), *args
    )
    return result.stderr


def unpack(store: Path, kind: ArtifactKind, name: str, version: str, dest: Path) -> Artifact:
    """Extract the catalog's artifact into ``dest`` through the agent's own member checks."""
    artifact = ArtifactStore(store).catalog().resolve(kind, name, version)[1]
    guard = MemberGuard(artifact.strip_components)
    with tarfile.open(store / artifact.url) as tar:
        tar.extractall(dest, filter=guard)
    guard.verify_links(dest)
    return artifact
