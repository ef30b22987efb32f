"""The build pipeline with a tiny real builder: skip when built, rebuild when damaged or
re-pinned, reuse the cache for a fresh store, never clobber an imported artifact."""

from __future__ import annotations

import json
import os
import re
import stat
import tarfile
from pathlib import Path

import pytest

from zlh.artifacts.builders.base import (
    BuildContext,
    Builder,
    BuildResult,
    Recipe,
    pick_version,
    run_build,
)
from zlh.artifacts.builders.built import load_cached
from zlh.artifacts.builders.fetch import BuildError
from zlh.artifacts.errors import ArtifactConflictError
from zlh.artifacts.store import ArtifactStore
from zlh.errors import UsageError
from zlh.schemas import ArtifactKind

PINS = {"1": "1.0.2", "2": "2.1.0"}
FULL = re.compile(r"^\d+\.\d+\.\d+$")


class TinyBuilder(Builder):
    """Lays out a one-script runtime; counts its assemblies; can be told to break."""

    name = "node"

    def __init__(self, *, revision: int = 1, broken: bool = False, says: str = "Tiny") -> None:
        self.revision = revision
        self.broken = broken
        self.says = says
        self.assembled = 0

    def recipe(self, version: str | None) -> Recipe:
        key, upstream = pick_version(
            "node", version, pins=PINS, default="1", full=FULL, key_of=lambda v: v.split(".")[0]
        )
        return Recipe(
            kind=ArtifactKind.RUNTIME,
            name="node",
            key=key,
            upstream_version=upstream,
            package_version=upstream,
            source=f"test:tiny=={upstream}",
            top_dir=f"tiny-{upstream}",
            revision=self.revision,
        )

    def summary(self, recipe: Recipe) -> str:
        return f"{self.says} {recipe.upstream_version}"

    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        self.assembled += 1
        script = tree / "bin" / "tiny"
        script.parent.mkdir()
        script.write_text(f"#!/bin/sh\necho {recipe.upstream_version} r{self.revision}\n")
        script.chmod(0o755)
        return {"flavour": "tiny"}

    def check(self, recipe: Recipe, tree: Path) -> str:
        if self.broken:
            raise BuildError("bin/tiny printed nothing")
        return "tiny ok"


def build(builder: TinyBuilder, store: ArtifactStore, cache: Path) -> BuildResult:
    return run_build(builder, version=None, store=store, cache_dir=cache, log=lambda _m: None)


def pick(asked: str | None) -> tuple[str, str]:
    return pick_version(
        "tiny", asked, pins=PINS, default="1", full=FULL, key_of=lambda v: v.split(".")[0]
    )


def test_pick_version_maps_keys_full_versions_and_the_default() -> None:
    assert pick(None) == ("1", "1.0.2")
    assert pick("2") == ("2", "2.1.0")
    assert pick("2.0.9") == ("2", "2.0.9")


@pytest.mark.parametrize("asked", ["3", "1.0", "1.0.2; rm -rf /", "latest"])
def test_pick_version_refuses_what_it_cannot_build_and_lists_what_it_can(asked: str) -> None:
    with pytest.raises(UsageError, match=r"known versions are 1 \(= 1\.0\.2\), 2"):
        pick(asked)


def test_a_build_adds_a_pinned_artifact_with_its_provenance(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    result = build(TinyBuilder(), store, tmp_path / "cache")
    assert not result.skipped
    entry = store.catalog().runtimes["node"]  # type: ignore[index]
    assert entry.default == "1"
    artifact = entry.get("1")
    assert artifact is not None and artifact == result.artifact
    assert artifact.url == "runtime/node/1/tiny-1.0.2.tar.gz"
    assert (artifact.strip_components, artifact.bin) == (1, ["bin"])
    meta = artifact.metadata
    assert (meta.upstream_version, meta.source, meta.os, meta.arch) == (
        "1.0.2",
        "test:tiny==1.0.2",
        "linux",
        "x86_64",
    )
    assert meta.created is not None
    assert meta.labels == {
        "recipe": "zlh-build/node/r1 test:tiny==1.0.2",
        "check": "tiny ok",
        "flavour": "tiny",
        "summary": "Tiny 1.0.2",
    }


def test_a_second_build_of_the_same_recipe_is_skipped_without_assembling(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    builder = TinyBuilder()
    first = build(builder, store, tmp_path / "cache")
    second = build(builder, store, tmp_path / "cache")
    assert second.skipped and "skipped" in second.summary
    assert builder.assembled == 1
    assert second.artifact == first.artifact


def test_a_fresh_store_reuses_the_cached_build_with_the_same_bytes(tmp_path: Path) -> None:
    builder = TinyBuilder()
    first = build(builder, ArtifactStore(tmp_path / "a"), tmp_path / "cache")
    second = build(builder, ArtifactStore(tmp_path / "b"), tmp_path / "cache")
    assert builder.assembled == 1 and not second.skipped
    assert second.from_cache and "added from the build cache" in second.summary
    assert second.artifact.sha256 == first.artifact.sha256


def test_rebuilding_without_the_cache_gives_byte_identical_tarballs(tmp_path: Path) -> None:
    first = build(TinyBuilder(), ArtifactStore(tmp_path / "a"), tmp_path / "cache-a")
    second = build(TinyBuilder(), ArtifactStore(tmp_path / "b"), tmp_path / "cache-b")
    assert second.artifact.sha256 == first.artifact.sha256


def summary_of(store: ArtifactStore) -> str | None:
    artifact = store.catalog().runtimes["node"].get("1")  # type: ignore[index]
    assert artifact is not None
    return artifact.metadata.labels.get("summary")


def test_a_build_from_the_cache_gets_the_summary_its_cache_record_lacks(tmp_path: Path) -> None:
    builder = TinyBuilder()
    build(builder, ArtifactStore(tmp_path / "a"), tmp_path / "cache")
    sidecar = tmp_path / "cache" / "built" / "node" / "1" / "tiny-1.0.2.tar.gz.json"
    assert "summary" not in json.loads(sidecar.read_text())["labels"]
    fresh = ArtifactStore(tmp_path / "b")
    assert build(builder, fresh, tmp_path / "cache").from_cache
    assert builder.assembled == 1
    assert summary_of(fresh) == "Tiny 1.0.2"


def test_a_changed_summary_rewrites_the_entry_from_the_cache_without_rebuilding(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path / "store")
    first = build(TinyBuilder(), store, tmp_path / "cache")
    builder = TinyBuilder(says="Tinier")
    again = build(builder, store, tmp_path / "cache")
    assert not again.skipped and again.from_cache and builder.assembled == 0
    assert again.artifact.sha256 == first.artifact.sha256
    assert summary_of(store) == "Tinier 1.0.2"
    assert build(builder, store, tmp_path / "cache").skipped


def test_a_damaged_stored_file_is_rebuilt_not_skipped(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    first = build(TinyBuilder(), store, tmp_path / "cache")
    stored = store.artifact_path(ArtifactKind.RUNTIME, "node", "1")
    stored.write_bytes(b"corrupted")
    again = build(TinyBuilder(), store, tmp_path / "cache")
    assert not again.skipped
    assert stored.read_bytes() != b"corrupted"
    assert again.artifact.sha256 == first.artifact.sha256
    assert store.verify() == []


def test_a_damaged_cached_build_is_not_reused(tmp_path: Path) -> None:
    builder = TinyBuilder()
    first = build(builder, ArtifactStore(tmp_path / "a"), tmp_path / "cache")
    cached = tmp_path / "cache" / "built" / "node" / "1" / "tiny-1.0.2.tar.gz"
    cached.write_bytes(b"junk")
    recipe_id = builder.recipe(None).recipe_id
    assert load_cached(tmp_path / "cache", "node", "1", cached.name, recipe_id) is None
    second = build(builder, ArtifactStore(tmp_path / "b"), tmp_path / "cache")
    assert builder.assembled == 2
    assert second.artifact.sha256 == first.artifact.sha256


def test_a_new_builder_revision_replaces_the_old_build(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    old = build(TinyBuilder(revision=1), store, tmp_path / "cache")
    new = build(TinyBuilder(revision=2), store, tmp_path / "cache")
    assert not new.skipped and new.artifact.sha256 != old.artifact.sha256
    current = store.catalog().runtimes["node"].get("1")  # type: ignore[index]
    assert current is not None and current.metadata.labels["recipe"].startswith("zlh-build/node/r2")


def test_an_imported_artifact_of_the_same_version_is_never_replaced(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    official = tmp_path / "node-v1.tar.gz"
    official.write_bytes(b"an operator's official tarball")
    imported = store.add_file(ArtifactKind.RUNTIME, "node", "1", official)
    with pytest.raises(ArtifactConflictError, match=r"not built by zlh.*zlh artifacts remove"):
        build(TinyBuilder(), store, tmp_path / "cache")
    assert store.catalog().runtimes["node"].get("1") == imported  # type: ignore[index]


def test_a_failed_check_adds_nothing_and_leaves_no_scratch_behind(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(BuildError, match="printed nothing"):
        build(TinyBuilder(broken=True), store, tmp_path / "cache")
    assert store.catalog().runtimes == {}
    assert list((tmp_path / "cache" / "work").iterdir()) == []
    assert not (tmp_path / "cache" / "built").exists()


def test_building_another_version_never_moves_the_operators_default(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    builder = TinyBuilder()
    run_build(builder, version="2", store=store, cache_dir=tmp_path / "c", log=lambda _m: None)
    build(builder, store, tmp_path / "c")  # the builder's own default, "1"
    entry = store.catalog().runtimes["node"]  # type: ignore[index]
    assert [v.version for v in entry.versions] == ["1", "2"]
    assert entry.default == "2"


def test_the_summary_says_what_was_downloaded_and_what_was_skipped(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    lines: list[str] = []
    run_build(TinyBuilder(), version=None, store=store, cache_dir=tmp_path / "c", log=lines.append)
    run_build(TinyBuilder(), version=None, store=store, cache_dir=tmp_path / "c", log=lines.append)
    assert "built, downloaded nothing (all from the cache)" in lines[-2]
    assert lines[-1].startswith("runtime node 1: already built, skipped (runtime/node/1/")


class PrivateTreeBuilder(TinyBuilder):
    """Leaves the modes a umask of 077 gives: dirs 0700, an executable 0700, a file 0600."""

    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        labels = super().assemble(recipe, tree, ctx)
        (tree / "bin" / "tiny").chmod(0o700)
        (tree / "lib").mkdir()
        (tree / "lib" / "data.txt").write_text("x")
        return labels


def test_a_build_under_umask_077_still_packs_world_readable_members(tmp_path: Path) -> None:
    """`zlh up`/`zlh demo` run with umask 077; containers' users must still read runtimes."""
    store = ArtifactStore(tmp_path / "store")
    old = os.umask(0o077)
    try:
        build(PrivateTreeBuilder(), store, tmp_path / "cache")
    finally:
        os.umask(old)
    path = store.artifact_path(ArtifactKind.RUNTIME, "node", "1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # the artifact server's file
    with tarfile.open(path) as tar:
        modes = {member.name: member.mode for member in tar}
    assert modes == {
        "tiny-1.0.2": 0o755,
        "tiny-1.0.2/bin": 0o755,
        "tiny-1.0.2/bin/tiny": 0o755,
        "tiny-1.0.2/lib": 0o755,
        "tiny-1.0.2/lib/data.txt": 0o644,
    }
